//! Cross-cutting request handling: request ids, the access log, CORS for allowed origins, and
//! the CSRF guard of SPEC §5.

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::future::Future;
use std::time::Instant;

/// The request id of this request (validated incoming `X-Request-Id`, or generated).
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=64).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// A request id: a random per-process prefix and a counter. Unique, cheap (no syscall per
/// request), and not a secret.
fn next_request_id() -> HeaderValue {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| crate::secret::random_urlsafe(6));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{prefix}-{n:x}` formatted on the stack (8 + 1 + at most 16 bytes): this runs for every
    // request, and a `String` would be one more allocation each time.
    let mut buf = [0u8; 32];
    let mut out = &mut buf[..];
    let _ = std::io::Write::write_fmt(&mut out, format_args!("{prefix}-{n:x}"));
    let len = 32 - out.len();
    HeaderValue::from_bytes(&buf[..len]).unwrap_or(HeaderValue::from_static("none"))
}

/// `bff_http_requests_in_flight`, up while a request is handled (down when dropped, also when
/// the request is abandoned).
struct InFlight;

impl InFlight {
    fn begin() -> Self {
        metrics::gauge!("bff_http_requests_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("bff_http_requests_in_flight").decrement(1.0);
    }
}

/// Coarse route class for logs and metrics; never the raw path.
fn route_class(state: &AppState, path: &str) -> &'static str {
    if path == "/healthz" || path == "/readyz" {
        return "health";
    }
    let base = state.settings.server.base_path.as_str();
    match path.strip_prefix(base) {
        Some("/login") | Some("/login/start") => "login",
        Some("/callback") | Some("/login/end") => "callback",
        Some("/session") => "session",
        Some("/session/events") => "events",
        Some("/logout") => "logout",
        _ => "proxy_or_static",
    }
}

/// Around every request (`routes::serve`): request id (on every log line of the request:
/// `telemetry::context`), one access-log line (method, route class, path without query,
/// status, latency, error code, session yes/no — never the cookie), and
/// `Cache-Control: no-store` on JSON answers. A plain wrapper rather than an axum layer: a layer costs every request a boxed
/// future and a clone of the boxed inner service.
pub async fn observe<F: Future<Output = Response>>(
    state: &AppState,
    mut req: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let access = crate::telemetry::access_log().filter(|_| state.settings.logging.access_log);
    let start = (crate::metrics::enabled() || access.is_some()).then(Instant::now);
    let id = match req.headers().get("x-request-id").filter(|v| valid_request_id(v)) {
        Some(v) => v.clone(),
        None => next_request_id(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let metered = crate::metrics::enabled();
    let class = (metered || access.is_some()).then(|| route_class(state, req.uri().path()));
    // Only what the access log needs, and only when it is on. The URI is a reference-counted
    // view of the request's bytes: keeping it costs no copy of the path.
    let logged = access.map(|log| {
        let has_session = crate::session::cookie::SessionCookie::present_in(state.sessions.cookies(), req.headers());
        (log, req.method().clone(), req.uri().clone(), has_session)
    });
    let span = crate::telemetry::trace::enabled().then(|| request_span(state, &req)).flatten();
    let trace_ids = span.as_ref().and_then(crate::telemetry::trace::RequestSpan::ids);
    let in_flight = metered.then(InFlight::begin);
    let scoped = crate::telemetry::context::scope(id.as_bytes(), next(req));
    let mut resp = match &span {
        Some(span) => span.run(scoped).await,
        None => scoped.await,
    };
    drop(in_flight);
    if let Some(span) = span {
        span.end(resp.status().as_u16(), resp.extensions().get::<AppError>().map(|e| e.code.as_str()));
    }
    if let Some((log, method, uri, has_session)) = logged {
        log.write(&crate::telemetry::access::Line {
            request_id: id.to_str().unwrap_or("-"),
            method: &method,
            route: class.unwrap_or("proxy_or_static"),
            path: uri.path(),
            status: resp.status().as_u16(),
            latency_us: start.map_or(0, |t| t.elapsed().as_micros() as u64),
            error: resp.extensions().get::<AppError>().map(|e| e.code.as_str()).unwrap_or(""),
            session: has_session,
            trace: trace_ids,
        });
    }
    let headers = resp.headers_mut();
    headers.insert("x-request-id", id);
    let is_json = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Some(class) = class.filter(|_| metered) {
        let status = crate::metrics::status_label(resp.status());
        metrics::counter!("bff_http_requests_total", "route" => class, "code" => status).increment(1);
        let seconds = start.map_or(0.0, |t| t.elapsed().as_secs_f64());
        metrics::histogram!("bff_http_request_duration_seconds", "route" => class).record(seconds);
    }
    resp
}

/// The request's server span (traces on): named by the route template — the endpoint, the
/// proxy route's prefix, or `static` — never by the request's own path.
fn request_span(state: &AppState, req: &Request) -> Option<crate::telemetry::trace::RequestSpan> {
    use std::borrow::Cow;
    let path = req.uri().path();
    let base = state.settings.server.base_path.as_str();
    let route: Cow<'_, str> = match route_class(state, path) {
        // `{base}/callback/<provider>`: the provider's name is the browser's to write.
        _ if path.strip_prefix(base).is_some_and(|p| p.starts_with("/callback/")) => {
            Cow::Owned(format!("{base}/callback/{{provider}}"))
        }
        "proxy_or_static" if state.proxy.is_endpoint(path) => Cow::Borrowed(path),
        // The route the path names literally (the proxy's own selection, with its lenient
        // reading and refusals, comes later): only its configured prefix is used.
        "proxy_or_static" => match state.settings.routes.iter().find(|r| r.matches(path)) {
            Some(route) => Cow::Borrowed(route.prefix.as_str()),
            None => Cow::Borrowed("static"),
        },
        // Every other class matched one of the BFF's own paths exactly: the path is the template.
        _ => Cow::Borrowed(path),
    };
    let peer =
        req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_canonical());
    let peer_trusted = peer.is_some_and(|ip| state.settings.server.trusted_proxies.iter().any(|n| in_net(ip, *n)));
    crate::telemetry::trace::begin_request(req.method(), &route, req.headers(), peer_trusted)
}

/// Is `origin` the public origin or an allowed one?
fn origin_allowed(state: &AppState, origin: &[u8]) -> bool {
    origin == state.settings.server.public_origin.as_bytes()
        || state.settings.server.allowed_origins.iter().any(|o| o.as_bytes() == origin)
}

/// CORS for `allowed_origins` (SPEC §5): preflights answered 204 here, nothing forwarded;
/// responses echo the exact origin with credentials and `Vary: Origin`.
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| state.settings.server.allowed_origins.iter().any(|a| a.as_bytes() == o.as_bytes()))
        .cloned();
    let Some(origin) = origin else {
        let mut resp = next.run(req).await;
        // The answer depends on Origin whenever CORS is configured: keep shared caches honest.
        if !state.settings.server.allowed_origins.is_empty() {
            resp.headers_mut().append(header::VARY, HeaderValue::from_static("Origin"));
        }
        return resp;
    };
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("x-csrf, content-type, x-request-id"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// The CSRF rule of SPEC §5 for endpoints the SPA calls with fetch.
pub fn csrf_check(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<(), AppError> {
    if headers.get("x-csrf").map(HeaderValue::as_bytes) != Some(b"1") {
        tracing::warn!("request without X-CSRF: 1 refused");
        return Err(ErrorCode::Csrf.into());
    }
    let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if unsafe_method {
        match headers.get(header::ORIGIN) {
            Some(o) if origin_allowed(state, o.as_bytes()) => {}
            Some(_) => {
                tracing::warn!("unsafe request from a foreign Origin refused");
                return Err(ErrorCode::Csrf.into());
            }
            None if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") => {
                tracing::warn!("cross-site unsafe request without Origin refused");
                return Err(ErrorCode::Csrf.into());
            }
            None => {}
        }
    }
    Ok(())
}

/// SPEC §6.3: a WebSocket upgrade cannot carry `X-CSRF`, so it needs one `Origin`, exactly
/// `public_url`'s origin or one of `allowed_origins` (a missing one is refused too: a browser
/// always sends it on a WebSocket handshake).
pub fn websocket_origin_check(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let mut origins = headers.get_all(header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (Some(o), None) if origin_allowed(state, o.as_bytes()) => Ok(()),
        _ => {
            tracing::warn!("WebSocket upgrade from a foreign or missing Origin refused");
            Err(ErrorCode::Csrf.into())
        }
    }
}

pub async fn csrf(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match csrf_check(&state, req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// The client's address: the TCP peer, or — when the peer is a trusted proxy — the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries are read from the right
/// (what our proxies appended) and the walk stops at the first that is not an address
/// (`ip`, `ip:port` or `[ipv6]:port`, as balancers write them): what lies left of it was not
/// written by a proxy we trust, so the peer stands in for the client.
pub fn client_ip(state: &AppState, req: &Request) -> std::net::IpAddr {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let trusted = &state.settings.server.trusted_proxies;
    if !trusted.iter().any(|net| in_net(peer, *net)) {
        return peer;
    }
    let forwarded =
        req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    for entry in forwarded.rsplit(',') {
        let Some(ip) = forwarded_address(entry.trim()) else { return peer };
        if !trusted.iter().any(|net| in_net(ip, *net)) {
            return ip;
        }
    }
    peer
}

/// An `X-Forwarded-For` entry as an address: `ip`, `ip:port` or `[ipv6]:port`.
fn forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    entry
        .parse::<std::net::IpAddr>()
        .or_else(|_| entry.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

pub fn in_net(ip: std::net::IpAddr, (net, bits): (std::net::IpAddr, u8)) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (ip, net) {
        (V4(a), V4(b)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (V6(a), V6(b)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_prefix_dash_hex_counter_and_valid() {
        let (a, b) = (next_request_id(), next_request_id());
        let parse = |v: &HeaderValue| {
            let s = v.to_str().unwrap_or_default().to_owned();
            let (p, n) = s.rsplit_once('-').map(|(p, n)| (p.to_owned(), n.to_owned())).unwrap_or_default();
            (p, u64::from_str_radix(&n, 16).ok())
        };
        let ((pa, na), (pb, nb)) = (parse(&a), parse(&b));
        assert_eq!(pa.len(), 8);
        assert_eq!(pa, pb);
        assert!(na.is_some() && nb > na, "{a:?} then {b:?}");
        assert!(valid_request_id(&a) && valid_request_id(&b));
    }
}
