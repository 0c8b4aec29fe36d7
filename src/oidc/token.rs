//! Token endpoint calls (SPEC §3.3): the authorization-code exchange, the refresh grant and
//! RFC 7009 revocation, with `client_secret_basic` or `client_secret_post`.

use super::http::{IdpHttp, IdpHttpError};
use crate::error::IdpErrorCode;
use crate::secret::Secret;
use crate::settings::{ClientAuth, OidcSettings};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use url::Url;
use url::form_urlencoded::{Serializer, byte_serialize};

/// A missing `expires_in` means this many seconds (SPEC §3.3).
pub const DEFAULT_EXPIRES_IN: i64 = 300;
/// Larger `expires_in` values are clamped to this (one year).
pub const MAX_EXPIRES_IN: i64 = 365 * 86400;

#[derive(Debug, Clone)]
pub struct TokenSet {
    pub access_token: Secret,
    pub expires_in: i64,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub scope: Option<String>,
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

fn form_encode(s: &str) -> String {
    byte_serialize(s.as_bytes()).collect()
}

/// The `Authorization` header and extra form fields for the configured client auth.
fn client_auth(settings: &OidcSettings, form: &mut Serializer<'_, String>) -> Option<String> {
    match &settings.client_auth {
        ClientAuth::ClientSecretBasic => {
            // RFC 6749 §2.3.1: each part form-urlencoded before base64.
            let pair = format!("{}:{}", form_encode(&settings.client_id), form_encode(settings.client_secret.expose()));
            Some(format!("Basic {}", STANDARD.encode(pair)))
        }
        ClientAuth::ClientSecretPost => {
            form.append_pair("client_id", &settings.client_id);
            form.append_pair("client_secret", settings.client_secret.expose());
            None
        }
        ClientAuth::PrivateKeyJwt(key) => {
            form.append_pair("client_id", &settings.client_id);
            form.append_pair("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
            form.append_pair("client_assertion", &client_assertion(settings, key));
            None
        }
    }
}

/// RFC 7523 §3 client assertion: iss = sub = client_id, aud = the issuer (one string), a fresh
/// jti, valid 60 s.
fn client_assertion(settings: &OidcSettings, key: &crate::settings::SigningKey) -> String {
    let now = crate::state::now();
    let claims = serde_json::json!({
        "iss": settings.client_id,
        "sub": settings.client_id,
        "aud": settings.issuer,
        "jti": crate::secret::random_urlsafe(16),
        "iat": now,
        "exp": now + 60,
    });
    let mut header = jsonwebtoken::Header::new(key.alg);
    header.kid = key.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key.key).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot sign the client assertion");
        String::new()
    })
}

/// The form body and `Authorization` header (the serializer is not `Send`: finish it before
/// any await).
fn authenticated_form(settings: &OidcSettings, params: &[(&str, &str)]) -> (String, Option<String>) {
    let mut form = Serializer::new(String::new());
    for (k, v) in params {
        form.append_pair(k, v);
    }
    let auth = client_auth(settings, &mut form);
    (form.finish(), auth)
}

async fn token_request(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    params: &[(&str, &str)],
) -> Result<TokenSet, TokenError> {
    let (form, auth) = authenticated_form(settings, params);
    let grant =
        if params.first().is_some_and(|(_, v)| *v == "refresh_token") { "refresh_token" } else { "authorization_code" };
    let started = std::time::Instant::now();
    let result = token_call(http, endpoint, form, auth).await;
    metrics::histogram!("bff_idp_token_duration_seconds", "grant" => grant).record(started.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let kind = match e {
            TokenError::Refused(_) => "refused",
            TokenError::Timeout => "timeout",
            TokenError::Unavailable(_) => "unavailable",
        };
        metrics::counter!("bff_idp_token_errors_total", "grant" => grant, "kind" => kind).increment(1);
    }
    result
}

async fn token_call(
    http: &IdpHttp,
    endpoint: &Url,
    form: String,
    auth: Option<String>,
) -> Result<TokenSet, TokenError> {
    let resp = http.post_form(endpoint, form, auth).await?;
    let json: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|_| TokenError::Unavailable("token endpoint answered non-JSON"))?;
    if resp.status.is_client_error() {
        return match json.get("error").and_then(|e| e.as_str()) {
            Some(code) => Err(TokenError::Refused(IdpErrorCode::filter(code))),
            None => Err(TokenError::Unavailable("token endpoint answered 4xx without an OAuth error")),
        };
    }
    if !resp.status.is_success() {
        return Err(TokenError::Unavailable("token endpoint answered an error status"));
    }
    parse_token_response(&json)
}

fn parse_token_response(json: &serde_json::Value) -> Result<TokenSet, TokenError> {
    let str_field = |k: &str| json.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let access_token =
        str_field("access_token").ok_or(TokenError::Unavailable("token response without access_token"))?;
    if !str_field("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err(TokenError::Unavailable("token response token_type is not Bearer"));
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

/// Exchange an authorization code (with its PKCE verifier). The answer must carry an ID token.
pub async fn exchange_code(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    code: &str,
    verifier: &str,
) -> Result<TokenSet, TokenError> {
    let params = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", settings.redirect_uri.as_str()),
        ("code_verifier", verifier),
    ];
    let set = token_request(http, endpoint, settings, &params).await?;
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
) -> Result<TokenSet, TokenError> {
    token_request(http, endpoint, settings, &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)]).await
}

/// RFC 7009. Best effort: the local logout happens whatever the IdP answers.
pub async fn revoke(
    http: &IdpHttp,
    endpoint: &Url,
    settings: &OidcSettings,
    refresh_token: &str,
) -> Result<(), TokenError> {
    let (form, auth) = authenticated_form(settings, &[("token", refresh_token), ("token_type_hint", "refresh_token")]);
    let resp = http.post_form(endpoint, form, auth).await?;
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
        assert_eq!(parse_token_response(&ok).map(|t| t.expires_in), Ok(DEFAULT_EXPIRES_IN));
        let mac = json!({"access_token": "a", "token_type": "mac"});
        assert!(parse_token_response(&mac).is_err());
        let neg = json!({"access_token": "a", "token_type": "Bearer", "expires_in": 0});
        assert!(parse_token_response(&neg).is_err());
        let s = json!({"access_token": "a", "token_type": "Bearer", "expires_in": "60"});
        assert_eq!(parse_token_response(&s).map(|t| t.expires_in), Ok(60));
    }
}
