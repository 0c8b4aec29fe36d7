//! Login endpoints: redirect mode (`GET /login`, `GET /callback`) and SPA mode
//! (`POST /login/start`, `POST /login/end`), SPEC §3.1–§3.2.

use super::body::read_json;
use super::session::session_body;
use crate::clock::now;
use crate::error::{AppError, ErrorCode};
use crate::login::{Arrival, CallbackParams, Completed, redirect_matches};
use crate::middleware::client_ip;
use crate::secret::Secret;
use crate::session::cookie::append_set_cookies;
use crate::session::model::Loaded;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

pub fn navigation_router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_get))
        .route("/callback", get(callback_get))
        .route("/callback/{provider}", get(own_callback_get))
}

pub fn spa_router() -> Router<AppState> {
    Router::new().route("/login/start", post(login_start)).route("/login/end", post(login_end))
}

fn redirect(location: &str, cookies: Vec<String>) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    let h = r.headers_mut();
    // Every location here was validated (return_to, the IdP URL built by `url`); fall back to
    // the root rather than answering a 302 without Location.
    h.insert(header::LOCATION, HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/")));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    append_set_cookies(h, cookies);
    r
}

fn json_with_cookies(body: Vec<u8>, cookies: Vec<String>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    append_set_cookies(h, cookies);
    r
}

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
    provider: Option<String>,
}

async fn login_get(State(state): State<AppState>, req: Request) -> Response {
    let error_url = state.settings.server.error_url.as_ref();
    let query: LoginQuery = match serde_urlencoded::from_str(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(_) => return AppError::from(ErrorCode::InvalidRequest).into_navigational(error_url),
    };
    let peer = client_ip(&state, &req);
    match state.login.start(req.headers(), query.return_to.as_deref(), query.provider.as_deref(), peer).await {
        Ok((url, cookies)) => redirect(url.as_str(), cookies),
        Err(e) => e.into_navigational(error_url),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StartBody {
    return_to: Option<String>,
    provider: Option<String>,
}

async fn login_start(State(state): State<AppState>, req: Request) -> Response {
    let peer = client_ip(&state, &req);
    let (parts, body) = req.into_parts();
    let limit = state.settings.server.max_body_bytes;
    let empty = parts.headers.get(header::CONTENT_LENGTH).is_some_and(|v| v == "0");
    let start: StartBody = if empty {
        StartBody::default()
    } else {
        match read_json(body, limit, state.settings.server.header_read_timeout).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        }
    };
    match state.login.start(&parts.headers, start.return_to.as_deref(), start.provider.as_deref(), peer).await {
        Ok((url, cookies)) => {
            let body =
                serde_json::to_vec(&serde_json::json!({ "authorization_url": url.as_str() })).unwrap_or_default();
            json_with_cookies(body, cookies)
        }
        Err(e) => e.into_response(),
    }
}

async fn callback_get(State(state): State<AppState>, req: Request) -> Response {
    callback(&state, req, Arrival::SharedCallback).await
}

/// `{base}/callback/<name>`: the callback of a provider told apart by its path (SPEC §3.7).
/// Every path below `{base}/callback/` reaches this handler; only configured names (compared
/// as the raw segment: names are plain `[a-z0-9-]`) are callbacks, the rest is 404.
async fn own_callback_get(State(state): State<AppState>, req: Request) -> Response {
    let name = req.uri().path().rsplit_once("/callback/").map(|(_, n)| n).unwrap_or_default();
    let Some(provider) = state.providers.get(name).filter(|_| !name.is_empty()) else {
        tracing::debug!("callback at the path of an unknown provider");
        return AppError::from(ErrorCode::NotFound).into_navigational(state.settings.server.error_url.as_ref());
    };
    let provider = provider.clone();
    callback(&state, req, Arrival::OwnCallback(provider.name())).await
}

async fn callback(state: &AppState, req: Request, arrival: Arrival<'_>) -> Response {
    let error_url = state.settings.server.error_url.as_ref();
    let params = match CallbackParams::from_query(req.uri().query().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return e.into_navigational(error_url),
    };
    let peer = client_ip(state, &req);
    match state.login.complete(req.headers(), params, arrival, peer).await {
        Ok(Completed::Session { return_to, set_cookies, .. }) => redirect(&return_to, set_cookies),
        Ok(Completed::AlreadyDone { return_to }) => redirect(&return_to, vec![]),
        Err((e, cookies)) => {
            let mut r = e.into_navigational(error_url);
            append_set_cookies(r.headers_mut(), cookies);
            r
        }
    }
}

/// `{"url": "<where the IdP redirected the SPA>"}` or the parameters themselves.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndBody {
    url: Option<String>,
    code: Option<Secret>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

/// The parameters, and the URL they arrived at when the SPA sent it (it must be some
/// provider's `redirect_uri`; `Login::complete` checks it is the transaction's provider's).
fn params_from_end(state: &AppState, body: EndBody) -> Result<(CallbackParams, Option<url::Url>), AppError> {
    let Some(url) = body.url else {
        return Ok((CallbackParams { code: body.code, state: body.state, iss: body.iss, error: body.error }, None));
    };
    if body.code.is_some() || body.state.is_some() || body.iss.is_some() || body.error.is_some() {
        return Err(ErrorCode::InvalidRequest.into());
    }
    let url = url::Url::parse(&url).map_err(|_| AppError::from(ErrorCode::InvalidRequest))?;
    if !state.providers.iter().any(|p| redirect_matches(&url, &p.settings().redirect_uri)) {
        tracing::warn!("login/end url does not match redirect_uri");
        return Err(ErrorCode::InvalidRequest.into());
    }
    let params = CallbackParams::from_query(url.query().unwrap_or(""))?;
    Ok((params, Some(url)))
}

async fn login_end(State(state): State<AppState>, req: Request) -> Response {
    let peer = client_ip(&state, &req);
    let (parts, body): (_, Body) = req.into_parts();
    let end: EndBody =
        match read_json(body, state.settings.server.max_body_bytes, state.settings.server.header_read_timeout).await {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
    let (params, url) = match params_from_end(&state, end) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let arrival = url.as_ref().map_or(Arrival::ParametersOnly, Arrival::RedirectUrl);
    let t = now();
    match state.login.complete(&parts.headers, params, arrival, peer).await {
        Ok(Completed::Session { session, return_to, set_cookies }) => {
            json_with_cookies(session_body(&state, &session, t, Some(&return_to)), set_cookies)
        }
        Ok(Completed::AlreadyDone { return_to }) => match state.sessions.load(&parts.headers, t).await {
            Ok(Loaded::Live(s)) => json_with_cookies(session_body(&state, &s, t, Some(&return_to)), vec![]),
            Ok(Loaded::Anonymous { .. }) => AppError::from(ErrorCode::InvalidState).into_response(),
            Err(e) => e.into_response(),
        },
        Err((e, cookies)) => {
            let mut r = e.into_response();
            append_set_cookies(r.headers_mut(), cookies);
            r
        }
    }
}
