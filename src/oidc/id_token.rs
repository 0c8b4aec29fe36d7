//! ID token validation, OIDC Core §3.1.3.7 as SPEC §3.4 words it. Any failure means nothing
//! is stored; the reason is logged, the client sees `invalid_id_token`.

use super::http::IdpHttp;
use super::jwks::{Jwks, KeySet, VerifyingKey};
use crate::secret::ct_eq;
use crate::settings::OidcSettings;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::jwk::EllipticCurve;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Why an ID token was refused (logged, never shown to the client beyond the code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    #[error("malformed token or header")]
    Malformed,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("no key in the JWKS can verify this token")]
    NoMatchingKey,
    #[error("signature invalid")]
    InvalidSignature,
    #[error("issuer mismatch")]
    InvalidIssuer,
    #[error("audience does not contain client_id")]
    InvalidAudience,
    #[error("azp missing or not client_id")]
    InvalidAuthorizedParty,
    #[error("expired")]
    Expired,
    #[error("iat missing or in the future")]
    InvalidIssuedAt,
    #[error("sub missing")]
    MissingSubject,
    /// Stores scope ids by provider with a control-character separator (`session::scope`), so
    /// ids may not hold control characters (OIDC Core §2: `sub` is printable ASCII anyway).
    #[error("sub or sid holds control characters")]
    ControlCharacters,
    #[error("nonce missing or wrong")]
    InvalidNonce,
    #[error("at_hash does not match the access token")]
    InvalidAccessTokenHash,
    #[error("refreshed ID token changed iss, sub or aud")]
    RefreshMismatch,
    #[error("auth_time missing or older than max_age")]
    InvalidAuthTime,
    #[error("JWKS could not be refetched")]
    KeysUnavailable,
}

/// What every ID and logout token is checked against, built once from configuration
/// (openidconnect-rs's `IdTokenVerifier` is the model): the issuer, this client, the allowed
/// algorithms, the clock skew and, for HS*, the key made from the client secret.
pub struct Verifier {
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) algorithms: Vec<Algorithm>,
    pub(super) clock_skew_secs: u64,
    /// `max_age` sent at login (OIDC Core §3.1.3.7 items 11–13): `auth_time` required.
    max_age: Option<u64>,
    /// HS* only ever verifies with the client secret (never a symmetric JWKS entry).
    pub(super) hmac_key: Option<DecodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuer", &self.issuer).field("client_id", &self.client_id).finish()
    }
}

impl Verifier {
    pub fn new(settings: &OidcSettings) -> Self {
        Self {
            issuer: settings.issuer.clone(),
            client_id: settings.client_id.clone(),
            algorithms: settings.id_token_signing_algs.clone(),
            clock_skew_secs: settings.clock_skew_secs,
            max_age: settings.max_age,
            hmac_key: super::client_auth::hmac_key(settings),
        }
    }
}

/// What one validation adds to the verifier's rules.
pub struct Check<'a> {
    /// `Some` at login: must equal the token's nonce. `None` on refresh (no nonce check).
    pub nonce: Option<&'a str>,
    /// On refresh: the original token's subject, which must not change.
    pub sub: Option<&'a str>,
    pub access_token: Option<&'a str>,
    /// At login (`max_age` is checked then); a refresh does not re-authenticate.
    pub login: bool,
    pub now: i64,
}

/// Any control character (C0, DEL, C1)?
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

#[derive(Debug, Clone)]
pub struct ValidIdToken {
    pub sub: String,
    pub sid: Option<String>,
    /// The audiences, sorted.
    pub aud: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    Many(Vec<String>),
    One(String),
}

impl Audience {
    pub(crate) fn sorted(self) -> Vec<String> {
        let mut v = match self {
            Self::Many(v) => v,
            Self::One(s) => vec![s],
        };
        v.sort();
        v
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    at_hash: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    auth_time: Option<f64>,
}

fn compatible(alg: Algorithm, params: &AlgorithmParameters) -> bool {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(ec) => {
            matches!((alg, &ec.curve), (ES256, EllipticCurve::P256) | (ES384, EllipticCurve::P384))
        }
        AlgorithmParameters::OctetKeyPair(okp) => alg == EdDSA && okp.curve == EllipticCurve::Ed25519,
        // Symmetric JWKS entries are never trusted: HS* verifies only with the client secret.
        _ => false,
    }
}

/// May `k` verify a token signed with `alg`: its `kty`/`crv`, `alg` and `use` agree (SPEC §3.4)?
fn fits(k: &VerifyingKey, alg: Algorithm) -> bool {
    compatible(alg, &k.jwk.algorithm)
        && k.jwk.common.key_algorithm.is_none_or(|ka| format!("{ka:?}") == format!("{alg:?}"))
        && k.jwk.common.public_key_use.as_ref().is_none_or(|u| *u == jsonwebtoken::jwk::PublicKeyUse::Signature)
}

fn candidates<'s>(set: &'s KeySet, alg: Algorithm, kid: Option<&str>) -> Vec<&'s DecodingKey> {
    set.keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.jwk.common.key_id.as_deref() == Some(kid)))
        .filter(|k| fits(k, alg))
        .map(|k| &k.key)
        .collect()
}

/// The HS* test, where the rest of the ID-token rules are (it lives in `client_auth`, which
/// this module uses).
pub use super::client_auth::is_symmetric;

/// How many keys of `set` can verify a token signed with one of `algs` (`oidc-bff doctor`,
/// SPEC §7). Symmetric algorithms never count: they verify with the client secret.
pub fn usable_keys(set: &KeySet, algs: &[Algorithm]) -> usize {
    set.keys.iter().filter(|k| algs.iter().any(|a| fits(k, *a))).count()
}

fn hash_left_half(alg: Algorithm, input: &[u8]) -> String {
    use Algorithm::*;
    let digest: Vec<u8> = match alg {
        RS384 | PS384 | ES384 | HS384 => Sha384::digest(input).to_vec(),
        RS512 | PS512 | HS512 | EdDSA => Sha512::digest(input).to_vec(),
        _ => Sha256::digest(input).to_vec(),
    };
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

/// Verify `token`'s signature with the IdP's keys (HS*: the client secret; never a symmetric
/// JWKS entry) and decode its claims under `validation`. Shared by ID and logout tokens.
pub(crate) async fn decode_verified<T: serde::de::DeserializeOwned>(
    token: &str,
    alg: Algorithm,
    kid: Option<&str>,
    validation: &Validation,
    hmac_key: Option<&DecodingKey>,
    jwks: &Jwks,
    http: &IdpHttp,
) -> Result<T, IdTokenError> {
    let symmetric = is_symmetric(&alg);
    let set;
    let keys: Vec<&DecodingKey> = if symmetric {
        hmac_key.into_iter().collect()
    } else {
        set = jwks.for_kid(http, kid).await.map_err(|_| IdTokenError::KeysUnavailable)?;
        candidates(&set, alg, kid)
    };
    if keys.is_empty() {
        return Err(IdTokenError::NoMatchingKey);
    }
    for key in keys {
        match jsonwebtoken::decode::<T>(token, key, validation) {
            Ok(d) => return Ok(d.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => continue,
                other => return Err(map_kind(other)),
            },
        }
    }
    Err(IdTokenError::InvalidSignature)
}

/// Validate `token`. `jwks` is consulted (and refetched on a kid miss) only for asymmetric
/// algorithms.
pub async fn validate(
    token: &str,
    v: &Verifier,
    exp: &Check<'_>,
    jwks: &Jwks,
    http: &IdpHttp,
) -> Result<ValidIdToken, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    let alg = header.alg;
    if !v.algorithms.contains(&alg) {
        return Err(IdTokenError::AlgorithmNotAllowed);
    }
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[&v.issuer]);
    validation.set_audience(&[&v.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = v.clock_skew_secs;
    validation.validate_nbf = true;

    let claims: Claims =
        decode_verified(token, alg, header.kid.as_deref(), &validation, v.hmac_key.as_ref(), jwks, http).await?;

    let sub = claims.sub.filter(|s| !s.is_empty()).ok_or(IdTokenError::MissingSubject)?;
    if has_control(&sub) || claims.sid.as_deref().is_some_and(has_control) {
        return Err(IdTokenError::ControlCharacters);
    }
    let iat = claims.iat.ok_or(IdTokenError::InvalidIssuedAt)?;
    if iat > (exp.now + v.clock_skew_secs as i64) as f64 {
        return Err(IdTokenError::InvalidIssuedAt);
    }
    let several = matches!(&claims.aud, Some(Audience::Many(v)) if v.len() > 1);
    match &claims.azp {
        Some(azp) if *azp != v.client_id => return Err(IdTokenError::InvalidAuthorizedParty),
        None if several => return Err(IdTokenError::InvalidAuthorizedParty),
        _ => {}
    }
    if let Some(expected) = exp.nonce {
        let got = claims.nonce.as_deref().ok_or(IdTokenError::InvalidNonce)?;
        // Compare digests so that timing reveals nothing about the expected value.
        if !ct_eq(&Sha256::digest(got), &Sha256::digest(expected)) {
            return Err(IdTokenError::InvalidNonce);
        }
    }
    if let Some(max_age) = v.max_age.filter(|_| exp.login) {
        let auth_time = claims.auth_time.ok_or(IdTokenError::InvalidAuthTime)?;
        let skew = v.clock_skew_secs as f64;
        if auth_time > exp.now as f64 + skew || (exp.now as f64 - auth_time) > max_age as f64 + skew {
            return Err(IdTokenError::InvalidAuthTime);
        }
    }
    if let Some(original) = exp.sub
        && original != sub
    {
        return Err(IdTokenError::RefreshMismatch);
    }
    if let (Some(at_hash), Some(at)) = (&claims.at_hash, exp.access_token)
        && !ct_eq(hash_left_half(alg, at.as_bytes()).as_bytes(), at_hash.as_bytes())
    {
        return Err(IdTokenError::InvalidAccessTokenHash);
    }
    // An empty sid is no sid (back-channel logout matches on it).
    let sid = claims.sid.filter(|s| !s.is_empty());
    Ok(ValidIdToken { sub, sid, aud: claims.aud.map(Audience::sorted).unwrap_or_default() })
}

fn map_kind(kind: &jsonwebtoken::errors::ErrorKind) -> IdTokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => IdTokenError::Expired,
        K::InvalidIssuer => IdTokenError::InvalidIssuer,
        K::InvalidAudience => IdTokenError::InvalidAudience,
        K::MissingRequiredClaim(c) if c == "iss" => IdTokenError::InvalidIssuer,
        K::MissingRequiredClaim(c) if c == "aud" => IdTokenError::InvalidAudience,
        K::MissingRequiredClaim(c) if c == "exp" => IdTokenError::Expired,
        K::InvalidSubject | K::MissingRequiredClaim(_) => IdTokenError::MissingSubject,
        K::ImmatureSignature => IdTokenError::InvalidIssuedAt,
        K::InvalidAlgorithm => IdTokenError::AlgorithmNotAllowed,
        _ => IdTokenError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_never_shows_the_client_secret() {
        let toml = "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1:1\"\n\
                    [oidc]\nissuer = \"http://127.0.0.1:2\"\nclient_id = \"c\"\n\
                    client_secret = \"s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t\"\n\
                    id_token_signing_algs = [\"HS256\", \"RS256\"]\n\
                    [session]\nkeys = [\"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=\"]\n";
        let settings = crate::settings::Settings::from_toml_str(toml, vec![]).unwrap_or_else(|e| panic!("{e}"));
        let v = Verifier::new(&settings.oidc);
        assert!(v.hmac_key.is_some(), "HS256 allowed: the key is built");
        let shown = format!("{v:?}");
        assert!(!shown.contains("s3cr3t") && shown.contains("client_id"), "{shown}");
    }

    #[test]
    fn usable_keys_agree_with_the_configured_algorithms() {
        // RFC 7517 A.1's P-256 key, once as a signing key and once marked for encryption.
        let jwk = |usage: &str| {
            serde_json::json!({"kty": "EC", "crv": "P-256", "use": usage, "kid": usage,
                "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"})
        };
        let body = serde_json::json!({"keys": [jwk("sig"), jwk("enc")]}).to_string();
        let set = KeySet::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(usable_keys(&set, &[Algorithm::RS256, Algorithm::ES256]), 1);
        assert_eq!(usable_keys(&set, &[Algorithm::RS256, Algorithm::PS256]), 0);
        assert_eq!(usable_keys(&set, &[Algorithm::HS256]), 0);
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_digest() {
        // OIDC Core A.3 example: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" → at_hash
        assert_eq!(
            hash_left_half(Algorithm::RS256, b"jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
