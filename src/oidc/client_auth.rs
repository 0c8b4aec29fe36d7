//! Client authentication at the token and revocation endpoints (`client_secret_basic`,
//! `client_secret_post`, `private_key_jwt`), and the HS* ID-token key (OIDC Core §10.1). The
//! only code that reads the client secret or the signing key out of their wrappers.

use crate::settings::{ClientAuth, OidcSettings, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey};
use url::form_urlencoded::{Serializer, byte_serialize};

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
fn client_assertion(settings: &OidcSettings, key: &SigningKey) -> String {
    let now = crate::clock::now();
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
pub(crate) fn authenticated_form(settings: &OidcSettings, params: &[(&str, &str)]) -> (String, Option<String>) {
    let mut form = Serializer::new(String::new());
    for (k, v) in params {
        form.append_pair(k, v);
    }
    let auth = client_auth(settings, &mut form);
    (form.finish(), auth)
}

/// The key HS* ID and logout tokens are verified with (the client secret, OIDC Core §10.1),
/// when the configuration allows an HS* algorithm at all.
pub(crate) fn hmac_key(settings: &OidcSettings) -> Option<DecodingKey> {
    let symmetric = settings.id_token_signing_algs.iter().any(is_symmetric);
    symmetric.then(|| DecodingKey::from_secret(settings.client_secret.expose().as_bytes()))
}

/// HS256/384/512: verified with the client secret, never with a JWKS key.
pub fn is_symmetric(alg: &Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}
