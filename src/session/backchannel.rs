//! Applying a validated back-channel logout token (OpenID Connect Back-Channel Logout 1.0,
//! SPEC §5): server-side stores delete the sessions of that `sid` (an ended IdP session), or of
//! that `sub` created by the token's `iat` (plus the clock skew, at most our receipt); cookie
//! mode records the same in the revocation list every replica checks. A user who logs in again
//! afterwards is untouched (new IdP session, new `sid`; created after `iat`). See
//! `store::Subject` for the exact rules.

use super::revocations::Revocations;
use crate::error::{AppError, ErrorCode};
use crate::oidc::logout_token::ValidLogoutToken;
use crate::store::{Revocation, SID_RECEIPT_MARGIN_SECS, Store, Subject};

/// Where a logout is applied.
pub struct Target<'a> {
    pub store: &'a Store,
    /// Listeners of the ended sessions, on every instance, are told (SPEC §5).
    pub events: &'a crate::events::Events,
    /// Server-side sessions live in `store`; otherwise cookie mode's revocation list does.
    pub server_side: bool,
    pub revocations: Option<&'a Revocations>,
    /// The provider whose keys validated the token: ids are scoped by it (`super::scope`).
    pub provider: &'a str,
    /// That provider's.
    pub clock_skew_secs: u64,
    pub absolute_timeout_secs: u64,
}

/// Apply `token`, received at `t`. A replayed token (`jti` seen) is refused before anything is
/// applied; the `jti` is spent only after the logout was applied, so an IdP retry after a store
/// error still succeeds.
pub async fn apply(to: &Target<'_>, token: &ValidLogoutToken, t: i64) -> Result<(), AppError> {
    let store = to.store;
    let scoped = |id| super::scope::scoped(to.provider, id);
    let jti = format!("jti:{}", scoped(&token.jti));
    if store.is_used(&jti, t).await? {
        tracing::warn!("back-channel logout token replayed (jti already seen)");
        metrics::counter!("bff_backchannel_logouts_total", "result" => "replayed").increment(1);
        return Err(ErrorCode::InvalidLogoutToken.into());
    }
    let received = t + SID_RECEIPT_MARGIN_SECS;
    // The rules by `sub` end sessions created up to the logout. The IdP stamps `iat` with its
    // own clock: behind ours by up to `clock_skew_secs`, a session created before the logout
    // would look newer than it and survive. So allow the skew — but never past our receipt,
    // so that a login after the logout is not ended by it.
    let created_by = token.iat.saturating_add(to.clock_skew_secs as i64).min(t);
    let (sid, sub) = (token.sid.as_deref().map(scoped), token.sub.as_deref().map(scoped));
    let who = match (&sid, &sub) {
        (Some(sid), sub) => Subject::Sid { sid, sub: sub.as_deref(), received },
        (None, Some(sub)) => Subject::Sub(sub),
        (None, None) => return Err(ErrorCode::InvalidLogoutToken.into()),
    };
    // Apply first, then spend the jti: both steps are idempotent, and a store failure between
    // them must leave the IdP's retry able to succeed (spending the jti first would turn that
    // retry into a "replay" and leave the sessions alive).
    let rules = Revocation::for_subject(who, created_by);
    if to.server_side {
        let n = store.delete_sessions_of(who, created_by).await?;
        tracing::info!(
            provider = to.provider,
            sessions = n,
            by_sid = token.sid.is_some(),
            "back-channel logout: sessions deleted"
        );
    } else {
        // Kept until no session it can match is still alive.
        let until = crate::clock::now().max(token.iat) + to.absolute_timeout_secs as i64 + 120;
        for r in &rules {
            store.add_revocation(r, until).await?;
            if let Some(rev) = to.revocations {
                rev.apply(r);
            }
        }
        tracing::info!(
            provider = to.provider,
            by_sid = token.sid.is_some(),
            "back-channel logout: revocation recorded"
        );
    }
    let sid_with_sub = if to.server_side { sub.as_deref() } else { None };
    to.events.publish(super::live::backchannel_event(&rules, sid_with_sub));
    if !store.first_use(&jti, token.usable_until).await? {
        tracing::warn!("back-channel logout token replayed concurrently (jti already seen)");
        metrics::counter!("bff_backchannel_logouts_total", "result" => "replayed").increment(1);
        return Err(ErrorCode::InvalidLogoutToken.into());
    }
    metrics::counter!("bff_backchannel_logouts_total", "result" => "ok").increment(1);
    Ok(())
}
