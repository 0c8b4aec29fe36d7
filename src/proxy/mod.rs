//! The API proxy (SPEC §6): `[[routes]]` map a path prefix to an upstream; requests are
//! forwarded with the session's access token, bodies streamed both ways.

pub mod headers;
mod idle;
pub mod path;

use crate::error::{AppError, ErrorCode};
use crate::middleware::{RequestId, client_ip, csrf_check, in_net};
use crate::session::refresh::{self, RefreshFailure, When};
use crate::session::{self, Loaded, cookie::append_set_cookies};
use crate::settings::Settings;
use crate::settings::routes::{Route, RouteAuth};
use crate::state::{AppState, now};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::{Duration, Instant};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The shared upstream client and the values every forwarded request carries.
///
/// hyper-util's pooled client (the one reqwest wraps), used directly: requests keep the
/// browser's body stream and an `http::Uri` built from the raw path, with no URL re-parsing
/// (which could re-normalise the path) and no per-request conversions. Measured in
/// docs/benchmarks.md.
pub struct Proxy {
    client: Client<Connector, Body>,
    proto: HeaderValue,
    host: HeaderValue,
    paths: path::PathRules,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proxy")
    }
}

impl Proxy {
    pub fn new(settings: &Settings) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = crate::tls::client_config()?;
        // HTTP/2 when an https upstream offers it (ALPN), else HTTP/1.1.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let url = &settings.server.public_url;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let endpoints = crate::settings::reserved_paths(&settings.server.base_path);
        Ok(Self {
            paths: path::PathRules::new(&settings.routes, &endpoints),
            client,
            proto: HeaderValue::from_str(url.scheme()).unwrap_or(HeaderValue::from_static("https")),
            host: HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("")),
        })
    }
}

/// The upstream URI: the upstream base plus the raw path (minus the prefix when
/// `strip_prefix`) and query, byte for byte — `http::Uri` does not normalise paths.
fn upstream_uri(route: &Route, path: &str, query: Option<&str>) -> Option<Uri> {
    let forwarded = if route.strip_prefix {
        match &path[route.prefix.len()..] {
            "" => "/",
            rest => rest,
        }
    } else {
        path
    };
    let mut s = String::with_capacity(route.upstream.len() + forwarded.len() + query.map_or(0, |q| q.len() + 1));
    s.push_str(&route.upstream);
    s.push_str(forwarded);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    let uri = Uri::try_from(s).ok()?;
    // `http::Uri` keeps the path as given; should it ever differ, refuse rather than forward
    // something other than what was matched.
    uri.path().ends_with(forwarded).then_some(uri)
}

/// Everything not served by the BFF's own endpoints: a proxied route, else the static SPA,
/// else 404.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let route = match state.proxy.paths.select(&state.settings.routes, req.uri().path()) {
        Ok(route) => route,
        Err(_) => {
            tracing::warn!("path refused before routing");
            return AppError::from(ErrorCode::InvalidPath).into_response();
        }
    };
    let Some(route) = route else {
        return match &state.static_files {
            // Boxed: ServeDir's future is large, and inline it would size every proxied
            // request's future too.
            Some(files) => match Box::pin(tower::ServiceExt::oneshot(files.clone(), req)).await {
                Ok(r) => r.into_response(),
                Err(never) => match never {},
            },
            None => AppError::from(ErrorCode::NotFound).into_response(),
        };
    };
    forward(&state, route, req).await
}

/// Methods never forwarded: TRACE/TRACK would echo the added `Authorization` back to the
/// browser; CONNECT is not a request for the upstream's resources.
fn never_forwarded(m: &http::Method) -> bool {
    *m == http::Method::TRACE || *m == http::Method::CONNECT || m.as_str() == "TRACK"
}

/// The response a proxied request ends with when it does not reach the upstream: the error,
/// plus the session cookie if it was re-sealed (a refresh that rotated the refresh token must
/// reach the browser whatever happens next).
fn fail(e: impl Into<AppError>, set_cookies: Vec<String>) -> Response {
    let mut r = e.into().into_response();
    append_set_cookies(r.headers_mut(), set_cookies);
    r
}

async fn forward(state: &AppState, route: &Route, req: Request) -> Response {
    if never_forwarded(req.method()) || (!route.methods.is_empty() && !route.methods.contains(req.method())) {
        return AppError::from(ErrorCode::MethodNotAllowed).into_response();
    }
    let Some(uri) = upstream_uri(route, req.uri().path(), req.uri().query()) else {
        return AppError::from(ErrorCode::InvalidPath).into_response();
    };
    if req.headers().contains_key(header::UPGRADE) {
        tracing::warn!("Upgrade request on a route without websocket support");
        return AppError::from(ErrorCode::WebsocketUnsupported).into_response();
    }
    if route.csrf
        && let Err(e) = csrf_check(state, req.method(), req.headers())
    {
        return e.into_response();
    }
    let t = now();
    let mut set_cookies = Vec::new();
    let mut had_session = false;
    let bearer = match route.auth {
        RouteAuth::None => None,
        auth => match session::load(state, req.headers(), t).await {
            Err(e) => return e.into_response(),
            Ok(Loaded::Anonymous { stale_cookie }) => {
                if auth == RouteAuth::Required {
                    let mut r = AppError::from(ErrorCode::Unauthenticated).into_response();
                    if stale_cookie {
                        append_set_cookies(r.headers_mut(), state.cookies.clear_session());
                    }
                    return r;
                }
                if stale_cookie {
                    set_cookies = state.cookies.clear_session();
                }
                None
            }
            Ok(Loaded::Live(mut s)) => {
                let changed = match refresh::ensure_fresh(state, &mut s, When::Due).await {
                    Ok(changed) => changed,
                    Err(RefreshFailure::Ended(e)) => {
                        let mut r = e.into_response();
                        append_set_cookies(r.headers_mut(), state.cookies.clear_session());
                        return r;
                    }
                    Err(RefreshFailure::Temporary(e)) => return e.into_response(),
                };
                set_cookies = match session::save(state, &mut s, t, changed).await {
                    Ok(c) => c,
                    Err(e) => {
                        let ended = e.code == crate::error::ErrorCode::SessionExpired;
                        let mut r = e.into_response();
                        if ended {
                            append_set_cookies(r.headers_mut(), state.cookies.clear_session());
                        }
                        return r;
                    }
                };
                had_session = true;
                s.access_token.bearer()
            }
        },
    };
    let peer = client_ip_and_trust(state, &req);
    // Behind a trusted proxy, the client is the first untrusted address of its chain.
    let client = if peer.1 { client_ip(state, &req) } else { peer.0 };
    let (mut parts, body) = req.into_parts();
    let request_id = parts.extensions.remove::<RequestId>().map(|r| r.0);
    let fwd = headers::Forwarding {
        names: &state.cookies,
        peer: peer.0,
        peer_trusted: peer.1,
        client,
        proto: &state.proxy.proto,
        host: &state.proxy.host,
        bearer,
        request_id: request_id.as_ref(),
    };
    let mut upstream_headers = parts.headers;
    headers::upstream_request(&mut upstream_headers, &fwd);
    let mut upstream_req = http::Request::new(Body::new(idle::IdleTimeout::new(body, route.timeout)));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = upstream_headers;
    let started = crate::admin::enabled().then(Instant::now);
    let result = tokio::time::timeout(route.timeout, state.proxy.client.request(upstream_req)).await;
    if let Some(t) = started {
        metrics::histogram!("bff_upstream_duration_seconds").record(t.elapsed().as_secs_f64());
    }
    let upstream = match result {
        Err(_) => {
            tracing::warn!(route = %route.prefix, "upstream did not answer within the route timeout");
            metrics::counter!("bff_upstream_errors_total", "kind" => "timeout").increment(1);
            return fail(ErrorCode::UpstreamTimeout, set_cookies);
        }
        Ok(Err(e)) => {
            tracing::warn!(route = %route.prefix, error = %e, connect = e.is_connect(), "upstream unreachable");
            metrics::counter!("bff_upstream_errors_total", "kind" => "unavailable").increment(1);
            return fail(ErrorCode::UpstreamUnavailable, set_cookies);
        }
        Ok(Ok(r)) => r,
    };
    let (mut parts, body) = upstream.into_parts();
    headers::downstream_response(&mut parts.headers, &state.cookies, route.forward_set_cookie);
    if had_session {
        headers::private_to_shared_caches(&mut parts.headers);
    }
    if !set_cookies.is_empty() {
        // A response that carries the session must never be stored by a shared cache.
        parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        parts.headers.remove(header::EXPIRES);
        append_set_cookies(&mut parts.headers, set_cookies);
    }
    // Only status, version-independent headers and the streamed body go back.
    let mut response = Response::new(Body::new(idle::IdleTimeout::new(body, route.timeout)));
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    response
}

fn client_ip_and_trust(state: &AppState, req: &Request) -> (std::net::IpAddr, bool) {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
        .unwrap_or_else(|| client_ip(state, req));
    let trusted = state.settings.server.trusted_proxies.iter().any(|n| in_net(peer, *n));
    (peer, trusted)
}
