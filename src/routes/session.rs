//! `GET /session` (SPEC §5): who is logged in, never a token.

use crate::clock::now;
use crate::session::Current;
use crate::session::cookie::append_set_cookies;
use crate::session::model::Session;
use crate::session::refresh::When;
use crate::state::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use std::io::Write;

pub fn router() -> Router<AppState> {
    Router::new().route("/session", get(session_get))
}

/// The `/session` body, written directly: the claims are the ID token's payload bytes, which
/// were verified at login and sealed since, so they are copied, not re-parsed.
pub fn session_body(state: &AppState, s: &Session, now: i64, return_to: Option<&str>) -> Vec<u8> {
    let claims = match s.id_token.payload() {
        Some(c) if c.first() == Some(&b'{') => c,
        _ => b"{}",
    };
    let mut out = Vec::with_capacity(claims.len() + s.sub.len() + 256);
    let _ = out.write_all(b"{\"authenticated\":true,\"sub\":");
    let _ = serde_json::to_writer(&mut out, &s.sub);
    let _ = out.write_all(b",\"provider\":");
    let _ = serde_json::to_writer(&mut out, s.provider_name());
    let _ = out.write_all(b",\"claims\":");
    let _ = out.write_all(claims);
    let _ = write!(
        out,
        ",\"expires_at\":{},\"session_expires_at\":{},\"bff_logout_url\":",
        s.access_expires_at,
        s.expires_at(state.sessions.idle_timeout_secs()).max(now)
    );
    let mut logout = String::with_capacity(state.logout_path_prefix.len() + 32);
    logout.push_str(&state.logout_path_prefix);
    s.logout_token.write_encoded(&mut logout);
    let _ = serde_json::to_writer(&mut out, &logout);
    if let Some(r) = return_to {
        let _ = out.write_all(b",\"return_to\":");
        let _ = serde_json::to_writer(&mut out, r);
    }
    out.push(b'}');
    out
}

/// `"routes":{"/payments":{"token_expires_at":…}}` for the exchange routes that hold a cached
/// token (SPEC §6.2): when it expires, never the token.
fn add_route_tokens(body: &mut Vec<u8>, expiries: &[(&str, i64)]) {
    if expiries.is_empty() || body.last() != Some(&b'}') {
        return;
    }
    body.pop();
    let _ = body.write_all(b",\"routes\":{");
    for (i, (prefix, expires_at)) in expiries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let _ = serde_json::to_writer(&mut *body, prefix);
        let _ = write!(body, ":{{\"token_expires_at\":{expires_at}}}");
    }
    body.extend_from_slice(b"}}");
}

/// 401 `{"authenticated":false}` (with the code that ended the session, if one did, and, with
/// several IdPs, the names an SPA offers logins at: `"providers":["default","partners"]`), and
/// the lines that expire a stale session cookie.
pub fn anonymous(expire: Vec<String>, error: Option<&str>, providers: Option<&str>) -> Response {
    let mut body = String::with_capacity(64);
    body.push_str("{\"authenticated\":false");
    if let Some(code) = error {
        body.push_str(",\"error\":\"");
        body.push_str(code);
        body.push('"');
    }
    if let Some(list) = providers {
        body.push_str(",\"providers\":");
        body.push_str(list);
    }
    body.push('}');
    let mut r = (StatusCode::UNAUTHORIZED, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    append_set_cookies(h, expire);
    r
}

// Takes the whole request: the `HeaderMap` extractor would clone every header.
async fn session_get(State(state): State<AppState>, req: Request) -> Response {
    let t = now();
    let (s, set_cookies) = match state.sessions.current(req.headers(), When::Expired, t).await {
        Current::Live { session, set_cookies } => (session, set_cookies),
        Current::Anonymous { expire } => return anonymous(expire, None, state.provider_names.as_deref()),
        Current::Ended { error, expire } => {
            return anonymous(expire, Some(error.code.as_str()), state.provider_names.as_deref());
        }
        Current::Failed(e) => return e.into_response(),
    };
    let mut body = session_body(&state, &s, t, None);
    if state.sessions.exchanger().any_routes() {
        add_route_tokens(&mut body, &state.sessions.exchanger().cached_expiries(&s).await);
    }
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    append_set_cookies(h, set_cookies);
    r
}
