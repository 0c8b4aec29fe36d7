//! WebSocket routes (SPEC §6.3): the upgrade checked (`Origin`, the session, refreshed first as
//! any proxied request), the upstream's handshake made with the route's token, then the `101`
//! and a relay task (`proxy::websocket`) that closes the socket with 4401 when the session ends.

use super::upstream_call::{Credentials, credentials, fail, for_upstream};
use crate::clock::now;
use crate::error::{AppError, ErrorCode};
use crate::events::Kind;
use crate::listener::ConnectionSlot;
use crate::middleware::websocket_origin_check;
use crate::proxy::dpop::{self, DPOP};
use crate::proxy::websocket::{self, ConnectError};
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
    let (_, _, mut upstream_headers) = for_upstream(state, req, bearer, dpop.as_ref());
    // Traces on: the handshake is a client span, its context sent as `traceparent`.
    let span = {
        use crate::telemetry::trace::{Peer, Target, begin_call};
        begin_call("upstream websocket", Peer::Upstream, &Method::GET, &Target::of_uri(&uri))
    };
    if let Some(span) = &span {
        span.inject(&mut upstream_headers);
    }
    // One deadline for the handshake, a DPoP nonce retry included (RFC 9449 §9: an upstream
    // may answer 401 with a nonce to use; the upgrade has no body, so it can be sent again).
    let connecting = async {
        for attempt in 0..2 {
            let mut headers = upstream_headers.clone();
            if let Some(call) = &dpop {
                let Some(proof) = call.proof(&Method::GET, &uri, &state.proxy.nonces) else {
                    return Err(None);
                };
                headers.insert(&DPOP, proof);
            }
            match websocket::connect(&state.proxy.websockets, uri.clone(), headers, &handshake).await {
                Err(ConnectError::Status(status, h))
                    if dpop.is_some() && dpop::take_nonce(status, &h, &uri, &state.proxy.nonces) && attempt == 0 =>
                {
                    tracing::info!(route = %route.prefix, "the upstream asked for a DPoP nonce; upgrading again with it");
                }
                other => return other.map_err(Some),
            }
        }
        Err(None)
    };
    let connected = tokio::time::timeout(route.timeout, connecting).await;
    if let Some(span) = span {
        match &connected {
            Ok(Ok(_)) => span.end(Some(101), None),
            Ok(Err(Some(ConnectError::Status(status, _)))) => {
                span.end(Some(status.as_u16()), Some("upstream_unavailable"));
            }
            Ok(Err(Some(_))) => span.end(None, Some("upstream_unavailable")),
            // No DPoP proof could be signed: the answer is idp_unavailable.
            Ok(Err(None)) => span.end(None, Some("idp_unavailable")),
            Err(_) => span.end(None, Some("upstream_timeout")),
        }
    }
    let (upstream, protocol) = match connected {
        Ok(Ok(up)) => up,
        Ok(Err(None)) => return fail(ErrorCode::IdpUnavailable, set_cookies),
        Ok(Err(Some(e))) => {
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
