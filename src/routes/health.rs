//! `/healthz` (alive) and `/readyz` (discovery and JWKS loaded), at fixed root paths.

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.oidc.is_ready() {
        Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        AppError::from(ErrorCode::NotReady).into_response()
    }
}
