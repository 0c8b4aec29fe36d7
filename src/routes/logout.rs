//! Logout (SPEC §5): `POST /logout` for the SPA, `GET /logout?sid=` for links. Both end the
//! local session, revoke the refresh token at the IdP when it has a revocation endpoint, and
//! hand back the IdP's RP-initiated logout URL.

use crate::clock::now;
use crate::error::{AppError, ErrorCode};
use crate::login::tx;
use crate::secret::random_urlsafe;
use crate::session::cookie::append_set_cookies;
use crate::session::model::{Loaded, Session};
use crate::state::AppState;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

pub fn spa_router() -> Router<AppState> {
    Router::new().route("/logout", post(logout_post))
}

pub fn navigation_router() -> Router<AppState> {
    Router::new().route("/logout", get(logout_get))
}

/// Every cookie this app may have set in this browser.
fn clear_all(state: &AppState, headers: &HeaderMap) -> Vec<String> {
    let cookies = state.sessions.cookies();
    let mut c = cookies.clear_session();
    c.extend(tx::expire_all(cookies, headers));
    c
}

/// End the session where it is kept (a store that cannot be reached fails the logout: the
/// session must not outlive a logout the user saw succeed), revoke the refresh token (bounded
/// by the IdP client's timeout; a failure is logged, the local logout stands) and build the IdP
/// logout URL.
async fn end(state: &AppState, session: &Session) -> Result<Option<String>, AppError> {
    state.sessions.end(session, crate::events::Reason::Logout).await?;
    metrics::counter!("bff_sessions_ended_total", "reason" => "logout").increment(1);
    Ok(idp_logout(state, session).await)
}

/// Revocation and the logout URL go to the session's own provider (SPEC §3.7).
async fn idp_logout(state: &AppState, session: &Session) -> Option<String> {
    let oidc = state.providers.of(session.provider.as_deref())?;
    let provider = oidc.provider().ok()?;
    if let Some(rt) = &session.refresh_token {
        match oidc.revoke(&provider, rt.expose()).await {
            Ok(true) => tracing::info!(provider = oidc.name(), "refresh token revoked at the IdP"),
            Ok(false) => {}
            Err(e) => tracing::warn!(provider = oidc.name(), error = %e, "refresh token revocation failed"),
        }
    }
    let hint = session.id_token.compact();
    oidc.end_session_url(&provider, hint.expose(), &random_urlsafe(16)).map(String::from)
}

/// Where a logout without an IdP logout URL ends: the session's provider's
/// `post_logout_redirect_uri`.
fn post_logout_redirect(state: &AppState, session: &Session) -> String {
    let oidc = state.providers.of(session.provider.as_deref()).unwrap_or(state.providers.default_provider());
    oidc.settings().post_logout_redirect_uri.clone()
}

async fn logout_post(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // A store failure answers 503 (the server-side session may outlive this logout, and the
    // SPA must know) but still expires this browser's cookies: on a shared computer the user
    // walks away logged out.
    let failed = |e: AppError| {
        let mut r = e.into_response();
        append_set_cookies(r.headers_mut(), clear_all(&state, &headers));
        r
    };
    let logout_url = match state.sessions.load(&headers, now()).await {
        Ok(Loaded::Live(s)) => match end(&state, &s).await {
            Ok(url) => {
                tracing::info!("session ended by POST /logout");
                url
            }
            Err(e) => return failed(e),
        },
        Ok(Loaded::Anonymous { .. }) => None,
        Err(e) => return failed(e),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "logout_url": logout_url })).unwrap_or_default();
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    append_set_cookies(h, clear_all(&state, &headers));
    r
}

#[derive(Deserialize)]
struct SidQuery {
    sid: Option<String>,
}

async fn logout_get(State(state): State<AppState>, req: Request) -> Response {
    let error_url = state.settings.server.error_url.as_ref();
    let invalid = || AppError::from(ErrorCode::InvalidLogoutRequest).into_navigational(error_url);
    let sid = serde_urlencoded::from_str::<SidQuery>(req.uri().query().unwrap_or("")).ok().and_then(|q| q.sid);
    let Some(sid) = sid else {
        tracing::warn!("GET /logout without sid");
        return invalid();
    };
    // Only the headers are kept across the awaits below (the body is not `Sync`).
    let (parts, _) = req.into_parts();
    let headers = parts.headers;
    let failed = |e: AppError| {
        let mut r = e.into_navigational(error_url);
        append_set_cookies(r.headers_mut(), clear_all(&state, &headers));
        r
    };
    let session = match state.sessions.load(&headers, now()).await {
        Ok(Loaded::Live(s)) if s.logout_token.matches(&sid) => s,
        // The store cannot say whose session this is: the sid cannot be checked, so only
        // report the failure (a GET /logout with a wrong sid must change nothing).
        Err(e) => return e.into_navigational(error_url),
        _ => {
            tracing::warn!("GET /logout with a sid that is not this session's");
            return invalid();
        }
    };
    let target = match end(&state, &session).await {
        Ok(url) => url.unwrap_or_else(|| post_logout_redirect(&state, &session)),
        Err(e) => return failed(e),
    };
    tracing::info!("session ended by GET /logout");
    let mut r = StatusCode::FOUND.into_response();
    let h = r.headers_mut();
    let fallback =
        HeaderValue::from_str(&post_logout_redirect(&state, &session)).unwrap_or(HeaderValue::from_static("/"));
    h.insert(header::LOCATION, HeaderValue::from_str(&target).unwrap_or(fallback));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    append_set_cookies(h, clear_all(&state, &headers));
    r
}
