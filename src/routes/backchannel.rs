//! `POST {base}/backchannel-logout` (SPEC §5; OpenID Connect Back-Channel Logout 1.0): the IdP
//! tells us a user's session ended. Exempt from `X-CSRF` and the Origin check (the caller is
//! the IdP's server, not a browser); everything rests on the logout token's validation
//! (`oidc::logout_token`). What a valid token ends is the session code's rule
//! (`session::backchannel`).

use crate::clock::now;
use crate::error::{AppError, ErrorCode};
use crate::secret::Secret;
use crate::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;

/// SPEC §5: the form body is at most 16 KiB.
const MAX_BODY: usize = 16 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/backchannel-logout", post(backchannel_logout))
}

#[derive(Deserialize)]
struct Form {
    logout_token: Secret,
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn backchannel_logout(State(state): State<AppState>, req: Request) -> Response {
    no_store(match handle(&state, req.into_body()).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    })
}

async fn read_form(body: Body, deadline: std::time::Duration) -> Result<Form, AppError> {
    let bytes = super::body::read_bytes(body, MAX_BODY, deadline).await?;
    // Unknown fields are ignored; a missing logout_token is an error.
    serde_urlencoded::from_bytes(&bytes).map_err(|_| AppError::from(ErrorCode::InvalidLogoutToken))
}

async fn handle(state: &AppState, body: Body) -> Result<(), AppError> {
    if state.sessions.store().is_none() {
        tracing::warn!("back-channel logout received, but cookie mode has no [session] url for a revocation list");
        return Err(ErrorCode::BackchannelUnavailable.into());
    }
    let form = read_form(body, state.settings.server.header_read_timeout).await.inspect_err(|e| {
        tracing::warn!(error = e.code.as_str(), "back-channel logout request malformed");
    })?;
    // SPEC §3.7: the token's (unverified) `iss` only chooses which provider verifies it; that
    // provider's keys, issuer and client id then decide, and only its sessions can end.
    let invalid = |reason: &dyn std::fmt::Display| {
        tracing::warn!(%reason, "back-channel logout token refused");
        metrics::counter!("bff_backchannel_logouts_total", "result" => "invalid").increment(1);
        AppError::from(ErrorCode::InvalidLogoutToken)
    };
    let Some(iss) = crate::oidc::logout_token::unverified_issuer(form.logout_token.expose()) else {
        return Err(invalid(&"not a JWT with an iss claim"));
    };
    let Some(oidc) = state.providers.by_issuer(&iss) else {
        return Err(invalid(&"iss is no configured provider's issuer"));
    };
    let provider = oidc.provider()?;
    let t = now();
    let token = match oidc.verify_logout_token(&provider, form.logout_token.expose(), t).await {
        Ok(v) => v,
        Err(e) => return Err(invalid(&e)),
    };
    state.sessions.backchannel_logout(oidc.settings(), &token, t).await
}
