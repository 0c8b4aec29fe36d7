//! Reading the small bodies of BFF endpoints: bounded in size and in time.

use crate::error::{AppError, ErrorCode};
use axum::body::Body;
use serde::de::DeserializeOwned;

/// Read a body of at most `limit` bytes, arriving within `deadline` (a slow-trickled body must
/// not hold a connection): 413 above the limit, 400 otherwise. The body is never logged.
pub async fn read_bytes(body: Body, limit: usize, deadline: std::time::Duration) -> Result<bytes::Bytes, AppError> {
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await.map_err(|_| {
        tracing::warn!("request body not received in time");
        AppError::from(ErrorCode::InvalidRequest)
    })?;
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            tracing::warn!("request body above max_body_bytes");
            AppError::from(ErrorCode::PayloadTooLarge)
        } else {
            tracing::warn!("request body could not be read");
            AppError::from(ErrorCode::InvalidRequest)
        }
    })
}

/// Read a JSON body of at most `limit` bytes within `deadline` (see [`read_bytes`]).
pub async fn read_json<T: DeserializeOwned>(
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<T, AppError> {
    let bytes = read_bytes(body, limit, deadline).await?;
    serde_json::from_slice(&bytes).map_err(|_| {
        tracing::warn!("request body is not the expected JSON");
        ErrorCode::InvalidRequest.into()
    })
}
