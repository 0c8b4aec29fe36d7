//! One refresh-token grant and the re-validation of the ID token it may bring (OIDC Core §12.2:
//! a refreshed ID token keeps `iss`, `sub` and `aud`).

use crate::error::ErrorCode;
use crate::oidc::Oidc;
use crate::oidc::dpop::Signer;
use crate::oidc::id_token::{Check, IdTokenError};
use crate::oidc::token::TokenError;
use crate::secret::Secret;
use crate::session::model::{Session, Token};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a refreshed ID token must keep (`iss` is fixed by configuration and checked exactly by
/// validation).
pub(super) struct Original {
    /// The session's provider: the only one that may refresh it.
    pub oidc: Arc<Oidc>,
    pub sub: String,
    pub aud: Vec<String>,
    /// When the session's current access token was issued (to judge a cached answer).
    pub issued_at: i64,
    /// The session's DPoP signer: the refresh carries a proof and must come back DPoP-bound.
    pub dpop: Option<Arc<Signer>>,
}

/// Tokens a refresh produced: what a cache entry holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Fresh {
    pub access_token: Secret,
    pub expires_at: i64,
    pub issued_at: i64,
    pub refresh_token: Option<Secret>,
    pub id_token: Option<Secret>,
    pub scope: Option<String>,
}

#[derive(Clone)]
pub(super) enum Outcome {
    Refreshed(Arc<Fresh>),
    Refused,
    Temporary(ErrorCode),
}

/// Put a refresh's tokens into `session`; `from` names the cache entry they came from.
pub(super) fn apply(session: &mut Session, fresh: &Fresh, from: &[u8; 32]) {
    session.access_token = Token::new(fresh.access_token.expose());
    session.access_expires_at = fresh.expires_at;
    session.access_issued_at = fresh.issued_at;
    if let Some(rt) = &fresh.refresh_token {
        session.refresh_token = Some(rt.clone());
    }
    if let Some(id) = &fresh.id_token {
        session.id_token = Token::new(id.expose());
    }
    if fresh.scope.is_some() {
        session.scope = fresh.scope.clone();
    }
    session.refreshed_from = Some(*from);
}

pub(super) async fn refresh_grant(rt: &Secret, original: &Original) -> Outcome {
    let oidc = &original.oidc;
    let Ok(provider) = oidc.provider() else {
        return Outcome::Temporary(ErrorCode::IdpUnavailable);
    };
    let started = crate::clock::now();
    let tokens = match oidc.refresh(&provider, rt.expose(), original.dpop.as_deref()).await {
        Ok(t) => t,
        Err(TokenError::Refused(code)) => {
            tracing::info!(idp_error = code.as_str(), "IdP refused the refresh token; ending the session");
            metrics::counter!("bff_refresh_total", "result" => "refused").increment(1);
            return Outcome::Refused;
        }
        Err(e) => {
            tracing::warn!(error = %e, "refresh failed");
            metrics::counter!("bff_refresh_total", "result" => "error").increment(1);
            let code = if e == TokenError::Timeout { ErrorCode::IdpTimeout } else { ErrorCode::IdpUnavailable };
            return Outcome::Temporary(code);
        }
    };
    let mut id_token_verified = true;
    if let Some(new_id) = &tokens.id_token {
        let check = Check {
            // auth_time was checked at login; a refresh does not re-authenticate.
            login: false,
            nonce: None,
            sub: Some(&original.sub),
            access_token: Some(tokens.access_token.expose()),
            now: started,
        };
        match oidc.verify_id_token(&provider, new_id.expose(), &check).await {
            Ok(valid) if valid.aud == original.aud => {}
            Ok(_) => {
                tracing::warn!("refreshed ID token names other audiences; ending the session");
                metrics::counter!("bff_refresh_total", "result" => "invalid_id_token").increment(1);
                return Outcome::Refused;
            }
            // The IdP's keys could not be fetched. The grant succeeded and may have rotated the
            // refresh token: keep the new tokens (losing them would spend the old refresh token
            // again) and the old ID token.
            Err(IdTokenError::KeysUnavailable) => {
                tracing::warn!("refreshed ID token not verifiable (JWKS unavailable); keeping the previous ID token");
                id_token_verified = false;
            }
            Err(e) => {
                tracing::warn!(reason = %e, "refreshed ID token refused; ending the session");
                metrics::counter!("bff_refresh_total", "result" => "invalid_id_token").increment(1);
                return Outcome::Refused;
            }
        }
    }
    metrics::counter!("bff_refresh_total", "result" => "ok").increment(1);
    tracing::info!(has_refresh_token = tokens.refresh_token.is_some(), "access token refreshed");
    Outcome::Refreshed(Arc::new(Fresh {
        access_token: tokens.access_token,
        expires_at: started + tokens.expires_in,
        issued_at: started,
        refresh_token: tokens.refresh_token,
        id_token: tokens.id_token.filter(|_| id_token_verified),
        scope: tokens.scope,
    }))
}
