//! The checks that need no IdP: the redirect URIs' scheme and the cookie budget (SPEC §7).

use super::report::Line;
use crate::login::tx::{TxShape, cookie_header_bytes};
use crate::session::cookie::CookieNames;
use crate::settings::{OidcSettings, Settings, StoreKind};
use url::Url;

pub const REDIRECT: &str = "redirect-uris";
pub const BUDGET: &str = "cookie-budget";

/// nginx's default `large_client_header_buffers` (8k): a longer `Cookie` line must be allowed by
/// every proxy in front (SPEC §7).
pub const PROXY_LINE_BYTES: usize = 8192;

/// https, or http only on a loopback host: the rule of every IdP URL.
fn scheme_ok(url: &Url) -> bool {
    crate::oidc::http::IdpHttp::check_url(url).is_ok()
}

/// `redirect_uri` and `post_logout_redirect_uri`: codes and logouts travel to them through the
/// browser, so anything but https (or http on loopback, for development) is a `fail`.
pub fn redirect_uris(p: &OidcSettings) -> Line {
    let post_logout = Url::parse(&p.post_logout_redirect_uri);
    let mut bad = Vec::new();
    if !scheme_ok(&p.redirect_uri) {
        bad.push(format!("redirect_uri {}", p.redirect_uri));
    }
    match &post_logout {
        Ok(u) if scheme_ok(u) => {}
        _ => bad.push(format!("post_logout_redirect_uri {}", p.post_logout_redirect_uri)),
    }
    if !bad.is_empty() {
        return Line::fail(REDIRECT, format!("{}: must be https (http only on loopback)", bad.join(", ")));
    }
    let loopback_http = p.redirect_uri.scheme() == "http" || post_logout.is_ok_and(|u| u.scheme() == "http");
    let how = if loopback_http { "https or http on loopback" } else { "https" };
    Line::ok(REDIRECT, format!("{} and {}: {how}", p.redirect_uri, p.post_logout_redirect_uri))
}

/// What this configuration's transaction cookies can hold.
fn shape(s: &Settings, server_side: bool) -> TxShape {
    TxShape {
        server_side,
        dpop: std::iter::once(&s.oidc).chain(&s.providers).any(|p| p.dpop),
        provider_len: s.providers.iter().map(|p| p.name.len()).max().unwrap_or(0),
    }
}

/// The largest `Cookie` header this configuration can make a browser send, in bytes, against
/// `max_header_bytes` and [`PROXY_LINE_BYTES`].
pub fn cookie_budget(s: &Settings) -> Line {
    let names = CookieNames::new(&s.session);
    let server_side = s.session.store != StoreKind::Cookie;
    let bytes = cookie_header_bytes(&names, shape(s, server_side));
    let with_store = (!server_side).then(|| cookie_header_bytes(&names, shape(s, true)));
    budget_verdict(bytes, s.server.max_header_bytes, with_store)
}

/// The verdict on a largest `Cookie` header of `bytes`; `with_store`: what a server-side store
/// would make it (cookie mode only).
pub fn budget_verdict(bytes: usize, max_header_bytes: usize, with_store: Option<usize>) -> Line {
    let what = match with_store {
        Some(_) => "8 session cookie chunks + 5 login-transaction cookies with the longest return_to",
        None => "the session id cookie + 5 login-transaction cookies with the longest return_to",
    };
    if bytes > max_header_bytes {
        return Line::fail(
            BUDGET,
            format!(
                "{bytes} bytes of Cookie header at most ({what}), over server.max_header_bytes \
                 ({max_header_bytes}): such requests are refused with 431"
            ),
        );
    }
    if bytes <= PROXY_LINE_BYTES {
        return Line::ok(BUDGET, format!("{bytes} bytes of Cookie header at most ({what})"));
    }
    let advice = match with_store {
        Some(small) => format!(
            "a server-side store ([session] store and url) keeps the session cookie to an id: {small} bytes at most"
        ),
        None => "the login-transaction cookies make up most of it".to_owned(),
    };
    Line::warn(
        BUDGET,
        format!(
            "{bytes} bytes of Cookie header at most ({what}), over {PROXY_LINE_BYTES} (nginx's default \
             large_client_header_buffers): every proxy in front must accept a Cookie line this long; {advice}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::report::Status;

    #[test]
    fn budget_thresholds() {
        assert_eq!(budget_verdict(8192, 65536, Some(100)).status(), Status::Ok);
        let warn = budget_verdict(8193, 65536, Some(4000));
        assert_eq!(warn.status(), Status::Warn);
        assert!(
            warn.detail().contains("8193 bytes") && warn.detail().contains("to an id: 4000 bytes at most"),
            "{warn:?}"
        );
        let fail = budget_verdict(65537, 65536, None);
        assert_eq!(fail.status(), Status::Fail);
        assert!(
            fail.detail().contains("65537 bytes") && fail.detail().contains("max_header_bytes (65536)"),
            "{fail:?}"
        );
        assert_eq!(budget_verdict(65536, 65536, None).status(), Status::Warn);
    }

    #[test]
    fn redirect_schemes() {
        for (url, ok) in [
            ("https://app.example.com/callback", true),
            ("http://127.0.0.1:8080/callback", true),
            ("http://[::1]:8080/callback", true),
            ("http://app.example.com/callback", false),
        ] {
            assert_eq!(scheme_ok(&Url::parse(url).unwrap_or_else(|e| panic!("{e}"))), ok, "{url}");
        }
    }
}
