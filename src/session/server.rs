//! Server-side sessions (`store = "sqlite" | "postgres" | "redis"`, SPEC §4).
//!
//! The cookie carries only a random 128-bit id, sealed like every other value we hand the
//! browser (so it cannot be forged, and key rotation works as in cookie mode). The store knows
//! the session by SHA-256 of that id, and holds it sealed with the session key, the row's key
//! bound as associated data: a copy of the database yields neither usable cookies nor tokens,
//! and rows cannot be swapped.
//!
//! Token changes are written with compare-and-swap on a version, so a request that loaded the
//! session before a refresh can never write the old (rotated-away) refresh token back; the
//! sliding idle expiry is a separate, data-free update.

use super::cookie::{CookieNames, SessionCookie, Unopened};
use super::model::{Loaded, Session, StoredRef};
use super::seal::{Keyring, OpenError, Purpose};
use crate::error::{AppError, ErrorCode};
use crate::store::{NewSession, SessionRow, Store};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// Bytes of a session id (the cookie seals exactly this many).
pub const ID_LEN: usize = 16;

fn row_key(id: &[u8]) -> [u8; 32] {
    Sha256::digest(id).into()
}

/// The associated data that binds a row's sealed data to its key.
fn row_name(key: &[u8; 32]) -> String {
    format!("store:{}", crate::secret::hex(key))
}

/// The server-side store as the session code sees it: the store, and the keys and cookie
/// names its rows and ids are sealed with.
pub struct Rows<'a> {
    pub keys: &'a Keyring,
    pub cookies: &'a CookieNames,
    pub store: &'a Store,
    pub idle_timeout_secs: u64,
}

impl Rows<'_> {
    fn seal(&self, key: &[u8; 32], s: &Session) -> String {
        s.seal(self.keys, Purpose::Session, &row_name(key))
    }

    fn open(&self, key: &[u8; 32], row: &SessionRow) -> Result<Session, OpenError> {
        let plain = self.keys.open_checked(Purpose::Session, &row_name(key), &row.data)?;
        let mut s = Session::from_bytes(&plain).ok_or(OpenError::Invalid)?;
        s.sealed_at = row.last_seen;
        s.stored = Some(StoredRef { key: *key, version: row.version });
        Ok(s)
    }

    /// The row key of the session id a request's cookie carries.
    pub fn cookie_key(&self, found: &SessionCookie<'_>) -> Result<[u8; 32], Unopened> {
        let id = found.open_as(self.cookies, self.keys, Purpose::SessionId)?;
        if id.len() != ID_LEN {
            return Err(Unopened::Invalid);
        }
        Ok(row_key(&id))
    }

    pub async fn load(&self, found: &SessionCookie<'_>, now: i64) -> Result<Loaded, AppError> {
        let key = match self.cookie_key(found) {
            Ok(key) => key,
            Err(why) => return Ok(why.into_loaded()),
        };
        let Some(row) = self.store.get_session(&key, now).await? else {
            tracing::info!("session id unknown to the store (logged out, expired or revoked)");
            return Ok(Loaded::Anonymous { stale_cookie: true });
        };
        let session = match self.open(&key, &row) {
            Ok(s) => s,
            // Written by a replica with a key this one does not have yet (a rotation mid-rollout):
            // that replica can still read it, so it is neither deleted nor expired.
            Err(OpenError::UnknownKey) => {
                tracing::info!("stored session sealed under a key this instance does not have; leaving it");
                return Ok(Loaded::Anonymous { stale_cookie: false });
            }
            Err(OpenError::Invalid) => {
                tracing::warn!("stored session did not open; deleting it");
                let _ = self.store.delete_session(&key).await;
                return Ok(Loaded::Anonymous { stale_cookie: true });
            }
        };
        if !session.is_live(now, self.idle_timeout_secs) {
            tracing::debug!("stored session expired");
            let _ = self.store.delete_session(&key).await;
            return Ok(Loaded::Anonymous { stale_cookie: true });
        }
        Ok(Loaded::Live(std::sync::Arc::new(session)))
    }

    pub async fn save(&self, s: &mut Session, now: i64, changed: bool) -> Result<(), AppError> {
        let idle = self.idle_timeout_secs;
        let Some(mut stored) = s.stored.clone() else {
            return Ok(());
        };
        if !changed {
            if s.needs_reseal(now, idle) {
                s.sealed_at = now;
                // Only the idle expiry: failing to slide it is not worth failing the request.
                if let Err(e) = self.store.touch_session(&stored.key, now, s.expires_at(idle)).await {
                    tracing::warn!(error = %e, "could not slide the session's idle expiry");
                }
            }
            return Ok(());
        }
        for _ in 0..3 {
            s.sealed_at = now;
            let data = self.seal(&stored.key, s);
            if self.store.update_session(&stored.key, stored.version, &data, now, s.expires_at(idle)).await? {
                stored.version += 1;
                s.stored = Some(stored);
                return Ok(());
            }
            // Another request wrote first. If it stored these tokens or newer ones, take its copy;
            // if the row is gone, the session was ended meanwhile.
            let Some(row) = self.store.get_session(&stored.key, now).await? else {
                tracing::info!("session ended while its tokens were being refreshed");
                return Err(ErrorCode::SessionExpired.into());
            };
            let Ok(theirs) = self.open(&stored.key, &row) else {
                return Err(ErrorCode::SessionExpired.into());
            };
            if theirs.access_issued_at >= s.access_issued_at {
                *s = theirs;
                return Ok(());
            }
            stored.version = row.version;
        }
        tracing::warn!("session write lost three races in a row; keeping this request's tokens unsaved");
        Ok(())
    }

    pub async fn create(
        &self,
        session: &mut Session,
        now: i64,
        headers: &HeaderMap,
        replaces: Option<[u8; 32]>,
    ) -> Result<Vec<String>, AppError> {
        // A login replaces whatever session this browser had (never reuse an id; a copy of the
        // old cookie must not outlive the new login). The callback is a cross-site navigation that
        // does not carry a SameSite=Strict cookie: the session seen when the login started
        // (`replaces`, from the transaction cookie) is deleted as well as any the callback carries.
        let current = self.cookie_key(&SessionCookie::from_headers(self.cookies, headers)).ok();
        for old in current.into_iter().chain(replaces.filter(|r| Some(*r) != current)) {
            self.store.delete_session(&old).await?;
        }
        let id: [u8; ID_LEN] = crate::secret::random_bytes();
        let key = row_key(&id);
        session.sealed_at = now;
        let data = self.seal(&key, session);
        let idle = self.idle_timeout_secs;
        // Indexed by provider-scoped ids (SPEC §3.7): a back-channel logout of one provider
        // never finds another's sessions.
        let provider = session.provider_name();
        let sub = super::scope::scoped(provider, &session.sub);
        let sid = session.sid.as_deref().map(|sid| super::scope::scoped(provider, sid));
        self.store
            .insert_session(&NewSession {
                key: &key,
                sub: &sub,
                sid: sid.as_deref(),
                created_at: session.created_at,
                last_seen: now,
                expires_at: session.expires_at(idle),
                absolute_expires_at: session.absolute_expires_at,
                data: &data,
            })
            .await?;
        session.stored = Some(StoredRef { key, version: 1 });
        let cookie = self.keys.seal(Purpose::SessionId, &self.cookies.session, &id);
        Ok(self.cookies.write_session(&cookie, session.absolute_expires_at - now))
    }
}
