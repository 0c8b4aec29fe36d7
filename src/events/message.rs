//! What happens to a session, as carried between instances (SPEC §5): a compact JSON message of
//! at most [`MAX_MESSAGE_BYTES`] naming the session by a routing id, never by a token or a
//! session id. Routing ids are made by the session code (`session::live`) from secrets every
//! replica sees alike; here they are opaque.

use crate::store::RevocationKind;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// An opaque 32-byte routing id: which session (or which `sid`/`sub`) an event is about.
pub type RouteId = [u8; 32];

/// The largest message accepted from the store's channel.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// The wire format's version: messages of another version are ignored (a mixed fleet).
const VERSION: u8 = 1;

/// Why a session ended, as `/session/events` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Logout,
    Backchannel,
    Revoked,
    Expired,
    RefreshFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Backchannel => "backchannel",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::RefreshFailed => "refresh_failed",
        }
    }
}

/// One rule of a back-channel logout: the sessions whose `kind` id is `id` and that were
/// created at or before `by` are over (as `store::Revocation`, with the id hashed) — and, when
/// `sub` is set, whose `sub` id is that too (server-side stores delete a `sid` only with the
/// token's `sub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    pub kind: RevocationKind,
    pub id: RouteId,
    pub by: i64,
    pub sub: Option<RouteId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The session's tokens were refreshed; the new access token expires at `expires_at`.
    Refreshed {
        session: RouteId,
        expires_at: i64,
    },
    Ended {
        session: RouteId,
        reason: Reason,
    },
    /// An IdP's logout token: every session matching one of the rules is over.
    Backchannel {
        matches: Vec<Match>,
    },
}

/// The JSON form. Ids are base64url (43 characters).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    v: u8,
    /// The publishing instance: it has delivered its own events already.
    o: u64,
    #[serde(borrow)]
    e: WireEvent<'a>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
enum WireEvent<'a> {
    Refreshed {
        r: &'a str,
        x: i64,
    },
    Ended {
        r: &'a str,
        why: Reason,
    },
    Backchannel {
        #[serde(borrow)]
        m: Vec<WireMatch<'a>>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMatch<'a> {
    k: &'a str,
    r: &'a str,
    by: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<&'a str>,
}

fn id_text(id: &RouteId) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

fn id_of(text: &str) -> Option<RouteId> {
    let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
    RouteId::try_from(bytes).ok()
}

impl Event {
    /// The message for the store's channel, from instance `origin`.
    pub fn encode(&self, origin: u64) -> String {
        let ids: Vec<(String, Option<String>)> = match self {
            Self::Refreshed { session, .. } | Self::Ended { session, .. } => vec![(id_text(session), None)],
            Self::Backchannel { matches } => {
                matches.iter().map(|m| (id_text(&m.id), m.sub.as_ref().map(id_text))).collect()
            }
        };
        let first = ids.first().map(|(r, _)| r.as_str()).unwrap_or_default();
        let e = match self {
            Self::Refreshed { expires_at, .. } => WireEvent::Refreshed { r: first, x: *expires_at },
            Self::Ended { reason, .. } => WireEvent::Ended { r: first, why: *reason },
            Self::Backchannel { matches } => WireEvent::Backchannel {
                m: matches
                    .iter()
                    .zip(&ids)
                    .map(|(m, (r, s))| WireMatch { k: m.kind.as_str(), r, by: m.by, s: s.as_deref() })
                    .collect(),
            },
        };
        serde_json::to_string(&Wire { v: VERSION, o: origin, e }).unwrap_or_default()
    }

    /// A message from the store's channel and its origin; `None` for anything malformed,
    /// oversized or of another version.
    pub fn decode(text: &str) -> Option<(u64, Self)> {
        if text.len() > MAX_MESSAGE_BYTES {
            return None;
        }
        let w: Wire<'_> = serde_json::from_str(text).ok()?;
        if w.v != VERSION {
            return None;
        }
        let event = match w.e {
            WireEvent::Refreshed { r, x } => Self::Refreshed { session: id_of(r)?, expires_at: x },
            WireEvent::Ended { r, why } => Self::Ended { session: id_of(r)?, reason: why },
            WireEvent::Backchannel { m } => Self::Backchannel {
                matches: m
                    .iter()
                    .map(|m| {
                        let sub = match m.s {
                            Some(s) => Some(id_of(s)?),
                            None => None,
                        };
                        Some(Match { kind: RevocationKind::parse(m.k)?, id: id_of(m.r)?, by: m.by, sub })
                    })
                    .collect::<Option<_>>()?,
            },
        };
        Some((w.o, event))
    }

    /// The routing ids whose subscribers receive this event.
    pub fn routes(&self) -> impl Iterator<Item = &RouteId> {
        let (one, many) = match self {
            Self::Refreshed { session, .. } | Self::Ended { session, .. } => (Some(session), &[][..]),
            Self::Backchannel { matches } => (None, &matches[..]),
        };
        one.into_iter().chain(many.iter().map(|m| &m.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_the_wire_and_nothing_else_is_accepted() {
        let events = [
            Event::Refreshed { session: [1; 32], expires_at: 1_700_000_000 },
            Event::Ended { session: [2; 32], reason: Reason::RefreshFailed },
            Event::Backchannel {
                matches: vec![
                    Match { kind: RevocationKind::Sid, id: [3; 32], by: 5, sub: Some([9; 32]) },
                    Match { kind: RevocationKind::SubWithoutSid, id: [4; 32], by: 6, sub: None },
                ],
            },
        ];
        for e in events {
            let text = e.encode(42);
            assert!(text.len() < 400, "{text}");
            assert_eq!(Event::decode(&text), Some((42, e)));
        }
        let good = Event::Ended { session: [2; 32], reason: Reason::Logout }.encode(1);
        for bad in [
            good.replace("\"v\":1", "\"v\":2"),
            good.replace("logout", "teleported"),
            good.replace("\"o\":1", "\"o\":1,\"x\":1"),
            good.replace(&id_text(&[2; 32]), "AAAA"),
            format!("{good:<2000}"),
            "{}".into(),
            "not json".into(),
        ] {
            assert_eq!(Event::decode(&bad), None, "{bad}");
        }
    }
}
