//! `[oidc]`: the provider, this client and its authentication, the ID-token rules.

use super::checks::{Problems, is_loopback_host, read_secret_file, resource_ok, scope_token_ok, secs};
use super::model::*;
use super::raw::RawOidc;
use crate::secret::Secret;
use jsonwebtoken::Algorithm;
use std::time::Duration;
use url::Url;

const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "response_mode",
    "redirect_uri",
    "state",
    "nonce",
    "scope",
    "client_id",
    "code_challenge",
    "code_challenge_method",
    // `[oidc] resource` sends it on every request that needs it (RFC 8707).
    "resource",
    // A request object could replace every parameter above at a JAR-capable IdP.
    "request",
    "request_uri",
    // DPoP binds the code to the BFF's own key (SPEC §3.6).
    "dpop_jkt",
    // Client authentication travels in a pushed request's body (SPEC §3.5).
    "client_secret",
    "client_assertion",
    "client_assertion_type",
];

/// `[oidc]` (`name` "default") or one `[[providers]]` entry: every problem is named after
/// where it was written (`oidc.client_id`, `providers.partners.client_id`).
pub(super) fn oidc(
    raw: RawOidc,
    name: &str,
    server: Option<&ServerSettings>,
    p: &mut Problems,
) -> Option<OidcSettings> {
    let mut mine = Problems(Vec::new());
    let settings = read(raw, name, server, &mut mine);
    let prefix = if name == DEFAULT_PROVIDER { "oidc.".to_owned() } else { format!("providers.{name}.") };
    p.0.extend(mine.0.into_iter().map(|line| match line.strip_prefix("oidc.") {
        Some(rest) => format!("{prefix}{rest}"),
        None => line,
    }));
    settings
}

fn read(raw: RawOidc, name: &str, server: Option<&ServerSettings>, p: &mut Problems) -> Option<OidcSettings> {
    let issuer_ok = match Url::parse(&raw.issuer) {
        _ if raw.issuer.is_empty() => {
            p.push("oidc.issuer", "required");
            false
        }
        Ok(u)
            if (u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)))
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            true
        }
        Ok(_) => {
            p.push("oidc.issuer", "must be an https URL (http only on loopback) without query or fragment");
            false
        }
        Err(_) => {
            p.push("oidc.issuer", "not an absolute URL");
            false
        }
    };
    if raw.client_id.is_empty() {
        p.push("oidc.client_id", "required");
    }
    let client_auth = match raw.client_auth.as_str() {
        "client_secret_basic" => Some(ClientAuth::ClientSecretBasic),
        "client_secret_post" => Some(ClientAuth::ClientSecretPost),
        "private_key_jwt" => signing_key(&raw.private_key_file, &raw.private_key_id, p).map(ClientAuth::PrivateKeyJwt),
        _ => {
            p.push("oidc.client_auth", "must be client_secret_basic, client_secret_post or private_key_jwt");
            None
        }
    };
    let key_jwt = raw.client_auth == "private_key_jwt";
    if !key_jwt && (!raw.private_key_file.is_empty() || !raw.private_key_id.is_empty()) {
        p.push("oidc.private_key_file", "only used with client_auth = \"private_key_jwt\"");
    }
    let secret = match (raw.client_secret.is_empty(), raw.client_secret_file.is_empty()) {
        // private_key_jwt needs no secret (HS* ID tokens would, checked below).
        (true, true) if key_jwt => Some(String::new()),
        (false, false) => {
            p.push("oidc.client_secret", "set either client_secret or client_secret_file, not both");
            None
        }
        (false, true) => Some(raw.client_secret.clone()),
        (true, false) => read_secret_file("oidc.client_secret_file", &raw.client_secret_file, p),
        (true, true) => {
            p.push("oidc.client_secret", "required for client_secret_basic and client_secret_post");
            None
        }
    };
    if secret.as_deref() == Some("") && !key_jwt {
        p.push("oidc.client_secret", "must not be empty");
    }
    if !raw.scopes.iter().any(|s| s == "openid") {
        p.push("oidc.scopes", "must contain \"openid\"");
    }
    if !raw.scopes.iter().all(|s| scope_token_ok(s)) {
        p.push("oidc.scopes", "scope tokens may not contain spaces, quotes or control characters");
    }
    let default_callback = server.and_then(|s| s.public_url.join(&format!("{}/callback", s.base_path)).ok());
    let redirect_uri = if raw.redirect_uri.is_empty() {
        default_callback.clone()
    } else {
        match Url::parse(&raw.redirect_uri) {
            Ok(u) if u.fragment().is_none() && matches!(u.scheme(), "https" | "http") => {
                if let Some(s) = server {
                    let origin = u.origin().ascii_serialization();
                    if origin != s.public_origin && !s.allowed_origins.contains(&origin) {
                        p.push(
                            "oidc.redirect_uri",
                            "must be on server.public_url's origin or one of server.allowed_origins",
                        );
                    }
                }
                Some(u)
            }
            _ => {
                p.push("oidc.redirect_uri", "must be an absolute http(s) URL without fragment");
                None
            }
        }
    };
    let redirect_is_callback = redirect_uri.is_some() && redirect_uri == default_callback;
    let own_callback = server.and_then(|s| s.public_url.join(&format!("{}/callback/{name}", s.base_path)).ok());
    let callback_is_own = redirect_uri.is_some() && redirect_uri == own_callback;
    let post_logout_redirect_uri = if raw.post_logout_redirect_uri.is_empty() {
        server.map(|s| format!("{}/", s.public_origin)).unwrap_or_default()
    } else {
        if Url::parse(&raw.post_logout_redirect_uri).map(|u| matches!(u.scheme(), "https" | "http")) != Ok(true) {
            p.push("oidc.post_logout_redirect_uri", "must be an absolute http(s) URL");
        }
        raw.post_logout_redirect_uri.clone()
    };
    for key in raw.auth_params.keys() {
        if RESERVED_AUTH_PARAMS.contains(&key.as_str()) || key.starts_with("code_challenge") {
            p.push("oidc.auth_params", format_args!("{key} is set by oidc-bff itself and cannot be overridden"));
        }
    }
    let mut algs = Vec::new();
    for a in &raw.id_token_signing_algs {
        match a.parse::<Algorithm>() {
            Ok(alg) => algs.push(alg),
            Err(_) => p.push(
                "oidc.id_token_signing_algs",
                format_args!("{a:?} is not a supported algorithm (\"none\" never is)"),
            ),
        }
    }
    if raw.id_token_signing_algs.is_empty() {
        p.push("oidc.id_token_signing_algs", "must list at least one algorithm");
    }
    // RFC 7518 §3.2: an HMAC key at least as long as the hash.
    for (alg, min) in [(Algorithm::HS256, 32), (Algorithm::HS384, 48), (Algorithm::HS512, 64)] {
        if algs.contains(&alg) && secret.as_deref().is_some_and(|s| s.len() < min) {
            p.push("oidc.id_token_signing_algs", format_args!("{alg:?} needs a client secret of at least {min} bytes"));
        }
    }
    let max_age = match raw.auth_params.get("max_age").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            p.push("oidc.auth_params", "max_age must be a non-negative integer");
            None
        }
    };
    for r in &raw.resource {
        if !resource_ok(r) {
            p.push("oidc.resource", format_args!("{r:?} is not an absolute URI without a fragment (RFC 8707)"));
        }
    }
    let par = match raw.par.as_str() {
        "auto" => Some(Par::Auto),
        "required" => Some(Par::Required),
        "off" => Some(Par::Off),
        _ => {
            p.push("oidc.par", "must be auto, required or off");
            None
        }
    };
    let skew = secs("oidc.clock_skew_secs", raw.clock_skew_secs, 0, 600, p);
    let timeout = secs("oidc.http_timeout_secs", raw.http_timeout_secs, 1, 120, p);
    let margin = secs("oidc.refresh_margin_secs", raw.refresh_margin_secs, 0, 3600, p);
    let grace = secs("oidc.refresh_grace_secs", raw.refresh_grace_secs, 0, 600, p);
    if !issuer_ok || raw.client_id.is_empty() {
        return None;
    }
    Some(OidcSettings {
        name: name.to_owned(),
        issuer: raw.issuer,
        client_id: raw.client_id,
        client_secret: Secret::new(secret?),
        client_auth: client_auth?,
        scope: raw.scopes.join(" "),
        redirect_uri: redirect_uri?,
        redirect_is_callback,
        callback_is_own,
        post_logout_redirect_uri,
        auth_params: raw.auth_params.into_iter().collect(),
        id_token_signing_algs: algs,
        max_age,
        clock_skew_secs: skew,
        http_timeout: Duration::from_secs(timeout),
        refresh_margin_secs: margin,
        refresh_grace_secs: grace,
        resource: raw.resource,
        par: par?,
        dpop: raw.dpop,
    })
}

/// The `private_key_jwt` key: a PEM file holding a P-256 (ES256) or RSA (RS256) private key.
/// ES256 is preferred: RSA signing in the pure-Rust backend carries RUSTSEC-2023-0071 (a timing
/// side channel); see docs/security.md.
pub(super) fn signing_key(file: &str, kid: &str, p: &mut Problems) -> Option<SigningKey> {
    if file.is_empty() {
        p.push("oidc.private_key_file", "required for private_key_jwt");
        return None;
    }
    let pem = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            p.push("oidc.private_key_file", format_args!("cannot read {file:?}: {}", e.kind()));
            return None;
        }
    };
    let kid = (!kid.is_empty()).then(|| kid.to_owned());
    if let Ok(key) = jsonwebtoken::EncodingKey::from_ec_pem(&pem) {
        return Some(SigningKey { key: std::sync::Arc::new(key), alg: Algorithm::ES256, kid });
    }
    if let Ok(key) = jsonwebtoken::EncodingKey::from_rsa_pem(&pem) {
        return Some(SigningKey { key: std::sync::Arc::new(key), alg: Algorithm::RS256, kid });
    }
    p.push("oidc.private_key_file", "not a PEM P-256 (EC) or RSA private key");
    None
}
