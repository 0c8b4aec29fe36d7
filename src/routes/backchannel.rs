//! `POST {base}/backchannel-logout` (SPEC §5; OpenID Connect Back-Channel Logout 1.0): the IdP
//! tells us a user's session ended. Exempt from `X-CSRF` and the Origin check (the caller is
//! the IdP's server, not a browser); everything rests on the logout token's validation.
//!
//! Server-side stores delete the sessions of that `sid` (an ended IdP session), or of that `sub`
//! created by the token's `iat` (plus the clock skew, at most our receipt); cookie mode records
//! the same in the revocation list every replica checks. A user who logs in again afterwards is untouched (new IdP session, new
//! `sid`; created after `iat`). See `store::Subject` for the exact rules.

use crate::error::{AppError, ErrorCode};
use crate::oidc::logout_token::{self, Expected};
use crate::secret::Secret;
use crate::state::{AppState, now};
use crate::store::{Revocation, Subject};
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
    let Some(store) = state.store.as_ref() else {
        tracing::warn!("back-channel logout received, but cookie mode has no [session] url for a revocation list");
        return Err(ErrorCode::BackchannelUnavailable.into());
    };
    let form = read_form(body, state.settings.server.header_read_timeout).await.inspect_err(|e| {
        tracing::warn!(error = e.code.as_str(), "back-channel logout request malformed");
    })?;
    let provider = state.oidc.provider()?;
    let o = &state.settings.oidc;
    let t = now();
    let expected = Expected {
        issuer: &o.issuer,
        client_id: &o.client_id,
        client_secret: o.client_secret.expose(),
        algorithms: &o.id_token_signing_algs,
        clock_skew_secs: o.clock_skew_secs,
        now: t,
    };
    let token =
        match logout_token::validate(form.logout_token.expose(), &expected, &provider.jwks, &state.oidc.http).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(reason = %e, "back-channel logout token refused");
                metrics::counter!("bff_backchannel_logouts_total", "result" => "invalid").increment(1);
                return Err(ErrorCode::InvalidLogoutToken.into());
            }
        };
    let jti = format!("jti:{}", token.jti);
    // A replay is refused before anything is applied (and, below, the jti is spent only after
    // the logout was applied, so an IdP retry after a store error still succeeds).
    if store.is_used(&jti, t).await? {
        tracing::warn!("back-channel logout token replayed (jti already seen)");
        metrics::counter!("bff_backchannel_logouts_total", "result" => "replayed").increment(1);
        return Err(ErrorCode::InvalidLogoutToken.into());
    }
    let received = t + crate::store::SID_RECEIPT_MARGIN_SECS;
    // The rules by `sub` end sessions created up to the logout. The IdP stamps `iat` with its
    // own clock: behind ours by up to `clock_skew_secs`, a session created before the logout
    // would look newer than it and survive. So allow the skew — but never past our receipt,
    // so that a login after the logout is not ended by it.
    let created_by = token.iat.saturating_add(o.clock_skew_secs as i64).min(t);
    let who = match (&token.sid, &token.sub) {
        (Some(sid), sub) => Subject::Sid { sid, sub: sub.as_deref(), received },
        (None, Some(sub)) => Subject::Sub(sub),
        (None, None) => return Err(ErrorCode::InvalidLogoutToken.into()),
    };
    // Apply first, then spend the jti: both steps are idempotent, and a store failure between
    // them must leave the IdP's retry able to succeed (spending the jti first would turn that
    // retry into a "replay" and leave the sessions alive).
    match state.server_store() {
        Some(sessions) => {
            let n = sessions.delete_sessions_of(who, created_by).await?;
            tracing::info!(sessions = n, by_sid = token.sid.is_some(), "back-channel logout: sessions deleted");
        }
        None => {
            // Kept until no session it can match is still alive.
            let until = now().max(token.iat) + state.settings.session.absolute_timeout_secs as i64 + 120;
            for r in Revocation::for_subject(who, created_by) {
                store.add_revocation(&r, until).await?;
                if let Some(rev) = &state.revocations {
                    rev.apply(&r);
                }
            }
            tracing::info!(by_sid = token.sid.is_some(), "back-channel logout: revocation recorded");
        }
    }
    if !store.first_use(&jti, token.usable_until).await? {
        tracing::warn!("back-channel logout token replayed concurrently (jti already seen)");
        metrics::counter!("bff_backchannel_logouts_total", "result" => "replayed").increment(1);
        return Err(ErrorCode::InvalidLogoutToken.into());
    }
    metrics::counter!("bff_backchannel_logouts_total", "result" => "ok").increment(1);
    Ok(())
}
