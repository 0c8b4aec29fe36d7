//! Criterion benchmarks for the per-request hot paths (SPEC §8): sealing and opening the
//! session cookie, `GET /session` through the real router, and the proxy's header rewrite. Figures and how to read them
//! live in `docs/benchmarks.md`.
//!
//! Token sizes follow what PingOne issues: an RS256 ID token of about 1 KB, a JWT access token
//! of about 800 bytes and an opaque 64-character refresh token, so a sealed session is about
//! 3 KB (one cookie). A second session carries a large `groups` claim and is split into chunks.

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use oidc_bff::clock::now;
use oidc_bff::secret::Secret;
use oidc_bff::session::cookie::{CookieNames, SessionCookie, seal_session};
use oidc_bff::session::model::{LogoutToken, Session, Token};
use oidc_bff::session::seal::Keyring;
use oidc_bff::settings::{KeyMaterial, SameSite, SessionSettings, Settings};
use serde_json::{Value, json};
use std::hint::black_box;

/// Target length of the ID token in the typical session.
const ID_TOKEN_BYTES: usize = 1024;
/// Target length of the ID token in the large session (many groups): sealed ≈ 6 KB, 2 chunks.
const LARGE_ID_TOKEN_BYTES: usize = 3400;

const ISSUER: &str = "https://auth.pingone.com/3f2c9a1e-6b7d-4c8e-9f10-2a3b4c5d6e7f/as";
const CLIENT_ID: &str = "9b1d4c7e-2f3a-4b5c-8d6e-7f8091a2b3c4";
const SUB: &str = "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";
const SID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

/// The configuration the `/session` bench runs with (loopback, so http is allowed).
const SETTINGS_TOML: &str = r#"
[server]
public_url = "http://127.0.0.1:8080"
[oidc]
issuer = "http://127.0.0.1:1/ENV/as"
client_id = "bff-bench"
client_secret = "bench-client-secret"
[session]
keys = ["QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI="]
[logging]
access_log = false
"#;

/// A compact JWS shaped like PingOne's: an RS256 header with a key id, base64url JSON claims,
/// and a 256-byte signature. The signature is not valid: nothing on these paths verifies it.
fn jwt(claims: &Value) -> String {
    let header = json!({ "kid": "default", "alg": "RS256" });
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let signature = URL_SAFE_NO_PAD.encode((0..=255u8).collect::<Vec<u8>>());
    format!("{}.{}.{signature}", part(&header), part(claims))
}

/// `claims` as a JWT, with group names added to a `groups` claim until it is `len` bytes long.
fn padded_jwt(mut claims: Value, len: usize) -> String {
    claims["groups"] = json!([]);
    let mut i = 0;
    loop {
        let token = jwt(&claims);
        if token.len() >= len {
            return token;
        }
        if let Some(groups) = claims["groups"].as_array_mut() {
            groups.push(json!(format!("app-group-{i:03}")));
        }
        i += 1;
    }
}

fn id_token(len: usize, t: i64) -> String {
    padded_jwt(
        json!({
            "iss": ISSUER,
            "sub": SUB,
            "aud": CLIENT_ID,
            "exp": t + 3600,
            "iat": t,
            "nonce": "q8VnA1w7cR2xZ0pL5sK9tY3uH6jD4fG1bN8mE2rT7yU",
            "sid": SID,
            "name": "Alice Example",
            "email": "alice.example@example.com",
            "given_name": "Alice",
            "family_name": "Example",
            "preferred_username": "alice.example",
        }),
        len,
    )
}

/// A PingOne-shaped access token. Its usual claims and an RS256 (2048-bit) signature already
/// make about 800 bytes, so it is not padded.
fn access_token(t: i64) -> String {
    jwt(&json!({
        "client_id": CLIENT_ID,
        "iss": ISSUER,
        "jti": "b7c8d9e0-f1a2-4b3c-9d4e-5f6a7b8c9d0e",
        "iat": t,
        "exp": t + 3600,
        "aud": "https://api.example.com",
        "scope": "openid profile email",
        "sub": SUB,
    }))
}

/// A session as login leaves it at `t`: access token valid for an hour, sealed just now.
fn session(id_token_len: usize, t: i64) -> Session {
    Session {
        sub: SUB.to_owned(),
        sid: Some(SID.to_owned()),
        id_token: Token::new(&id_token(id_token_len, t)),
        access_token: Token::new(&access_token(t)),
        access_expires_at: t + 3600,
        access_issued_at: t,
        refresh_token: Some(Secret::new("rT3kV9qW2eX7bN1mZ5cL8pJ4hG6fD0sA-yU_iO2tR9eW4qK7xC1vB3nM6lP8jH5g")),
        scope: Some("openid profile email offline_access".to_owned()),
        created_at: t,
        absolute_expires_at: t + 28800,
        sealed_at: t,
        refreshed_from: None,
        logout_token: LogoutToken::random(),
        stored: None,
        dpop: None,
        provider: None,
    }
}

fn names_and_keys() -> (CookieNames, Keyring) {
    let key = KeyMaterial([7; 32]);
    let names = CookieNames::new(&SessionSettings {
        store: oidc_bff::settings::StoreKind::Cookie,
        url: None,
        keys: vec![key.clone()],
        secure: true,
        same_site: SameSite::Strict,
        idle_timeout_secs: 1800,
        absolute_timeout_secs: 28800,
        cache_max_bytes: 16 << 20,
        events_warning_secs: 120,
    });
    (names, Keyring::new(&[key]))
}

/// The `Cookie` header a browser sends back after `lines`: the name=value pairs of the cookies
/// that were not expired, in one header.
fn browser_cookie(lines: &[String]) -> HeaderValue {
    let pairs: Vec<&str> =
        lines.iter().filter(|l| !l.contains("Max-Age=0")).filter_map(|l| l.split(';').next()).collect();
    HeaderValue::from_str(&pairs.join("; ")).expect("cookie pairs are valid header bytes")
}

/// The request headers carrying `session` sealed as the BFF would write it, and how many
/// cookies that took.
fn cookie_headers(names: &CookieNames, keys: &Keyring, session: &Session) -> (HeaderMap, usize) {
    let sealed = seal_session(names, keys, session);
    let lines = names.write_session(&sealed, 28800);
    let live = lines.iter().filter(|l| !l.contains("Max-Age=0")).count();
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, browser_cookie(&lines));
    (headers, live)
}

fn bench_seal(c: &mut Criterion) {
    let (names, keys) = names_and_keys();
    let s = session(ID_TOKEN_BYTES, now());
    let sealed = seal_session(&names, &keys, &s);
    println!(
        "seal_session: id token {} B, access token {} B, plaintext {} B, sealed {} B",
        s.id_token.compact_len(),
        s.access_token.compact_len(),
        s.to_bytes().len(),
        sealed.len()
    );
    let mut g = c.benchmark_group("seal_session");
    g.throughput(Throughput::Bytes(sealed.len() as u64));
    g.bench_function("single_cookie", |b| b.iter(|| seal_session(&names, &keys, black_box(&s))));
    g.finish();
}

fn bench_open(c: &mut Criterion) {
    let (names, keys) = names_and_keys();
    let t = now();
    let mut g = c.benchmark_group("open_session");
    for (label, id_len, want_cookies) in [("single_cookie", ID_TOKEN_BYTES, 1), ("two_chunks", LARGE_ID_TOKEN_BYTES, 2)]
    {
        let s = session(id_len, t);
        let (headers, cookies) = cookie_headers(&names, &keys, &s);
        let header_len = headers.get(COOKIE).map_or(0, HeaderValue::len);
        println!("open_session/{label}: {cookies} cookie(s), Cookie header {header_len} B");
        assert_eq!(cookies, want_cookies, "{label}: unexpected cookie count");
        let opened = SessionCookie::from_headers(&names, &headers).open_uncached(&names, &keys);
        assert_eq!(opened.map(|o| o.sub).as_deref(), Some(SUB), "{label}");
        g.throughput(Throughput::Bytes(header_len as u64));
        g.bench_function(label, |b| {
            b.iter(|| SessionCookie::from_headers(&names, black_box(&headers)).open_uncached(&names, &keys))
        });
        if label == "single_cookie" {
            // What a request pays when its exact cookie was opened before on this thread.
            let memo = SessionCookie::from_headers(&names, &headers).open(&names, &keys);
            assert_eq!(memo.ok().map(|o| o.sub.clone()).as_deref(), Some(SUB), "memo");
            g.bench_function("memo_hit", |b| {
                b.iter(|| SessionCookie::from_headers(&names, black_box(&headers)).open(&names, &keys))
            });
        }
    }
    g.finish();
}

fn bench_session_handler(c: &mut Criterion) {
    oidc_bff::startup::install_crypto_providers();
    let settings = Settings::from_toml_str(SETTINGS_TOML, vec![]).expect("bench settings valid");
    let state = oidc_bff::startup::app_state(settings).expect("HTTP client builds");
    let app = oidc_bff::routes::router(state.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime builds");

    let s = session(ID_TOKEN_BYTES, now());
    let (headers, _) = cookie_headers(state.sessions.cookies(), state.sessions.keys(), &s);
    let cookie = headers.get(COOKIE).cloned().expect("cookie header built");
    let request = || {
        Request::get("/session")
            .header("x-csrf", "1")
            .header(COOKIE, cookie.clone())
            .body(Body::empty())
            .expect("request builds")
    };
    // The timed path must be the common one: 200, no refresh, no re-seal (no Set-Cookie).
    let check = |when: &str| {
        let resp = rt.block_on(oidc_bff::routes::serve(&state, app.clone(), request()));
        assert_eq!(resp.status(), StatusCode::OK, "{when}");
        assert!(!resp.headers().contains_key(SET_COOKIE), "{when}: re-sealed");
        let body = rt.block_on(axum::body::to_bytes(resp.into_body(), usize::MAX)).expect("body reads");
        println!("session_handler ({when}): 200, body {} B", body.len());
    };
    check("before timing");

    // Requests are built outside the timed section, as hyper would have parsed them.
    let mut g = c.benchmark_group("session_handler");
    g.bench_function("get_session", |b| {
        b.iter_batched(
            request,
            |req| rt.block_on(oidc_bff::routes::serve(&state, app.clone(), req)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
    check("after timing");
}

/// The proxy's header rewrite both ways, on what a browser's fetch and an API's answer carry:
/// the request with the session cookie, another cookie, `Sec-Fetch-*`, `X-CSRF`; the response
/// with `Connection`, a CORS header and a cookie to drop.
fn bench_proxy_headers(c: &mut Criterion) {
    use oidc_bff::proxy::headers::{Forwarding, downstream_response, upstream_request};
    let (names, keys) = names_and_keys();
    let (session_headers, _) = cookie_headers(&names, &keys, &session(ID_TOKEN_BYTES, now()));
    let session_cookie = session_headers.get(COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut request = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com".to_owned()),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36"
                .to_owned(),
        ),
        ("accept", "application/json".to_owned()),
        ("accept-language", "en-GB,en;q=0.9".to_owned()),
        ("accept-encoding", "gzip, deflate, br, zstd".to_owned()),
        ("referer", "https://app.example.com/orders".to_owned()),
        ("sec-fetch-site", "same-origin".to_owned()),
        ("sec-fetch-mode", "cors".to_owned()),
        ("sec-fetch-dest", "empty".to_owned()),
        ("x-csrf", "1".to_owned()),
        ("connection", "keep-alive".to_owned()),
        ("cookie", format!("theme=dark; {session_cookie}")),
    ] {
        request.insert(http::HeaderName::from_static(k), HeaderValue::from_str(&v).expect("valid header value"));
    }
    let mut response = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("content-length", "117"),
        ("date", "Thu, 26 Nov 2026 10:00:00 GMT"),
        ("server", "nginx"),
        ("connection", "keep-alive"),
        ("cache-control", "private, max-age=0"),
        ("access-control-allow-origin", "*"),
        ("set-cookie", "__Host-bff=evil; Path=/"),
    ] {
        response.insert(http::HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    let (proto, host) = (HeaderValue::from_static("https"), HeaderValue::from_static("app.example.com"));
    let bearer = session(ID_TOKEN_BYTES, now()).access_token.bearer();
    let forwarding = || Forwarding {
        names: &names,
        peer: std::net::IpAddr::from([10, 0, 0, 7]),
        peer_trusted: false,
        client: std::net::IpAddr::from([10, 0, 0, 7]),
        proto: &proto,
        host: &host,
        bearer: bearer.clone(),
        request_id: None,
    };
    let mut check = request.clone();
    upstream_request(&mut check, &forwarding());
    assert!(check.get(COOKIE).is_some_and(|v| v == "theme=dark"), "own cookie not removed");
    assert!(check.get("authorization").is_some() && check.get("connection").is_none());
    let mut g = c.benchmark_group("proxy_headers");
    g.bench_function("upstream_request", |b| {
        b.iter_batched(
            || request.clone(),
            |mut h| {
                upstream_request(&mut h, &forwarding());
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("downstream_response", |b| {
        b.iter_batched(
            || response.clone(),
            |mut h| {
                downstream_response(&mut h, &names, false);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// DPoP (SPEC §3.6): what a proxied request with `dpop = true` adds to one without — the DPoP
/// form of the token and its `ath`, and a signed proof — and the signer built once per session
/// (p256 derives the public key from the stored scalar: ~180 µs, then the per-thread memo).
fn bench_dpop(c: &mut Criterion) {
    use oidc_bff::oidc::dpop::{DpopKey, Nonces};
    use oidc_bff::proxy::dpop::DpopCall;
    let key = DpopKey::generate();
    let signer = key.signer().cloned().expect("a signer");
    let bearer = session(ID_TOKEN_BYTES, now()).access_token.bearer().expect("a bearer value");
    let uri: http::Uri = "http://orders.internal:8080/api/orders/42?expand=lines".parse().expect("a URI");
    let nonces = Nonces::default();
    let mut g = c.benchmark_group("dpop");
    g.bench_function("proof", |b| {
        b.iter(|| signer.proof("GET", black_box("http://orders.internal:8080/api/orders/42"), Some("x"), None, 1))
    });
    g.bench_function("per_proxied_request", |b| {
        b.iter(|| {
            let call = DpopCall::new(black_box(&bearer), signer.clone()).expect("a DPoP call");
            (call.authorization(), call.proof(&http::Method::GET, &uri, &nonces))
        })
    });
    g.bench_function("signer_of_a_decoded_session", |b| {
        b.iter(|| DpopKey::from_scalar(*black_box(key.scalar())).and_then(|k| k.signer().cloned()))
    });
    g.finish();
}

criterion_group!(benches, bench_seal, bench_open, bench_session_handler, bench_proxy_headers, bench_dpop);
criterion_main!(benches);
