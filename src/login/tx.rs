//! Login-transaction cookies (SPEC §3.1): one per started login, named after a hash of its
//! state, so logins in several tabs complete independently. SameSite=Lax (they must survive
//! the IdP's cross-site redirect), sealed with the `tx` subkey and the full cookie name as
//! associated data, valid 10 minutes from the sealed time, at most 5 at once. After a
//! successful login the cookie becomes a "done" marker holding only `return_to`.

use crate::secret::{Secret, ct_eq};
use crate::session::cookie::CookieNames;
use crate::session::seal::{Keyring, OpenError, Purpose};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const TX_LIFETIME_SECS: i64 = 600;
pub const MAX_LIVE: usize = 5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginTx {
    #[serde(rename = "s")]
    pub state: Secret,
    #[serde(rename = "n")]
    pub nonce: Secret,
    #[serde(rename = "v")]
    pub verifier: Secret,
    #[serde(rename = "r")]
    pub return_to: String,
    #[serde(rename = "t")]
    pub created_at: i64,
    #[serde(rename = "d", default)]
    pub done: bool,
    /// Server-side stores: the session this browser had when the login started (its row key,
    /// base64url), deleted when the login completes.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// With `dpop = true`: the session-to-be's DPoP private scalar, base64url (SPEC §3.6).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub dpop: Option<Secret>,
    /// The provider the login started at, when not "default" (SPEC §3.7): the callback is
    /// checked against that provider only.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

impl LoginTx {
    pub fn expires_at(&self) -> i64 {
        self.created_at + TX_LIFETIME_SECS
    }

    /// The marker left after completion: no secrets, only where to send a returning visitor.
    pub fn into_done(self) -> Self {
        Self {
            nonce: Secret::default(),
            verifier: Secret::default(),
            done: true,
            replaces: None,
            dpop: None,
            provider: None,
            ..self
        }
    }
}

/// `<prefix><first 11 chars of base64url(SHA-256(state))>`.
pub fn tx_name(names: &CookieNames, state: &str) -> String {
    let hash = URL_SAFE_NO_PAD.encode(Sha256::digest(state.as_bytes()));
    format!("{}{}", names.tx_prefix, &hash[..11])
}

/// Cookies of exactly our transaction-name shape (`prefix` + 11 base64url characters), at
/// most `MAX_SEEN`: a client cannot make us open or echo arbitrary names.
/// Read leniently as bytes (`cookie_header`): a cookie that is not ASCII does not hide them.
fn tx_cookies<'h>(names: &'h CookieNames, headers: &'h HeaderMap) -> impl Iterator<Item = (&'h str, &'h str)> {
    let prefix = names.tx_prefix.as_str();
    crate::cookie_header::pairs(headers)
        .filter(move |(n, _)| {
            n.strip_prefix(prefix).is_some_and(|h| {
                h.len() == 11 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
        })
        .take(MAX_SEEN)
}

/// More transaction cookies than this in one request are ignored.
const MAX_SEEN: usize = 16;

fn open(keys: &Keyring, name: &str, value: &str, now: i64) -> Result<LoginTx, OpenError> {
    let plain = keys.open_checked(Purpose::Tx, name, value)?;
    let tx: LoginTx = serde_json::from_slice(&plain).map_err(|_| OpenError::Invalid)?;
    if now < tx.expires_at() && tx.created_at <= now + 60 { Ok(tx) } else { Err(OpenError::Invalid) }
}

/// The live transaction for `state`, if this browser holds one.
pub fn find(
    names: &CookieNames,
    keys: &Keyring,
    headers: &HeaderMap,
    state: &str,
    now: i64,
) -> Option<(String, LoginTx)> {
    let name = tx_name(names, state);
    let (_, value) = tx_cookies(names, headers).find(|(n, _)| *n == name)?;
    let tx = open(keys, &name, value, now).ok()?;
    ct_eq(tx.state.expose().as_bytes(), state.as_bytes()).then_some((name, tx))
}

pub fn seal(names: &CookieNames, keys: &Keyring, name: &str, tx: &LoginTx, now: i64) -> String {
    let value = keys.seal(Purpose::Tx, name, &serde_json::to_vec(tx).unwrap_or_default());
    names.set_cookie(name, value, tx.expires_at() - now, true)
}

pub fn expire(names: &CookieNames, name: &str) -> String {
    names.set_cookie(name, String::new(), 0, true)
}

/// Set-Cookie lines for a new transaction: the new cookie, plus expiry of every transaction
/// cookie that no longer opens and of the oldest live ones beyond `MAX_LIVE - 1`.
pub fn start(names: &CookieNames, keys: &Keyring, headers: &HeaderMap, tx: &LoginTx, now: i64) -> Vec<String> {
    let mut live: Vec<(String, i64)> = Vec::new();
    let mut out = Vec::new();
    for (name, value) in tx_cookies(names, headers) {
        match open(keys, name, value, now) {
            Ok(t) => live.push((name.to_owned(), t.created_at)),
            // Another replica's newer key (a rotation mid-rollout) may open it: leave it.
            Err(OpenError::UnknownKey) => {}
            Err(OpenError::Invalid) => out.push(expire(names, name)),
        }
    }
    live.sort_by_key(|(_, created)| std::cmp::Reverse(*created));
    live.dedup_by(|a, b| a.0 == b.0);
    for (name, _) in live.iter().skip(MAX_LIVE - 1) {
        out.push(expire(names, name));
    }
    let name = tx_name(names, tx.state.expose());
    out.push(seal(names, keys, &name, tx, now));
    out
}

/// Expire every transaction cookie the browser sent (logout).
pub fn expire_all(names: &CookieNames, headers: &HeaderMap) -> Vec<String> {
    tx_cookies(names, headers).map(|(n, _)| expire(names, n)).collect()
}

/// What a configuration can put in a transaction cookie beside the fields every login has, for
/// the cookie budget (SPEC §7 `doctor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxShape {
    /// A server-side store: the transaction records the session the browser had (`replaces`).
    pub server_side: bool,
    /// Some provider has `dpop = true`: the session-to-be's key travels in the cookie (§3.6).
    pub dpop: bool,
    /// The longest `[[providers]]` name; 0 with `[oidc]` alone (its logins record no name).
    pub provider_len: usize,
}

impl TxShape {
    /// Every field at its largest (SPEC §2: provider names have at most 32 characters).
    pub const LARGEST: Self = Self { server_side: true, dpop: true, provider_len: 32 };
}

/// `name=value` pairs are joined with "; ".
fn pair(name: usize, value: usize) -> usize {
    name + 1 + value + 2
}

/// The `name=value; ` pair of the largest transaction cookie of `shape`: the longest
/// `return_to` (a 2 KiB path), every optional field `shape` allows at its largest.
fn largest_tx_pair(names: &CookieNames, shape: TxShape) -> usize {
    let keys = Keyring::new(&[crate::settings::KeyMaterial([0; 32])]);
    let longest = "/".to_owned() + &"a".repeat(super::return_to::MAX_LEN - 1);
    let tx = LoginTx {
        state: Secret::new(crate::secret::random_urlsafe(32)),
        nonce: Secret::new(crate::secret::random_urlsafe(32)),
        verifier: Secret::new(crate::secret::random_urlsafe(32)),
        return_to: longest,
        created_at: i64::MAX,
        done: false,
        replaces: shape.server_side.then(|| URL_SAFE_NO_PAD.encode([0xffu8; 32])),
        dpop: shape.dpop.then(|| Secret::new(crate::oidc::dpop::DpopKey::generate().to_encoded())),
        provider: (shape.provider_len > 0).then(|| "p".repeat(shape.provider_len)),
    };
    let name = tx_name(names, tx.state.expose());
    pair(name.len(), keys.seal(Purpose::Tx, &name, &serde_json::to_vec(&tx).unwrap_or_default()).len())
}

/// The session's share of the largest `Cookie` header: 8 chunks holding the largest sealed
/// session (cookie mode), or the one cookie holding a sealed session id (a server-side store).
fn largest_session_pairs(names: &CookieNames, server_side: bool) -> usize {
    use crate::session::cookie::{CHUNK_BYTES, MAX_CHUNKS, MAX_SEALED_BYTES};
    if server_side {
        let keys = Keyring::new(&[crate::settings::KeyMaterial([0; 32])]);
        let id = [0u8; crate::session::server::ID_LEN];
        return pair(names.session.len(), keys.seal(Purpose::SessionId, &names.session, &id).len());
    }
    // Chunk 0 carries the count ("8.") before its piece.
    pair(names.chunks[0].len(), MAX_SEALED_BYTES.min(CHUNK_BYTES) + 2)
        + (1..MAX_CHUNKS).map(|i| pair(names.chunks[i].len(), CHUNK_BYTES)).sum::<usize>()
}

/// The longest `Cookie` header a configuration of this shape can make a browser send (SPEC §7
/// `doctor`'s cookie budget): its session cookie(s) and 5 live transaction cookies.
pub fn cookie_header_bytes(names: &CookieNames, shape: TxShape) -> usize {
    largest_session_pairs(names, shape.server_side) + MAX_LIVE * largest_tx_pair(names, shape)
}

/// The longest `Cookie` header this BFF can make a browser send (SPEC §4), whatever its
/// configuration: 8 session chunks holding the largest sealed session, and 5 live transaction
/// cookies, each with the longest `return_to`, the session id a server-side store records, a
/// DPoP key and a provider name. `server.max_header_bytes` must be at least this plus the rest
/// of a request head (`settings::MIN_MAX_HEADER_BYTES`).
pub fn largest_cookie_header(names: &CookieNames) -> usize {
    largest_session_pairs(names, false) + MAX_LIVE * largest_tx_pair(names, TxShape::LARGEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §3.6's key travels in the transaction cookie: what it costs there (docs/security.md
    /// "DPoP" quotes these figures).
    #[test]
    fn a_dpop_key_adds_under_70_bytes_to_a_transaction_cookie() {
        let keys = Keyring::new(&[crate::settings::KeyMaterial([2; 32])]);
        let tx = LoginTx {
            state: Secret::new(crate::secret::random_urlsafe(32)),
            nonce: Secret::new(crate::secret::random_urlsafe(32)),
            verifier: Secret::new(crate::secret::random_urlsafe(32)),
            return_to: "/".into(),
            created_at: 1_700_000_000,
            done: false,
            replaces: None,
            dpop: None,
            provider: None,
        };
        let sealed = |t: &LoginTx| {
            keys.seal(Purpose::Tx, "__Host-bff-tx.abcdefghijk", &serde_json::to_vec(t).unwrap_or_default()).len()
        };
        let with =
            LoginTx { dpop: Some(Secret::new(crate::oidc::dpop::DpopKey::generate().to_encoded())), ..tx.clone() };
        let (a, b) = (sealed(&tx), sealed(&with));
        eprintln!("transaction cookie value: {a} bytes, {b} with a DPoP key");
        assert!(b > a && b - a < 70, "{a} → {b}");
        assert!(!format!("{with:?}").contains(with.dpop.as_ref().map(|k| k.expose()).unwrap_or("-")));
    }

    #[test]
    fn the_smallest_accepted_max_header_bytes_holds_the_largest_cookie_header() {
        for secure in [true, false] {
            let names = CookieNames::new(&crate::settings::SessionSettings {
                store: crate::settings::StoreKind::Cookie,
                url: None,
                keys: vec![crate::settings::KeyMaterial([1; 32])],
                secure,
                same_site: crate::settings::SameSite::Strict,
                idle_timeout_secs: 60,
                absolute_timeout_secs: 60,
                cache_max_bytes: 1 << 20,
                events_warning_secs: 120,
            });
            let cookie = largest_cookie_header(&names);
            eprintln!("largest Cookie header (secure = {secure}): {cookie} bytes");
            // The request line (a 2 KiB path), `Cookie: ` and a browser's other fields.
            let rest_of_head = 8 * 1024;
            assert!(
                cookie + rest_of_head <= crate::settings::MIN_MAX_HEADER_BYTES,
                "{cookie} bytes of Cookie header do not fit in {}",
                crate::settings::MIN_MAX_HEADER_BYTES
            );
        }
    }
}
