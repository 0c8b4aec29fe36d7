//! The checks of one provider against its live IdP (SPEC §7): discovery, JWKS, the endpoints the
//! configuration needs, the client credentials and the clock. Built on the client's own code
//! (`oidc::discovery`, `oidc::jwks`, `oidc::token`): what start-up would refuse is a `fail`.

use super::report::Line;
use crate::oidc::discovery::{self, DiscoveryError, ProviderMetadata, check_requirements};
use crate::oidc::http::IdpHttp;
use crate::oidc::id_token::{is_symmetric, usable_keys};
use crate::oidc::jwks::Jwks;
use crate::oidc::token::{ProbeAnswer, probe_code_exchange};
use crate::settings::{OidcSettings, Par};
use jsonwebtoken::Algorithm;

/// Every check of provider `p`, in order; `backchannel`: the BFF's back-channel logout URL when
/// `[session] url` is set (back-channel logout can then end sessions).
pub async fn check(p: &OidcSettings, backchannel: Option<&str>) -> Vec<Line> {
    let http = match IdpHttp::new(p.http_timeout) {
        Ok(h) => h,
        Err(e) => return vec![Line::fail("discovery", format!("not checked: {e}"))],
    };
    let m = match discovery::discover(&http, &p.issuer).await {
        Ok(m) => m,
        Err(e) => return vec![Line::fail("discovery", discovery_failed(p, &e))],
    };
    let mut out = vec![Line::ok("discovery", format!("issuer {} matches", m.issuer))];
    out.push(jwks(&http, &m, &p.id_token_signing_algs).await);
    out.extend(endpoints(&m, p, backchannel));
    out.push(client_credentials(&http, &m, p).await);
    let url = m.issuer.trim_end_matches('/').to_owned() + "/.well-known/openid-configuration";
    match url::Url::parse(&url) {
        Ok(url) => out.push(super::clock::check(&http, &url, p.clock_skew_secs).await),
        Err(_) => out.push(Line::fail(super::clock::CHECK, "not checked: the issuer is not a URL")),
    }
    out
}

fn discovery_failed(p: &OidcSettings, e: &DiscoveryError) -> String {
    let why = match e {
        DiscoveryError::IssuerMismatch { found, .. } => {
            format!("the IdP's discovery says issuer {found:?}, not the configured {:?}", p.issuer)
        }
        other => format!("{}/.well-known/openid-configuration: {other}", p.issuer.trim_end_matches('/')),
    };
    format!("{why} (this provider's other checks need discovery: skipped)")
}

async fn jwks(http: &IdpHttp, m: &ProviderMetadata, algs: &[Algorithm]) -> Line {
    let jwks = match Jwks::load(http, m.jwks_uri.clone()).await {
        Ok(j) => j,
        Err(e) => return Line::fail("jwks", format!("{}: {e}", m.jwks_uri)),
    };
    let set = jwks.current();
    let usable = usable_keys(&set, algs);
    let names: Vec<String> = algs.iter().map(|a| format!("{a:?}")).collect();
    let names = names.join(", ");
    if usable > 0 {
        Line::ok("jwks", format!("{} key(s) at {}, {usable} usable for {names}", set.keys.len(), m.jwks_uri))
    } else if algs.iter().all(is_symmetric) {
        Line::ok("jwks", format!("{names} only: ID tokens are verified with the client secret, not the JWKS"))
    } else if algs.iter().any(is_symmetric) {
        Line::warn(
            "jwks",
            format!(
                "{} key(s) at {}, none usable for the asymmetric algorithms of {names}: only HS* ID tokens \
                 can be verified",
                set.keys.len(),
                m.jwks_uri
            ),
        )
    } else {
        Line::fail(
            "jwks",
            format!(
                "{} key(s) at {}, none usable for id_token_signing_algs ({names}): every login would fail",
                set.keys.len(),
                m.jwks_uri
            ),
        )
    }
}

/// Revocation and end-session (warnings: logout still works at the BFF), PAR (what start-up
/// refuses fails), DPoP's ES256 when `dpop` is on, back-channel logout when a store is set.
fn endpoints(m: &ProviderMetadata, p: &OidcSettings, backchannel: Option<&str>) -> Vec<Line> {
    let mut out = vec![
        match &m.revocation_endpoint {
            Some(_) => Line::ok("revocation", "revocation_endpoint listed: logout revokes the refresh token"),
            None => Line::warn(
                "revocation",
                "no revocation_endpoint: logout cannot revoke the refresh token at the IdP (it stays valid until it expires)",
            ),
        },
        match &m.end_session_endpoint {
            Some(_) => Line::ok("end-session", "end_session_endpoint listed: logout ends the IdP session too"),
            None => Line::warn(
                "end-session",
                "no end_session_endpoint: logout ends the session at the BFF only, the user stays signed in at the IdP",
            ),
        },
    ];
    out.push(match check_requirements(m, p.par, false) {
        Err(e) => Line::fail("par", e.to_string()),
        Ok(()) => match (p.par, &m.par_endpoint) {
            (Par::Required, _) => Line::ok("par", "par = \"required\": pushed_authorization_request_endpoint listed"),
            (Par::Auto, Some(_)) => Line::ok("par", "par = \"auto\": the IdP lists a PAR endpoint, logins push"),
            (Par::Auto, None) => {
                Line::ok("par", "par = \"auto\": no PAR endpoint listed, logins use the front channel")
            }
            (Par::Off, _) => Line::ok("par", "par = \"off\": logins use the front channel"),
        },
    });
    if p.dpop {
        out.push(if m.dpop_algs.iter().any(|a| a == "ES256") {
            Line::ok("dpop", "dpop = true: ES256 in dpop_signing_alg_values_supported")
        } else {
            // The IdP's own words: only algorithm-shaped names are shown, at most eight.
            let names: Vec<&str> = m
                .dpop_algs
                .iter()
                .filter(|a| (1..=16).contains(&a.len()) && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                .take(8)
                .map(String::as_str)
                .collect();
            let listed = if names.is_empty() { "nothing usable".to_owned() } else { names.join(", ") };
            Line::fail(
                "dpop",
                format!("dpop = true but dpop_signing_alg_values_supported lacks ES256 (it lists {listed})"),
            )
        });
    }
    if let Some(url) = backchannel {
        out.push(if m.backchannel_logout_supported {
            Line::ok("backchannel-logout", format!("backchannel_logout_supported: register {url} at the IdP"))
        } else {
            Line::warn(
                "backchannel-logout",
                "the IdP does not say backchannel_logout_supported: a logout at the IdP will not end BFF sessions",
            )
        });
    }
    out
}

const CLIENT: &str = "client-credentials";

/// A code exchange with a made-up code: `invalid_grant` means the client authenticated.
async fn client_credentials(http: &IdpHttp, m: &ProviderMetadata, p: &OidcSettings) -> Line {
    match probe_code_exchange(http, &m.token_endpoint, p).await {
        Ok(answer) => judge(&answer, p),
        Err(e) => Line::fail(CLIENT, format!("{}: {e}", m.token_endpoint)),
    }
}

fn auth_name(p: &OidcSettings) -> &'static str {
    match p.client_auth {
        crate::settings::ClientAuth::ClientSecretBasic => "client_secret_basic",
        crate::settings::ClientAuth::ClientSecretPost => "client_secret_post",
        crate::settings::ClientAuth::PrivateKeyJwt(_) => "private_key_jwt",
    }
}

/// The verdict on the token endpoint's answer (its `error` code only, never its description).
pub fn judge(a: &ProbeAnswer, p: &OidcSettings) -> Line {
    let who = format!("client {:?} ({})", p.client_id, auth_name(p));
    match a.error.as_ref().map(|e| e.as_str()) {
        Some("invalid_grant") => {
            Line::ok(CLIENT, format!("{who}: a made-up code was refused with invalid_grant, the client authenticated"))
        }
        Some("invalid_client") => Line::fail(
            CLIENT,
            format!("{who}: client authentication failed (invalid_client, HTTP {}): check the credentials", a.status),
        ),
        _ if a.status == 401 => {
            Line::fail(CLIENT, format!("{who}: client authentication failed (HTTP 401): check the credentials"))
        }
        Some(code) => Line::warn(
            CLIENT,
            format!("{who}: a made-up code was answered {code} (HTTP {}), not invalid_grant", a.status),
        ),
        None => Line::warn(
            CLIENT,
            format!("{who}: a made-up code was answered HTTP {} without an OAuth error, not invalid_grant", a.status),
        ),
    }
}
