//! The proxy's HTTP handler (SPEC §6): every path the BFF's own endpoints do not claim. The
//! route match, method and CSRF rules, the session and its refresh, then the upstream call
//! through `proxy`; or the SPA's static files; or 404.

use super::upstream_call::{Credentials, credentials, fail, for_upstream};
use crate::error::{AppError, ErrorCode};
use crate::middleware::csrf_check;
use crate::proxy::dpop::{self, DPOP};
use crate::proxy::idle::IdleTimeout;
use crate::proxy::websocket::{Upgrade, upgrade_of};
use crate::proxy::{UpstreamBody, headers, upstream_uri};
use crate::session::cookie::append_set_cookies;
use crate::settings::routes::Route;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use std::time::Instant;

/// Everything not served by the BFF's own endpoints: a proxied route, else the static SPA,
/// else 404. The router's fallback.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    not_an_endpoint(&state, req).await
}

/// The way past the router (`routes::serve`): every path that is not literally one of the BFF's
/// own endpoints would only reach `handle` through the router's fallback, so it is decided here
/// at once; `Err(req)` hands an endpoint's request back to the router.
pub async fn direct(state: &AppState, req: Request) -> Result<Response, Request> {
    if state.proxy.is_endpoint(req.uri().path()) {
        return Err(req);
    }
    Ok(not_an_endpoint(state, req).await)
}

async fn not_an_endpoint(state: &AppState, req: Request) -> Response {
    let route = match state.proxy.select(&state.settings.routes, req.uri().path()) {
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
    // Boxed: the proxied exchange (session, upstream send, timeout) is the largest future of
    // all, and inline it would be moved, whole, with every request's future.
    Box::pin(forward(state, route, req)).await
}

/// Methods never forwarded: TRACE/TRACK would echo the added `Authorization` back to the
/// browser; CONNECT is not a request for the upstream's resources.
fn never_forwarded(m: &http::Method) -> bool {
    *m == http::Method::TRACE || *m == http::Method::CONNECT || m.as_str() == "TRACK"
}

async fn forward(state: &AppState, route: &Route, req: Request) -> Response {
    if never_forwarded(req.method()) || (!route.methods.is_empty() && !route.methods.contains(req.method())) {
        return AppError::from(ErrorCode::MethodNotAllowed).into_response();
    }
    let Some(uri) = upstream_uri(route, req.uri().path(), req.uri().query()) else {
        return AppError::from(ErrorCode::InvalidPath).into_response();
    };
    match upgrade_of(req.headers()) {
        Upgrade::None => {}
        Upgrade::Other => {
            tracing::warn!("Upgrade to something other than websocket refused");
            return AppError::from(ErrorCode::InvalidRequest).into_response();
        }
        Upgrade::WebSocket if !route.websocket => {
            tracing::warn!("Upgrade request on a route without websocket support");
            return AppError::from(ErrorCode::WebsocketUnsupported).into_response();
        }
        Upgrade::WebSocket => return Box::pin(super::websocket::open(state, route, uri, req)).await,
    }
    if route.csrf
        && let Err(e) = csrf_check(state, req.method(), req.headers())
    {
        return e.into_response();
    }
    let Credentials { bearer, dpop, set_cookies, session } = match credentials(state, route, req.headers()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let had_session = session.is_some();
    let (parts, body, mut upstream_headers) = for_upstream(state, req, bearer, dpop.as_ref());
    // RFC 9449 §9: a request without a body can be sent again when the upstream asks for a
    // nonce; one with a body cannot (it is streamed), so its 401 goes back to the SPA.
    let mut again = None;
    let target = dpop.as_ref().map(|_| uri.clone());
    if let Some(call) = &dpop {
        if http_body::Body::is_end_stream(&body) {
            again = Some((parts.method.clone(), uri.clone(), upstream_headers.clone()));
        }
        match call.proof(&parts.method, &uri, &state.proxy.nonces) {
            Some(proof) => upstream_headers.insert(&DPOP, proof),
            None => return fail(ErrorCode::IdpUnavailable, set_cookies),
        };
    }
    let mut upstream_req = http::Request::new(UpstreamBody::new(IdleTimeout::new(body, route.timeout)));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = upstream_headers;
    // One deadline for the request, a nonce retry included.
    let deadline = tokio::time::Instant::now() + route.timeout;
    let mut upstream = match send(state, route, upstream_req, deadline).await {
        Ok(r) => r,
        Err(code) => return fail(code, set_cookies),
    };
    if let (Some(call), Some(target)) = (&dpop, &target)
        && dpop::take_nonce(upstream.status(), upstream.headers(), target, &state.proxy.nonces)
        && let Some((method, uri, mut headers)) = again
    {
        tracing::info!(route = %route.prefix, "the upstream asked for a DPoP nonce; sending the request again with it");
        match call.proof(&method, &uri, &state.proxy.nonces) {
            Some(proof) => headers.insert(&DPOP, proof),
            None => return fail(ErrorCode::IdpUnavailable, set_cookies),
        };
        let mut retry = http::Request::new(UpstreamBody::new(IdleTimeout::new(Body::empty(), route.timeout)));
        *retry.method_mut() = method;
        *retry.uri_mut() = uri;
        *retry.headers_mut() = headers;
        upstream = match send(state, route, retry, deadline).await {
            Ok(r) => r,
            Err(code) => return fail(code, set_cookies),
        };
        // A second request for a nonce is passed back to the SPA; the nonce is kept.
        dpop::take_nonce(upstream.status(), upstream.headers(), target, &state.proxy.nonces);
    }
    let (mut parts, body) = upstream.into_parts();
    headers::downstream_response(&mut parts.headers, state.sessions.cookies(), route.forward_set_cookie);
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
    let mut response = Response::new(Body::new(IdleTimeout::new(body, route.timeout)));
    *response.status_mut() = parts.status;
    *response.headers_mut() = parts.headers;
    response
}

/// The upstream call's span (recording the upstream's scheme, host
/// and port: never the request's path), its `traceparent` set on `req`.
fn upstream_span(req: &mut http::Request<UpstreamBody>) -> Option<crate::telemetry::trace::CallSpan> {
    use crate::telemetry::trace::{Peer, Target, begin_call};
    let span = begin_call("upstream", Peer::Upstream, req.method(), &Target::of_uri(req.uri()))?;
    span.inject(req.headers_mut());
    Some(span)
}

/// One upstream call, answered by `deadline`; its failure as the SPEC's code.
async fn send(
    state: &AppState,
    route: &Route,
    mut req: http::Request<UpstreamBody>,
    deadline: tokio::time::Instant,
) -> Result<http::Response<crate::proxy::PooledBody>, ErrorCode> {
    let started = crate::metrics::enabled().then(Instant::now);
    // Traces on: a client span to the response's head, its context sent as `traceparent`.
    let span = crate::telemetry::trace::enabled().then(|| upstream_span(&mut req)).flatten();
    let result = tokio::time::timeout_at(deadline, state.proxy.send(req)).await;
    if let Some(span) = span {
        match &result {
            Ok(Ok(r)) => span.end(Some(r.status().as_u16()), None),
            Ok(Err(_)) => span.end(None, Some("upstream_unavailable")),
            Err(_) => span.end(None, Some("upstream_timeout")),
        }
    }
    if let Some(t) = started {
        metrics::histogram!("bff_upstream_duration_seconds").record(t.elapsed().as_secs_f64());
    }
    match result {
        Err(_) => {
            tracing::warn!(route = %route.prefix, "upstream did not answer within the route timeout");
            metrics::counter!("bff_upstream_errors_total", "kind" => "timeout").increment(1);
            Err(ErrorCode::UpstreamTimeout)
        }
        Ok(Err(e)) => {
            tracing::warn!(route = %route.prefix, error = %e, connect = e.is_connect(), "upstream unreachable");
            metrics::counter!("bff_upstream_errors_total", "kind" => "unavailable").increment(1);
            Err(ErrorCode::UpstreamUnavailable)
        }
        Ok(Ok(r)) => Ok(r),
    }
}
