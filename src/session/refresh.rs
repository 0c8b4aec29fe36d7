//! Keeping a session's access token usable (SPEC §4, §6): refresh when it has expired or is
//! within `refresh_margin_secs` of expiry (a token whose whole lifetime is within the margin
//! only at expiry). A refreshed ID token must keep `iss`, `sub` and `aud` (OIDC Core §12.2).

use super::model::Session;
use crate::error::{AppError, ErrorCode};
use crate::oidc::id_token::{self, Expectations};
use crate::oidc::token::{self, TokenError};
use crate::state::AppState;

/// Why a session could not be brought up to date.
#[derive(Debug)]
pub enum RefreshFailure {
    /// The session is over: no refresh token, or the IdP refused it. Expire the cookies.
    Ended(AppError),
    /// The IdP could not be asked (down, slow). Keep the session.
    Temporary(AppError),
}

pub fn due(session: &Session, now: i64, margin_secs: u64) -> bool {
    let remaining = session.access_expires_at - now;
    if remaining <= 0 {
        return true;
    }
    let lifetime = session.access_expires_at - session.access_issued_at;
    let margin = margin_secs as i64;
    // A token whose whole lifetime fits in the margin would be refreshed on every request.
    lifetime > margin && remaining <= margin
}

/// Refresh `session` in place; the caller re-seals it.
pub async fn refresh(
    state: &AppState,
    session: &mut Session,
    now: i64,
) -> Result<(), RefreshFailure> {
    let Some(rt) = session.refresh_token.clone() else {
        tracing::info!("access token expired and the session has no refresh token; ending it");
        return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
    };
    let provider = state.oidc.provider().map_err(RefreshFailure::Temporary)?;
    let settings = &state.settings.oidc;
    let tokens = match token::refresh(
        &state.oidc.http,
        &provider.metadata.token_endpoint,
        settings,
        rt.expose(),
    )
    .await
    {
        Ok(t) => t,
        Err(TokenError::Refused(code)) => {
            tracing::info!(
                idp_error = code.as_str(),
                "IdP refused the refresh token; ending the session"
            );
            return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
        }
        Err(e @ TokenError::Timeout) => {
            tracing::warn!(error = %e, "refresh failed");
            return Err(RefreshFailure::Temporary(ErrorCode::IdpTimeout.into()));
        }
        Err(e) => {
            tracing::warn!(error = %e, "refresh failed");
            return Err(RefreshFailure::Temporary(ErrorCode::IdpUnavailable.into()));
        }
    };
    if let Some(new_id) = &tokens.id_token {
        let expectations = Expectations {
            issuer: &settings.issuer,
            client_id: &settings.client_id,
            client_secret: settings.client_secret.expose(),
            algorithms: &settings.id_token_signing_algs,
            clock_skew_secs: settings.clock_skew_secs,
            nonce: None,
            sub: Some(&session.sub),
            access_token: Some(tokens.access_token.expose()),
            now,
        };
        if let Err(e) = id_token::validate(
            new_id.expose(),
            &expectations,
            &provider.jwks,
            &state.oidc.http,
        )
        .await
        {
            tracing::warn!(reason = %e, "refreshed ID token refused; ending the session");
            return Err(RefreshFailure::Ended(ErrorCode::SessionExpired.into()));
        }
        session.id_token = new_id.clone();
    }
    session.access_token = tokens.access_token;
    session.access_expires_at = now + tokens.expires_in;
    session.access_issued_at = now;
    if let Some(rt) = tokens.refresh_token {
        session.refresh_token = Some(rt);
    }
    if tokens.scope.is_some() {
        session.scope = tokens.scope;
    }
    tracing::info!("access token refreshed");
    Ok(())
}
