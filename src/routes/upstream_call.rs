//! What a proxied request or WebSocket upgrade carries upstream (SPEC §6, §6.3): the session the
//! route needs, refreshed when due, and its token; the client's address; and the answer to send
//! when the request cannot go on.

use crate::clock::now;
use crate::error::{AppError, ErrorCode};
use crate::middleware::{RequestId, client_ip, in_net};
use crate::proxy::dpop::DpopCall;
use crate::proxy::headers;
use crate::session::Current;
use crate::session::cookie::append_set_cookies;
use crate::session::model::Session;
use crate::session::refresh::When;
use crate::settings::routes::{Route, RouteAuth, RouteToken};
use crate::state::AppState;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;

/// The response a proxied request ends with when it does not reach the upstream: the error,
/// plus the session cookie if it was re-sealed (a refresh that rotated the refresh token must
/// reach the browser whatever happens next).
pub(super) fn fail(e: impl Into<AppError>, set_cookies: Vec<String>) -> Response {
    let mut r = e.into().into_response();
    append_set_cookies(r.headers_mut(), set_cookies);
    r
}

/// What a proxied request (or WebSocket upgrade) carries upstream for its session.
pub(super) struct Credentials {
    pub bearer: Option<HeaderValue>,
    /// With a DPoP-bound session (SPEC §3.6): the `Authorization: DPoP` and proofs to send.
    pub dpop: Option<DpopCall>,
    /// Lines that carry the session's changes (a refresh), or expire a stale cookie.
    pub set_cookies: Vec<String>,
    pub session: Option<Arc<Session>>,
}

/// The session a route needs, refreshed when due, and the token it sends: the answer to send
/// instead when there is none to be had (401, 403 `provider_not_allowed`, an IdP failure).
pub(super) async fn credentials(state: &AppState, route: &Route, headers: &HeaderMap) -> Result<Credentials, Response> {
    let none = |set_cookies| Credentials { bearer: None, dpop: None, set_cookies, session: None };
    if route.auth == RouteAuth::None {
        return Ok(none(Vec::new()));
    }
    let (session, set_cookies) = match state.sessions.current(headers, When::Due, now()).await {
        Current::Failed(e) => return Err(e.into_response()),
        Current::Ended { error, expire } => return Err(fail(error, expire)),
        Current::Anonymous { expire } if route.auth == RouteAuth::Required => {
            return Err(fail(ErrorCode::Unauthenticated, expire));
        }
        Current::Anonymous { expire } => return Ok(none(expire)),
        Current::Live { session, set_cookies } => (session, set_cookies),
    };
    if !route.providers.is_empty() && !route.providers.iter().any(|p| p == session.provider_name()) {
        tracing::warn!(provider = session.provider_name(), "route refused a session of another provider");
        return Err(fail(ErrorCode::ProviderNotAllowed, set_cookies));
    }
    let bearer = match &route.token {
        RouteToken::Session => session.access_token.bearer(),
        RouteToken::None => None,
        RouteToken::Exchange(spec) => {
            let Some(subject) = session.access_token.bearer() else {
                tracing::warn!("the session's access token is not a valid header value");
                return Err(fail(ErrorCode::IdpUnavailable, set_cookies));
            };
            match state.sessions.exchanger().bearer(&session, &subject, &route.prefix, spec).await {
                Ok(bearer) => Some(bearer),
                Err(e) => return Err(fail(e, set_cookies)),
            }
        }
    };
    // A session with a DPoP key sends its (sender-constrained) tokens as DPoP (SPEC §3.6).
    let signer = session.dpop.as_ref().and_then(|k| k.signer().cloned());
    let dpop = match (&bearer, signer) {
        (Some(b), Some(s)) => match DpopCall::new(b, s) {
            Some(call) => Some(call),
            None => {
                tracing::warn!("the access token is not a valid header value");
                return Err(fail(ErrorCode::IdpUnavailable, set_cookies));
            }
        },
        _ => None,
    };
    Ok(Credentials { bearer, dpop, set_cookies, session: Some(session) })
}

/// Split a proxied request, its headers rewritten for the upstream (SPEC §6): the BFF's
/// cookies and the browser's credentials and forwarding headers out; `X-Forwarded-*` from the
/// peer (and, behind a trusted proxy, the client it names); the route's token in — as DPoP when
/// the session holds a key. The returned parts have no headers left.
pub(super) fn for_upstream(
    state: &AppState,
    req: Request,
    bearer: Option<HeaderValue>,
    dpop: Option<&DpopCall>,
) -> (http::request::Parts, axum::body::Body, HeaderMap) {
    let peer = client_ip_and_trust(state, &req);
    // Behind a trusted proxy, the client is the first untrusted address of its chain.
    let client = if peer.1 { client_ip(state, &req) } else { peer.0 };
    let (mut parts, body) = req.into_parts();
    let request_id = parts.extensions.remove::<RequestId>().map(|r| r.0);
    let fwd = headers::Forwarding {
        names: state.sessions.cookies(),
        peer: peer.0,
        peer_trusted: peer.1,
        client,
        proto: &state.proxy.proto,
        host: &state.proxy.host,
        bearer: match dpop {
            Some(call) => Some(call.authorization()),
            None => bearer,
        },
        request_id: request_id.as_ref(),
    };
    let mut upstream_headers = std::mem::take(&mut parts.headers);
    headers::upstream_request(&mut upstream_headers, &fwd);
    // Traces on: the browser's trace context is continued by our span, which sets its own
    // `traceparent`; the browser's is never passed on as it came.
    if crate::telemetry::trace::enabled() {
        upstream_headers.remove("traceparent");
    }
    (parts, body, upstream_headers)
}

pub(super) fn client_ip_and_trust(state: &AppState, req: &Request) -> (std::net::IpAddr, bool) {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
        .unwrap_or_else(|| client_ip(state, req));
    let trusted = state.settings.server.trusted_proxies.iter().any(|n| in_net(peer, *n));
    (peer, trusted)
}
