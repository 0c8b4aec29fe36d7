//! `/healthz` (alive) and `/readyz` (discovery and JWKS loaded, session store reachable), at
//! fixed root paths.

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// The store counts as down when the maintenance task has not heard from it for this long.
/// One maintenance round can take a poll and a clean-up (each bounded by 2 s) plus its 1 s
/// pause: allow two rounds.
const STORE_STALE_MS: i64 = 10_000;

pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// SPEC §3.7: ready needs the "default" provider and the store; every other provider's state
/// is only reported (a failing partner IdP must not take the whole fleet out of rotation).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if !state.providers.default_provider().is_ready() {
        return AppError::from(ErrorCode::NotReady).into_response();
    }
    if !state.is_store_ready() {
        return AppError::from(ErrorCode::NotReady).into_response();
    }
    // The maintenance task checks the store every second; an unauthenticated probe never
    // dials it (a flood of probes must not exhaust the store's connection pool).
    if state.sessions.store().is_some() {
        let last_ok = state.store_ok_ms.load(std::sync::atomic::Ordering::Relaxed);
        if crate::clock::now_ms() - last_ok > STORE_STALE_MS {
            tracing::warn!("not ready: the session store has not answered recently");
            return AppError::from(ErrorCode::SessionStoreUnavailable).into_response();
        }
    }
    if state.providers.several() {
        let providers: serde_json::Map<String, serde_json::Value> = state
            .providers
            .iter()
            .map(|p| (p.name().to_owned(), if p.is_ready() { "ready" } else { "unavailable" }.into()))
            .collect();
        return Json(serde_json::json!({"status": "ready", "providers": providers})).into_response();
    }
    Json(serde_json::json!({"status": "ready"})).into_response()
}
