//! Token endpoint calls (SPEC §3.3): the authorization-code exchange, the refresh grant, the
//! RFC 8693 token exchange (§6.2) and RFC 7009 revocation, each authenticated by `client_auth`.
//! `[oidc] resource` (RFC 8707) goes with the code and refresh grants.

use super::client_auth::authenticated_form;
use super::dpop::{Nonces, Signer};
use super::http::{IdpHttp, IdpHttpError};
use crate::secret::Secret;
use crate::settings::OidcSettings;
use crate::settings::routes::ExchangeSpec;
use url::Url;

/// A missing `expires_in` means this many seconds (SPEC §3.3).
pub const DEFAULT_EXPIRES_IN: i64 = 300;
/// Larger `expires_in` values are clamped to this (one year).
pub const MAX_EXPIRES_IN: i64 = 365 * 86400;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: Secret,
    pub expires_in: i64,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub scope: Option<String>,
}

/// An IdP-supplied OAuth error code that is safe to echo: `^[a-z_]{1,64}$`, else `unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpErrorCode(String);

impl IdpErrorCode {
    pub fn filter(raw: &str) -> Self {
        let ok = (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        Self(if ok { raw.to_owned() } else { "unknown".to_owned() })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The IdP refused with an OAuth error (`invalid_grant`…), filtered for echoing.
    #[error("IdP refused the grant: {}", .0.as_str())]
    Refused(IdpErrorCode),
    #[error("IdP did not answer in time")]
    Timeout,
    #[error("{0}")]
    Unavailable(&'static str),
}

impl From<IdpHttpError> for TokenError {
    fn from(e: IdpHttpError) -> Self {
        match e {
            IdpHttpError::Timeout => Self::Timeout,
            IdpHttpError::Unavailable(why) => Self::Unavailable(why),
        }
    }
}

/// The DPoP side of a token request: the session's signer and the nonces servers gave us.
#[derive(Clone, Copy)]
pub struct Dpop<'a> {
    pub signer: &'a Signer,
    pub nonces: &'a Nonces,
}

/// One token request; `grant` labels its metrics.
async fn token_request(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    grant: &'static str,
    params: &[(&str, &str)],
    dpop: Option<Dpop<'_>>,
) -> Result<(TokenSet, serde_json::Value), TokenError> {
    let started = std::time::Instant::now();
    let result = token_call(http, endpoint, settings, params, dpop).await;
    let provider = settings.name.clone();
    metrics::histogram!("bff_idp_token_duration_seconds", "grant" => grant, "provider" => provider.clone())
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let kind = match e {
            TokenError::Refused(_) => "refused",
            TokenError::Timeout => "timeout",
            TokenError::Unavailable(_) => "unavailable",
        };
        metrics::counter!("bff_idp_token_errors_total", "grant" => grant, "kind" => kind, "provider" => provider)
            .increment(1);
    }
    result
}

/// `htu` (RFC 9449 §4.2): the URL without query and fragment.
pub(crate) fn htu(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.into()
}

async fn token_call(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    params: &[(&str, &str)],
    dpop: Option<Dpop<'_>>,
) -> Result<(TokenSet, serde_json::Value), TokenError> {
    let origin = endpoint.origin().ascii_serialization();
    let target = htu(endpoint);
    let exchange = params.iter().any(|(k, v)| *k == "grant_type" && *v == TOKEN_EXCHANGE);
    let call = if exchange { "idp exchange" } else { "idp token" };
    // RFC 9449 §8: a server that wants a nonce says so once; the request is sent again with it.
    let mut retried = false;
    loop {
        // Built afresh each time: a private_key_jwt assertion is single-use (fresh jti).
        let (form, auth) = authenticated_form(settings, params);
        let proof = match dpop {
            Some(d) => {
                let nonce = d.nonces.get(&origin);
                let proof = d.signer.proof("POST", &target, None, nonce.as_deref(), crate::clock::now());
                Some(proof.ok_or(TokenError::Unavailable("cannot sign a DPoP proof"))?)
            }
            None => None,
        };
        let resp = http.post_form(call, endpoint, form, auth, proof).await?;
        let fresh_nonce = match (dpop, resp.dpop_nonce.as_deref()) {
            (Some(d), Some(n)) => d.nonces.set(&origin, n),
            _ => false,
        };
        let json: serde_json::Value = serde_json::from_slice(&resp.body)
            .map_err(|_| TokenError::Unavailable("token endpoint answered non-JSON"))?;
        if resp.status.is_client_error() {
            let code = json.get("error").and_then(|e| e.as_str());
            if resp.status == http::StatusCode::BAD_REQUEST && code == Some("use_dpop_nonce") && fresh_nonce && !retried
            {
                tracing::info!("the IdP asked for a DPoP nonce; sending the request again with it");
                retried = true;
                continue;
            }
            return match code {
                // The proof, not the grant, was refused (a nonce asked for again, a clock the IdP
                // disagrees with): the IdP's fault or ours, never a reason to end a session.
                Some("use_dpop_nonce" | "invalid_dpop_proof") if dpop.is_some() => {
                    Err(TokenError::Unavailable("the IdP refused the DPoP proof"))
                }
                Some(code) => Err(TokenError::Refused(IdpErrorCode::filter(code))),
                None => Err(TokenError::Unavailable("token endpoint answered 4xx without an OAuth error")),
            };
        }
        if !resp.status.is_success() {
            return Err(TokenError::Unavailable("token endpoint answered an error status"));
        }
        return parse_token_response(&json, dpop.is_some()).map(|set| (set, json));
    }
}

/// `dpop`: the request carried a proof, so the token must be DPoP-bound (SPEC §3.6).
fn parse_token_response(json: &serde_json::Value, dpop: bool) -> Result<TokenSet, TokenError> {
    let str_field = |k: &str| json.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let access_token =
        str_field("access_token").ok_or(TokenError::Unavailable("token response without access_token"))?;
    let expected = if dpop { "DPoP" } else { "Bearer" };
    if !str_field("token_type").is_some_and(|t| t.eq_ignore_ascii_case(expected)) {
        return Err(TokenError::Unavailable(if dpop {
            "token response token_type is not DPoP"
        } else {
            "token response token_type is not Bearer"
        }));
    }
    let expires_in = match json.get("expires_in") {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n > 0)
            .ok_or(TokenError::Unavailable("token response expires_in is not a positive number"))?
            // Absurd lifetimes would overflow timestamps; a year is longer than any session.
            .min(MAX_EXPIRES_IN),
    };
    Ok(TokenSet {
        access_token: Secret::new(access_token),
        expires_in,
        refresh_token: str_field("refresh_token").map(Secret::new),
        id_token: str_field("id_token").map(Secret::new),
        scope: str_field("scope").map(str::to_owned),
    })
}

/// The form of a code exchange (SPEC §3.3), before client authentication.
fn code_params<'a>(settings: &'a OidcSettings, code: &'a str, verifier: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut params = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", settings.redirect_uri.as_str()),
        ("code_verifier", verifier),
    ];
    params.extend(settings.resource.iter().map(|r| ("resource", r.as_str())));
    params
}

/// Exchange an authorization code (with its PKCE verifier). The answer must carry an ID token.
pub async fn exchange_code(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    code: &str,
    verifier: &str,
    dpop: Option<Dpop<'_>>,
) -> Result<TokenSet, TokenError> {
    let params = code_params(settings, code, verifier);
    let (set, _) = token_request(http, endpoint, settings, "authorization_code", &params, dpop).await?;
    if set.id_token.is_none() {
        return Err(TokenError::Unavailable("token response without id_token"));
    }
    Ok(set)
}

pub async fn refresh(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    refresh_token: &str,
    dpop: Option<Dpop<'_>>,
) -> Result<TokenSet, TokenError> {
    let mut params = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    params.extend(settings.resource.iter().map(|r| ("resource", r.as_str())));
    token_request(http, endpoint, settings, "refresh_token", &params, dpop).await.map(|(set, _)| set)
}

/// RFC 8693: the session's access token (`subject`) exchanged for one with `spec`'s resource,
/// audience and scopes (SPEC §6.2). The answer must be an access token usable as a bearer; it
/// needs no ID token. With DPoP, the new token is bound to the session's key too.
pub async fn exchange_token(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    subject: &str,
    spec: &ExchangeSpec,
    dpop: Option<Dpop<'_>>,
) -> Result<TokenSet, TokenError> {
    let mut params = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
    ];
    for (k, v) in [("resource", &spec.resource), ("audience", &spec.audience), ("scope", &spec.scope)] {
        if let Some(v) = v {
            params.push((k, v.as_str()));
        }
    }
    let (set, json) = token_request(http, endpoint, settings, "token_exchange", &params, dpop).await?;
    match json.get("issued_token_type").and_then(|t| t.as_str()) {
        // RFC 8693 §2.2.1 requires it; an IdP that leaves it out is taken at its token_type.
        None | Some(ACCESS_TOKEN_TYPE) => Ok(set),
        Some(_) => Err(TokenError::Unavailable("token exchange answered another token type")),
    }
}

/// What a token endpoint answered a code exchange with a made-up code: its status and OAuth
/// `error` code (filtered), nothing else of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    pub status: u16,
    pub error: Option<IdpErrorCode>,
}

/// `oidc-bff doctor`'s client-credentials check (SPEC §7): a code exchange exactly as
/// [`exchange_code`] sends it (client authentication, `redirect_uri`, `resource`, a DPoP proof
/// of a throw-away key when `dpop` is on), but with a made-up code and verifier. An IdP that
/// authenticated the client refuses the grant (`invalid_grant`); one that did not, the client
/// (`invalid_client`, often with 401). Sent once more when the IdP asks for a DPoP nonce.
pub async fn probe_code_exchange(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
) -> Result<ProbeAnswer, IdpHttpError> {
    let (code, verifier) = (crate::secret::random_urlsafe(32), crate::secret::random_urlsafe(32));
    let params = code_params(settings, &code, &verifier);
    let key = settings.dpop.then(super::dpop::DpopKey::generate);
    let signer = key.as_ref().and_then(|k| k.signer());
    let mut nonce: Option<String> = None;
    loop {
        let (form, auth) = authenticated_form(settings, &params);
        let proof = signer.and_then(|s| s.proof("POST", &htu(endpoint), None, nonce.as_deref(), crate::clock::now()));
        let resp = http.post_form("idp token", endpoint, form, auth, proof).await?;
        let error = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|json| json.get("error").and_then(|e| e.as_str()).map(IdpErrorCode::filter));
        let wants_nonce = error.as_ref().is_some_and(|e| e.as_str() == "use_dpop_nonce");
        if wants_nonce
            && signer.is_some()
            && nonce.is_none()
            && let Some(n) = resp.dpop_nonce.filter(|n| super::dpop::nonce_ok(n))
        {
            nonce = Some(n);
            continue;
        }
        return Ok(ProbeAnswer { status: resp.status.as_u16(), error });
    }
}

/// RFC 7009. Best effort: the local logout happens whatever the IdP answers.
pub async fn revoke(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    refresh_token: &str,
) -> Result<(), TokenError> {
    let (form, auth) = authenticated_form(settings, &[("token", refresh_token), ("token_type_hint", "refresh_token")]);
    // SPEC §3.6: the revocation request needs no proof.
    let resp = http.post_form("idp revocation", endpoint, form, auth, None).await?;
    if resp.status.is_success() {
        Ok(())
    } else {
        Err(TokenError::Unavailable("revocation endpoint answered an error status"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_response_rules() {
        let ok = json!({"access_token": "a", "token_type": "bearer", "id_token": "i"});
        assert_eq!(parse_token_response(&ok, false).map(|t| t.expires_in), Ok(DEFAULT_EXPIRES_IN));
        let mac = json!({"access_token": "a", "token_type": "mac"});
        assert!(parse_token_response(&mac, false).is_err());
        let neg = json!({"access_token": "a", "token_type": "Bearer", "expires_in": 0});
        assert!(parse_token_response(&neg, false).is_err());
        let s = json!({"access_token": "a", "token_type": "Bearer", "expires_in": "60"});
        assert_eq!(parse_token_response(&s, false).map(|t| t.expires_in), Ok(60));
        // SPEC §3.6: a proof was sent, so a Bearer answer is refused, and the other way round.
        let bearer = json!({"access_token": "a", "token_type": "Bearer"});
        assert!(parse_token_response(&bearer, true).is_err());
        let dpop = json!({"access_token": "a", "token_type": "dpop"});
        assert!(parse_token_response(&dpop, true).is_ok());
        assert!(parse_token_response(&dpop, false).is_err());
    }
}
