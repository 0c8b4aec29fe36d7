//! `/healthz` (alive) and `/readyz` (discovery and JWKS loaded, session store reachable), at
//! fixed root paths.

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if !state.oidc.is_ready() {
        return AppError::from(ErrorCode::NotReady).into_response();
    }
    if !state.is_store_ready() {
        return AppError::from(ErrorCode::NotReady).into_response();
    }
    if let Some(store) = &state.store {
        if let Err(e) = store.ping().await {
            tracing::warn!(error = %e, "not ready: session store unreachable");
            return AppError::from(ErrorCode::SessionStoreUnavailable).into_response();
        }
        if state.revocations.as_ref().is_some_and(|r| !r.is_fresh()) {
            tracing::warn!("not ready: revocation list not refreshed recently");
            return AppError::from(ErrorCode::SessionStoreUnavailable).into_response();
        }
    }
    Json(serde_json::json!({"status": "ready"})).into_response()
}
