//! Back-channel logout token validation: OpenID Connect Back-Channel Logout 1.0 §2.6, as
//! SPEC §5 words it. The `jti` replay check is the caller's (it needs the store) and runs only
//! after everything here has passed, so an invalid token never uses up a `jti`.

use super::http::IdpHttp;
use super::id_token::{Audience, IdTokenError, Verifier, decode_verified};
use super::jwks::Jwks;
use jsonwebtoken::Validation;
use serde::Deserialize;

pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// A logout token is accepted for at most this long after its `iat`.
pub const MAX_AGE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("{0}")]
    Jwt(#[from] IdTokenError),
    #[error("typ is not logout+jwt")]
    WrongType,
    #[error("iat missing, in the future or older than 5 minutes")]
    InvalidIssuedAt,
    #[error("jti missing")]
    MissingJti,
    #[error("events claim missing or without the back-channel logout member")]
    MissingEvent,
    #[error("neither sid nor sub")]
    MissingSubject,
    #[error("nonce present (not allowed in a logout token)")]
    NoncePresent,
}

#[derive(Debug, Clone)]
pub struct ValidLogoutToken {
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub iat: i64,
    pub jti: String,
    /// Unix seconds after which the token (and so its `jti` record) is useless.
    pub usable_until: i64,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    events: Option<serde_json::Map<String, serde_json::Value>>,
    // Present at all (any type) is a refusal.
    #[serde(default)]
    nonce: Option<serde_json::Value>,
    // Only so that `aud` is checked by jsonwebtoken; kept for clarity.
    #[serde(default)]
    #[allow(dead_code)]
    aud: Option<Audience>,
}

pub async fn validate(
    token: &str,
    e: &Verifier,
    now: i64,
    jwks: &Jwks,
    http: &IdpHttp,
) -> Result<ValidLogoutToken, LogoutTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !e.algorithms.contains(&header.alg) {
        return Err(IdTokenError::AlgorithmNotAllowed.into());
    }
    // Explicit typing (RFC 8725 §3.11): an ID token must not pass as a logout token. The media
    // type may carry its `application/` prefix; media types compare case-insensitively.
    if let Some(typ) = &header.typ {
        let t = typ.to_ascii_lowercase();
        if t != "logout+jwt" && t != "application/logout+jwt" {
            return Err(LogoutTokenError::WrongType);
        }
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&e.issuer]);
    validation.set_audience(&[&e.client_id]);
    validation.set_required_spec_claims(&["iss", "aud", "iat"]);
    // `exp` is optional in a logout token: checked below when present.
    validation.validate_exp = false;
    validation.validate_nbf = true;
    validation.leeway = e.clock_skew_secs;
    let c: Claims =
        decode_verified(token, header.alg, header.kid.as_deref(), &validation, e.hmac_key.as_ref(), jwks, http).await?;

    let skew = e.clock_skew_secs as i64;
    let iat = c.iat.ok_or(LogoutTokenError::InvalidIssuedAt)? as i64;
    if iat > now + skew || now - iat > MAX_AGE_SECS + skew {
        return Err(LogoutTokenError::InvalidIssuedAt);
    }
    if let Some(exp) = c.exp
        && (exp as i64) + skew <= now
    {
        return Err(IdTokenError::Expired.into());
    }
    if c.nonce.is_some() {
        return Err(LogoutTokenError::NoncePresent);
    }
    let has_event = c.events.as_ref().and_then(|ev| ev.get(BACKCHANNEL_EVENT)).is_some_and(|v| v.is_object());
    if !has_event {
        return Err(LogoutTokenError::MissingEvent);
    }
    let jti = c.jti.filter(|j| !j.is_empty() && j.len() <= 256).ok_or(LogoutTokenError::MissingJti)?;
    let sub = c.sub.filter(|s| !s.is_empty());
    let sid = c.sid.filter(|s| !s.is_empty());
    if sub.is_none() && sid.is_none() {
        return Err(LogoutTokenError::MissingSubject);
    }
    // As for ID tokens: no session can hold such an id, and ids are scoped by provider with a
    // control-character separator (`session::scope`).
    if [sub.as_deref(), sid.as_deref(), Some(jti.as_str())].into_iter().flatten().any(super::id_token::has_control) {
        return Err(LogoutTokenError::Jwt(IdTokenError::ControlCharacters));
    }
    Ok(ValidLogoutToken { sub, sid, iat, jti, usable_until: iat + MAX_AGE_SECS + 2 * skew })
}

/// The `iss` claim of a compact JWS, read WITHOUT verifying anything: with several providers it
/// only chooses which provider's keys, issuer and client id then validate the token (SPEC §3.7).
pub fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token).ok().map(|c| c.iss)
}
