//! WebSocket routes (SPEC §6.3): the upgrade checked (`Origin`, the session, refreshed first as
//! any proxied request), the upstream's handshake made with the route's token, then the `101`
//! and a relay task (`proxy::websocket`) that closes the socket with 4401 when the session ends.

use super::upstream_call::{Credentials, client_ip_and_trust, credentials, fail};
use crate::clock::now;
use crate::error::{AppError, ErrorCode};
use crate::events::Kind;
use crate::listener::ConnectionSlot;
use crate::middleware::{RequestId, client_ip, websocket_origin_check};
use crate::proxy::dpop::DPOP;
use crate::proxy::headers;
use crate::proxy::websocket;
use crate::session::cookie::append_set_cookies;
use crate::settings::routes::Route;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{Method, Uri};
use hyper::upgrade::OnUpgrade;

pub(super) async fn open(state: &AppState, route: &Route, uri: Uri, mut req: Request) -> Response {
    let Some(handshake) = websocket::handshake(req.method(), req.version(), req.headers()) else {
        tracing::warn!("malformed WebSocket handshake refused");
        return AppError::from(ErrorCode::InvalidRequest).into_response();
    };
    if let Err(e) = websocket_origin_check(state, req.headers()) {
        return e.into_response();
    }
    let (Some(on_upgrade), slot) =
        (req.extensions_mut().remove::<OnUpgrade>(), req.extensions_mut().remove::<ConnectionSlot>())
    else {
        return AppError::from(ErrorCode::InvalidRequest).into_response();
    };
    let Credentials { bearer, dpop, set_cookies, session } = match credentials(state, route, req.headers()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // Within max_event_streams, before anything is asked of the upstream.
    let live = match &session {
        Some(s) => state.sessions.live(s, Kind::WebSocket, now()),
        None => state.sessions.live_without_session(Kind::WebSocket),
    };
    let live = match live {
        Ok(l) => l,
        Err(e) => return fail(e, set_cookies),
    };
    drop(session);
    let peer = client_ip_and_trust(state, &req);
    let client = if peer.1 { client_ip(state, &req) } else { peer.0 };
    let (mut parts, _) = req.into_parts();
    let request_id = parts.extensions.remove::<RequestId>().map(|r| r.0);
    let fwd = headers::Forwarding {
        names: state.sessions.cookies(),
        peer: peer.0,
        peer_trusted: peer.1,
        client,
        proto: &state.proxy.proto,
        host: &state.proxy.host,
        bearer: match &dpop {
            Some(call) => Some(call.authorization()),
            None => bearer,
        },
        request_id: request_id.as_ref(),
    };
    let mut upstream_headers = parts.headers;
    headers::upstream_request(&mut upstream_headers, &fwd);
    if let Some(call) = &dpop {
        match call.proof(&Method::GET, &uri, &state.proxy.nonces) {
            Some(proof) => upstream_headers.insert(&DPOP, proof),
            None => return fail(ErrorCode::IdpUnavailable, set_cookies),
        };
    }
    let connecting = websocket::connect(&state.proxy.websockets, uri, upstream_headers, &handshake);
    let (upstream, protocol) = match tokio::time::timeout(route.timeout, connecting).await {
        Ok(Ok(up)) => up,
        Ok(Err(e)) => {
            tracing::warn!(route = %route.prefix, error = %e, "upstream WebSocket handshake failed");
            metrics::counter!("bff_upstream_errors_total", "kind" => "unavailable").increment(1);
            return fail(ErrorCode::UpstreamUnavailable, set_cookies);
        }
        Err(_) => {
            tracing::warn!(route = %route.prefix, "upstream WebSocket handshake not answered within the route timeout");
            metrics::counter!("bff_upstream_errors_total", "kind" => "timeout").increment(1);
            return fail(ErrorCode::UpstreamTimeout, set_cookies);
        }
    };
    tokio::spawn(websocket::relay(on_upgrade, upstream, live, state.sessions.clone(), slot));
    let mut r = handshake.accept(protocol).map(|()| Body::empty());
    append_set_cookies(r.headers_mut(), set_cookies);
    r
}
