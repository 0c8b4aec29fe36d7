//! Pushed authorization requests (RFC 9126, SPEC §3.5): the authorization parameters go to the
//! IdP over the back channel, with the client's authentication; the browser carries only the
//! `request_uri` the IdP returns.

use super::client_auth::authenticated_form;
use super::http::{IdpHttp, IdpHttpError};
use super::token::IdpErrorCode;
use url::Url;

/// Longest `request_uri` accepted: it goes into a `Location` header (as visible ASCII only).
const MAX_REQUEST_URI: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParError {
    /// An OAuth error answer, filtered for echoing (SPEC: 502 `par_rejected`).
    #[error("PAR endpoint refused the request: {}", .0.as_str())]
    Rejected(IdpErrorCode),
    #[error("PAR endpoint did not answer in time")]
    Timeout,
    #[error("{0}")]
    Unavailable(&'static str),
}

impl From<IdpHttpError> for ParError {
    fn from(e: IdpHttpError) -> Self {
        match e {
            IdpHttpError::Timeout => Self::Timeout,
            IdpHttpError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// POST the parameters; the `request_uri` to send the browser with.
pub async fn push(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &crate::settings::OidcSettings,
    params: &[(&str, String)],
) -> Result<String, ParError> {
    let borrowed: Vec<(&str, &str)> = params
        .iter()
        // Client authentication adds `client_id` itself where the method sends it in the body.
        .filter(|(k, _)| {
            *k != "client_id" || matches!(settings.client_auth, crate::settings::ClientAuth::ClientSecretBasic)
        })
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let (form, auth) = authenticated_form(settings, &borrowed);
    let started = std::time::Instant::now();
    let result = call(http, endpoint, form, auth).await;
    let provider = settings.name.clone();
    metrics::histogram!("bff_idp_par_duration_seconds", "provider" => provider.clone())
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let kind = match e {
            ParError::Rejected(_) => "rejected",
            ParError::Timeout => "timeout",
            ParError::Unavailable(_) => "unavailable",
        };
        metrics::counter!("bff_idp_par_errors_total", "kind" => kind, "provider" => provider).increment(1);
    }
    result
}

async fn call(http: &IdpHttp, endpoint: &Url, form: String, auth: Option<String>) -> Result<String, ParError> {
    let resp = http.post_form("idp par", endpoint, form, auth, None).await?;
    let json: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|_| ParError::Unavailable("PAR endpoint answered non-JSON"))?;
    if resp.status.is_client_error() {
        return match json.get("error").and_then(|e| e.as_str()) {
            Some(code) => Err(ParError::Rejected(IdpErrorCode::filter(code))),
            None => Err(ParError::Unavailable("PAR endpoint answered 4xx without an OAuth error")),
        };
    }
    if !resp.status.is_success() {
        return Err(ParError::Unavailable("PAR endpoint answered an error status"));
    }
    parse(&json)
}

/// RFC 9126 §2.2: `request_uri` and a positive `expires_in`. The lifetime shortens nothing
/// (SPEC §3.5: the transaction keeps its own 10 minutes), but an answer without one is
/// malformed.
fn parse(json: &serde_json::Value) -> Result<String, ParError> {
    let uri = json
        .get("request_uri")
        .and_then(|v| v.as_str())
        .filter(|u| (1..=MAX_REQUEST_URI).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(ParError::Unavailable("PAR answer without a usable request_uri"))?;
    if json.get("expires_in").and_then(|v| v.as_i64()).is_none_or(|e| e <= 0) {
        return Err(ParError::Unavailable("PAR answer without a positive expires_in"));
    }
    Ok(uri.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_checked() {
        let ok = json!({"request_uri": "urn:ietf:params:oauth:request_uri:abc", "expires_in": 60});
        assert_eq!(parse(&ok).ok().as_deref(), Some("urn:ietf:params:oauth:request_uri:abc"));
        assert!(parse(&json!({"expires_in": 60})).is_err());
        assert!(parse(&json!({"request_uri": "", "expires_in": 60})).is_err());
        assert!(parse(&json!({"request_uri": "urn:x\r\nSet-Cookie: a=b", "expires_in": 60})).is_err());
        assert!(parse(&json!({"request_uri": "urn:x", "expires_in": 0})).is_err());
        assert!(parse(&json!({"request_uri": "urn:x"})).is_err());
        assert!(parse(&json!({"request_uri": "urn:x\u{202e}y", "expires_in": 60})).is_err());
        assert!(parse(&json!({"request_uri": "urn:x y", "expires_in": 60})).is_err());
        let long = "u".repeat(MAX_REQUEST_URI + 1);
        assert!(parse(&json!({"request_uri": long, "expires_in": 60})).is_err());
    }
}
