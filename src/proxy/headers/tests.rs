//! Header rewriting, field by field.

use super::*;
use crate::settings::{KeyMaterial, SameSite, SessionSettings};

fn names() -> CookieNames {
    CookieNames::new(&SessionSettings {
        store: crate::settings::StoreKind::Cookie,
        url: None,
        keys: vec![KeyMaterial([1; 32])],
        secure: true,
        same_site: SameSite::Strict,
        idle_timeout_secs: 60,
        absolute_timeout_secs: 60,
        cache_max_bytes: 16 << 20,
        events_warning_secs: 120,
    })
}

#[test]
fn request_rewrite_removes_what_the_spec_says() {
    let n = names();
    let mut h = HeaderMap::new();
    h.insert("cookie", HeaderValue::from_static("theme=dark; __Host-bff=secret; __Host-bff-tx.abc=t; lang=en"));
    h.insert("authorization", HeaderValue::from_static("Basic Zm9v"));
    h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
    h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
    h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
    h.insert("x-before", HeaderValue::from_static("1"));
    h.insert("connection", HeaderValue::from_static("keep-alive, X-Secret,x-before"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("x-custom", HeaderValue::from_static("kept"));
    let (proto, host) = (HeaderValue::from_static("https"), HeaderValue::from_static("app.example.com"));
    let f = Forwarding {
        names: &n,
        peer: "10.0.0.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        peer_trusted: false,
        client: "10.0.0.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        proto: &proto,
        host: &host,
        bearer: Some(HeaderValue::from_static("Bearer at")),
        request_id: None,
    };
    let mut out = h.clone();
    upstream_request(&mut out, &f);
    assert_eq!(out["cookie"], "theme=dark; lang=en");
    assert_eq!(out["authorization"], "Bearer at");
    assert_eq!(out["x-forwarded-for"], "10.0.0.7");
    assert_eq!(out["x-forwarded-host"], "app.example.com");
    assert_eq!(out["x-forwarded-proto"], "https");
    assert_eq!(out["x-custom"], "kept");
    for gone in ["connection", "x-secret", "x-before"] {
        assert!(!out.contains_key(gone), "{gone}");
    }
    assert_eq!(out["x-real-ip"], "10.0.0.7");
    assert_eq!(out["forwarded"], "for=10.0.0.7;proto=https;host=\"app.example.com\"");
}

#[test]
fn forwarding_fields_follow_the_peer_and_a_trusted_chain() {
    let n = names();
    let (proto, host) = (HeaderValue::from_static("https"), HeaderValue::from_static("app.example.com"));
    // The client as `middleware::client_ip` finds it: the peer, or behind a trusted peer the
    // last address of the chain (no trusted proxies in it here).
    let run = |peer: &str, trusted: bool, xff: &[&'static str]| {
        let client = if trusted { xff.last().copied().unwrap_or(peer) } else { peer };
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        let f = Forwarding {
            names: &n,
            peer: peer.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            peer_trusted: trusted,
            client: client.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            proto: &proto,
            host: &host,
            bearer: None,
            request_id: None,
        };
        upstream_request(&mut h, &f);
        let one = |k: &str| h.get_all(k).iter().map(|v| v.to_str().unwrap_or("?").to_owned()).collect::<Vec<_>>();
        (one("x-forwarded-for"), one("x-real-ip"), one("forwarded"))
    };
    let chain = run("10.0.0.1", true, &["1.1.1.1", "2.2.2.2"]);
    assert_eq!(chain.0, ["1.1.1.1, 2.2.2.2, 10.0.0.1"]);
    assert_eq!(chain.1, ["2.2.2.2"], "X-Real-IP names the client, not the trusted proxy");
    assert_eq!(chain.2, ["for=2.2.2.2;proto=https;host=\"app.example.com\""]);
    // Same peer, untrusted this time: the browser's chain is dropped, the cached fields reused.
    assert_eq!(run("10.0.0.1", false, &["6.6.6.6"]).0, ["10.0.0.1"]);
    // Another peer right after: its own values, not the previous peer's.
    let other = run("10.0.0.2", false, &[]);
    assert_eq!((other.0, other.1), (vec!["10.0.0.2".to_owned()], vec!["10.0.0.2".to_owned()]));
    assert_eq!(run("::1", false, &[]).2, ["for=\"[::1]\";proto=https;host=\"app.example.com\""]);
}

#[test]
fn answers_to_sessions_are_private_unless_the_upstream_said_so() {
    let run = |cc: &[&'static str], vary: Option<&'static str>| {
        let mut h = HeaderMap::new();
        for v in cc {
            h.append(header::CACHE_CONTROL, HeaderValue::from_static(v));
        }
        if let Some(v) = vary {
            h.insert(header::VARY, HeaderValue::from_static(v));
        }
        private_to_shared_caches(&mut h);
        let all = |n| h.get_all(n).iter().map(|v| v.to_str().unwrap_or("?").to_owned()).collect::<Vec<_>>().join("|");
        (all(header::CACHE_CONTROL), all(header::VARY))
    };
    assert_eq!(run(&[], None), ("private".into(), "Cookie".into()));
    assert_eq!(
        run(&["public", "max-age=9, s-maxage=99"], Some("Accept")),
        ("private, max-age=9".into(), "Accept|Cookie".into())
    );
    assert_eq!(run(&["private=\"a, b\", no-cache"], Some("cookie")), ("private, no-cache".into(), "cookie".into()));
    assert_eq!(run(&["max-age=1, NO-STORE"], None), ("max-age=1, NO-STORE".into(), String::new()));
    assert_eq!(run(&["private"], Some("*")), ("private".into(), "*".into()));
    let mut h = HeaderMap::new();
    for cdn in ["cdn-cache-control", "cloudflare-cdn-cache-control", "surrogate-control", "edge-control"] {
        h.insert(HeaderName::from_static(cdn), HeaderValue::from_static("max-age=300"));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    private_to_shared_caches(&mut h);
    assert_eq!(h.len(), 1, "only Cache-Control is left: {h:?}");
}

#[test]
fn response_filter_drops_own_cookies_and_cors() {
    let n = names();
    let mut h = HeaderMap::new();
    h.append("set-cookie", HeaderValue::from_static("__Host-bff=evil; Path=/"));
    h.append("set-cookie", HeaderValue::from_static("=__Host-bff=evil; Path=/"));
    h.append("set-cookie", HeaderValue::from_static("__HOST-BFF.0=evil; Path=/"));
    h.append("set-cookie", HeaderValue::from_static("pref=1; Path=/"));
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    let mut forwarded = h.clone();
    downstream_response(&mut forwarded, &n, true);
    assert_eq!(forwarded.get_all("set-cookie").iter().count(), 1);
    assert_eq!(forwarded["set-cookie"], "pref=1; Path=/");
    assert!(!forwarded.contains_key("access-control-allow-origin"));
    downstream_response(&mut h, &n, false);
    assert!(!h.contains_key("set-cookie"));
    assert_eq!(h["content-type"], "text/plain");
}
