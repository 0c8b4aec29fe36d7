//! What the store holds and answers, shared by its backends.

use std::future::Future;
use std::time::Duration;

/// The longest any one store operation may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// A back-channel logout may walk many sessions (in batches); the IdP waits for its answer.
pub const LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the session store did not answer in time")]
    Timeout,
    /// The driver's message: sqlx and redis do not put passwords or row data in errors.
    #[error("session store error: {0}")]
    Backend(String),
}

/// A server-side session as stored.
pub struct SessionRow {
    pub version: i64,
    pub last_seen: i64,
    /// The session, sealed (see `session::server`).
    pub data: String,
}

/// What is written when a session is created.
pub struct NewSession<'a> {
    /// SHA-256 of the id the cookie carries.
    pub key: &'a [u8; 32],
    pub sub: &'a str,
    pub sid: Option<&'a str>,
    pub created_at: i64,
    pub last_seen: i64,
    /// The earlier of idle and absolute expiry: when the store may forget it.
    pub expires_at: i64,
    /// The latest the session can live (its lookup entries must last that long).
    pub absolute_expires_at: i64,
    pub data: &'a str,
}

/// Whose sessions a back-channel logout ends, and up to when they were created.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// The sessions of this IdP session created before we received the logout (`received`,
    /// our own clock plus a few seconds: no comparison with the IdP's clock, so its skew cannot
    /// spare a session, while an IdP that reuses a `sid` does not lock a later login out) —
    /// and, when the token names the user, that user's sessions that carry no `sid` and were
    /// created by the token's `iat` plus the clock skew, at the latest by our receipt (we cannot
    /// tell which IdP session those belong to).
    Sid { sid: &'a str, sub: Option<&'a str>, received: i64 },
    /// Every session of this user created by the token's `iat` plus the clock skew, at the
    /// latest by our receipt (a later login is not affected).
    Sub(&'a str),
}

/// How much later than our receipt of a `sid` logout a session may have been created (by a
/// replica whose clock is slightly ahead) and still end.
pub const SID_RECEIPT_MARGIN_SECS: i64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevocationKind {
    /// Sessions with this `sid` created at or before the entry's time (our receipt).
    Sid,
    /// Sessions of this `sub` created at or before the entry's time (`iat` plus the clock
    /// skew, at most our receipt).
    Sub,
    /// Sessions of this `sub` without a `sid`, created at or before the entry's time.
    SubWithoutSid,
}

impl RevocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sid => "sid",
            Self::Sub => "sub",
            Self::SubWithoutSid => "sub-nosid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sid" => Some(Self::Sid),
            "sub" => Some(Self::Sub),
            "sub-nosid" => Some(Self::SubWithoutSid),
            _ => None,
        }
    }
}

/// A cookie-mode back-channel logout, as recorded in the revocation list: sessions matching
/// `kind`/`value` created at or before `iat` (for `Sid`: our receipt time) are over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub kind: RevocationKind,
    pub value: String,
    pub iat: i64,
}

impl Revocation {
    /// The entries a validated logout token records.
    pub fn for_subject(who: Subject<'_>, iat: i64) -> Vec<Self> {
        let r = |kind, value: &str| Self { kind, value: value.to_owned(), iat };
        let by_sid = |sid: &str, received| Self { kind: RevocationKind::Sid, value: sid.to_owned(), iat: received };
        match who {
            Subject::Sid { sid, sub: Some(sub), received } => {
                vec![by_sid(sid, received), r(RevocationKind::SubWithoutSid, sub)]
            }
            Subject::Sid { sid, sub: None, received } => vec![by_sid(sid, received)],
            Subject::Sub(sub) => vec![r(RevocationKind::Sub, sub)],
        }
    }
}

/// A refresh-cache entry: the sealed new tokens, or the IdP's refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheRow {
    Sealed(Vec<u8>),
    Refused,
}

pub(super) async fn timed<T, E: std::fmt::Display>(f: impl Future<Output = Result<T, E>>) -> Result<T, StoreError> {
    timed_for(OP_TIMEOUT, f).await
}

pub(super) async fn timed_for<T, E: std::fmt::Display>(
    limit: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            metrics::counter!("bff_store_errors_total").increment(1);
            Err(StoreError::Backend(e.to_string()))
        }
        Err(_) => {
            metrics::counter!("bff_store_errors_total").increment(1);
            Err(StoreError::Timeout)
        }
    }
}
