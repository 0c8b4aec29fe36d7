//! Authenticated encryption of everything the BFF hands the browser (SPEC §4).
//!
//! XChaCha20-Poly1305 (192-bit random nonces: no nonce-collision budget to manage however many
//! cookies a fleet seals) under per-purpose subkeys derived with HKDF-SHA256 from each
//! configured key. Format, base64url without padding:
//! `version (1) ‖ key id (4) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`.
//! The key id is the first 4 bytes of SHA-256 over the key, never its list position, so keys
//! can be reordered. The associated data binds the version, key id, purpose and the cookie's
//! name: a value moved to another cookie name does not open.
//!
//! Entries replicas share (the refresh cache) are not sealed with a session key at all: their
//! ids and keys come from the secret they answer (`shared_id`, `seal_shared`), so a key
//! rotation caught mid-rollout never splits them (SPEC §4).

use crate::settings::KeyMaterial;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

const VERSION: u8 = 1;
/// The same format for a plaintext that builds older than this one would misread: a session
/// holding a DPoP key (SPEC §3.6). Those builds refuse the version, so during a rollout or a
/// rollback such a session is anonymous there — never silently stripped of its key and served
/// as a bearer session. Part of the associated data, like `VERSION`: it cannot be changed.
const VERSION_EXTENDED: u8 = 2;
const KID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Why a sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key id this instance does not have: another replica may have it (a key
    /// rotation mid-rollout), so the value is not ours to expire.
    UnknownKey,
    /// Malformed, truncated, tampered, moved to another name or purpose, or not ours at all.
    Invalid,
}

/// What a sealed value is for; each purpose has its own subkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Session,
    Tx,
    /// The cookie of a server-side session: only its random id.
    SessionId,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Session => b"session",
            Self::Tx => b"tx",
            Self::SessionId => b"session-id",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

struct KeyEntry {
    kid: [u8; KID_LEN],
    ciphers: [XChaCha20Poly1305; 3],
}

/// The configured keys, each expanded into one cipher per purpose. The first key seals.
pub struct Keyring {
    keys: Vec<KeyEntry>,
    /// Unique per keyring built in this process: what `memo` entries are bound to.
    id: u64,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys, [redacted])", self.keys.len())
    }
}

impl Keyring {
    /// `keys` must not be empty (settings validation guarantees it).
    pub fn new(keys: &[KeyMaterial]) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                let digest = Sha256::digest(k.0);
                let mut kid = [0u8; KID_LEN];
                kid.copy_from_slice(&digest[..KID_LEN]);
                let hk = Hkdf::<Sha256>::new(Some(b"oidc-bff/v1"), &k.0);
                let cipher = |p: Purpose| {
                    let mut sub = [0u8; 32];
                    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
                    let _ = hk.expand(p.label(), &mut sub);
                    XChaCha20Poly1305::new(&sub.into())
                };
                KeyEntry { kid, ciphers: [cipher(Purpose::Session), cipher(Purpose::Tx), cipher(Purpose::SessionId)] }
            })
            .collect();
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self { keys, id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed) }
    }

    /// This keyring's process-unique id (see `session::memo`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Run `f` with the associated data for (`kid`, `purpose`, `name`), built on the stack:
    /// this is on every request's path.
    fn with_aad<R>(version: u8, kid: &[u8], purpose: Purpose, name: &str, f: impl FnOnce(&[u8]) -> R) -> R {
        let label = purpose.label();
        let len = 1 + kid.len() + label.len() + 1 + name.len();
        let mut stack = [0u8; 128];
        let mut heap = Vec::new();
        let buf: &mut [u8] = if len <= stack.len() {
            &mut stack[..len]
        } else {
            heap.resize(len, 0);
            &mut heap
        };
        buf[0] = version;
        let mut at = 1;
        for part in [kid, label, &[0u8][..], name.as_bytes()] {
            buf[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        f(buf)
    }

    /// Seal `plaintext` for the cookie (or cache entry) called `name`.
    pub fn seal(&self, purpose: Purpose, name: &str, plaintext: &[u8]) -> String {
        self.seal_version(VERSION, purpose, name, plaintext)
    }

    /// [`Self::seal`] for a plaintext older builds must not open (`VERSION_EXTENDED`).
    pub fn seal_extended(&self, purpose: Purpose, name: &str, plaintext: &[u8]) -> String {
        self.seal_version(VERSION_EXTENDED, purpose, name, plaintext)
    }

    fn seal_version(&self, version: u8, purpose: Purpose, name: &str, plaintext: &[u8]) -> String {
        let Some(key) = self.keys.first() else {
            return String::new();
        };
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(version);
        out.extend_from_slice(&key.kid);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let cipher = &key.ciphers[purpose.index()];
        // Encryption with a valid key and in-memory buffers cannot fail.
        let tag = Self::with_aad(version, &key.kid, purpose, name, |aad| {
            cipher.encrypt_in_place_detached(&nonce, aad, &mut out[HEADER_LEN..])
        });
        match tag {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => return String::new(),
        }
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Open a sealed value; `None` for anything that is not an intact value sealed by one of
    /// our keys for this purpose and name.
    pub fn open(&self, purpose: Purpose, name: &str, sealed: &str) -> Option<Vec<u8>> {
        self.open_checked(purpose, name, sealed).ok()
    }

    /// Open a sealed value, telling a key id this keyring does not have (another replica's
    /// newer key, mid-rollout: SPEC §4) from a value that fails under a key we have. Decrypts in
    /// place in the decoded buffer.
    pub fn open_checked(&self, purpose: Purpose, name: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let mut raw = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| OpenError::Invalid)?;
        if raw.len() < HEADER_LEN + TAG_LEN || !matches!(raw[0], VERSION | VERSION_EXTENDED) {
            return Err(OpenError::Invalid);
        }
        let mut kid = [0u8; KID_LEN];
        kid.copy_from_slice(&raw[1..1 + KID_LEN]);
        if !self.keys.iter().any(|k| k.kid == kid) {
            return Err(OpenError::UnknownKey);
        }
        let mut nonce = XNonce::default();
        nonce.copy_from_slice(&raw[1 + KID_LEN..HEADER_LEN]);
        let end = raw.len() - TAG_LEN;
        let mut tag = Tag::default();
        tag.copy_from_slice(&raw[end..]);
        let opened = Self::with_aad(raw[0], &kid, purpose, name, |aad| {
            // The tag is checked before any byte is decrypted, so a failed attempt leaves the
            // buffer as it was for the next candidate key.
            self.keys.iter().filter(|k| k.kid == kid).any(|k| {
                k.ciphers[purpose.index()]
                    .decrypt_in_place_detached(&nonce, aad, &mut raw[HEADER_LEN..end], &tag)
                    .is_ok()
            })
        });
        if !opened {
            return Err(OpenError::Invalid);
        }
        raw.copy_within(HEADER_LEN..end, 0);
        raw.truncate(end - HEADER_LEN);
        Ok(raw)
    }
}

/// What a shared id or entry key is for (SPEC §4): each its own label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedLabel {
    /// The refresh-cache entry (and refresh lock) of a refresh token.
    RefreshCache,
    /// The exchanged token (and exchange lock) of one session and route (SPEC §6.2).
    ExchangeCache,
    /// The access token an exchanged token was obtained from (not a secret that opens anything:
    /// a cached token is used only by a session that still holds that access token).
    ExchangeSubject,
    /// The routing id of a session's live events (SPEC §5): of its `logout_token`, never the
    /// value, and of its provider-scoped `sid` and `sub`.
    Events,
}

impl SharedLabel {
    fn id_label(self) -> &'static [u8] {
        match self {
            Self::RefreshCache => b"oidc-bff/v1/refresh-cache-id",
            Self::ExchangeCache => b"oidc-bff/v1/exchange-cache-id",
            Self::ExchangeSubject => b"oidc-bff/v1/exchange-subject",
            Self::Events => b"oidc-bff/v1/events-route",
        }
    }

    fn key_label(self) -> &'static [u8] {
        match self {
            Self::RefreshCache => b"oidc-bff/v1/refresh-cache-entry-key",
            Self::ExchangeCache => b"oidc-bff/v1/exchange-cache-entry-key",
            // Never a sealing key; a distinct label all the same.
            Self::ExchangeSubject => b"oidc-bff/v1/exchange-subject-key",
            Self::Events => b"oidc-bff/v1/events-route-key",
        }
    }
}

/// The id replicas share for what `secret` names (a refresh token's cache entry and lock): a
/// labelled SHA-256 of a secret every replica sees alike, never derived from a session key, so
/// that replicas holding different keys mid-rotation (SPEC §4) still meet at one entry and one
/// lock, and never both spend one refresh token. It reveals nothing of the secret (a token of
/// at least 128 random bits), and opens nothing: entries are sealed under another label.
pub fn shared_id(label: SharedLabel, secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.id_label());
    h.update([0]);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// [`shared_id`] of several values at once (a session's `logout_token` and a route): each is
/// length-prefixed, so no two lists hash alike.
pub fn shared_id_of(label: SharedLabel, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.id_label());
    h.update([0]);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn shared_cipher(label: SharedLabel, secret: &[u8]) -> Option<XChaCha20Poly1305> {
    let hk = Hkdf::<Sha256>::new(Some(b"oidc-bff/v1"), secret);
    let mut k = [0u8; 32];
    hk.expand(label.key_label(), &mut k).ok()?;
    Some(XChaCha20Poly1305::new(&k.into()))
}

/// Seal a shared entry under a key derived (HKDF) from `secret` and the label: only a request
/// that holds the secret can read it, on any replica, whatever session keys it has. `id` (the
/// entry's name) is bound as associated data: an entry cannot be moved.
pub fn seal_shared(label: SharedLabel, secret: &str, id: &[u8; 32], plaintext: &[u8]) -> Option<Vec<u8>> {
    seal_shared_bytes(label, secret.as_bytes(), id, plaintext)
}

pub fn open_shared(label: SharedLabel, secret: &str, id: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    open_shared_bytes(label, secret.as_bytes(), id, sealed)
}

/// [`seal_shared`] under a secret that is not text (a session's raw `logout_token`).
pub fn seal_shared_bytes(label: SharedLabel, secret: &[u8], id: &[u8; 32], plaintext: &[u8]) -> Option<Vec<u8>> {
    let cipher = shared_cipher(label, secret)?;
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    out.extend(cipher.encrypt(&nonce, Payload { msg: plaintext, aad: id }).ok()?);
    Some(out)
}

pub fn open_shared_bytes(label: SharedLabel, secret: &[u8], id: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let cipher = shared_cipher(label, secret)?;
    let mut nonce = XNonce::default();
    nonce.copy_from_slice(&sealed[..NONCE_LEN]);
    cipher.decrypt(&nonce, Payload { msg: &sealed[NONCE_LEN..], aad: id }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seeds: &[u8]) -> Keyring {
        Keyring::new(&seeds.iter().map(|s| KeyMaterial([*s; 32])).collect::<Vec<_>>())
    }

    #[test]
    fn round_trips_and_binds_name_and_purpose() {
        let r = ring(&[1]);
        let s = r.seal(Purpose::Session, "__Host-bff", b"hello");
        assert_eq!(r.open(Purpose::Session, "__Host-bff", &s).as_deref(), Some(&b"hello"[..]));
        assert_eq!(r.open(Purpose::Session, "bff", &s), None);
        assert_eq!(r.open(Purpose::Tx, "__Host-bff", &s), None);
    }

    #[test]
    fn an_extended_value_opens_here_under_its_own_version_only() {
        let r = ring(&[1]);
        let s = r.seal_extended(Purpose::Session, "__Host-bff", b"with a key");
        assert_eq!(r.open(Purpose::Session, "__Host-bff", &s).as_deref(), Some(&b"with a key"[..]));
        let mut raw = URL_SAFE_NO_PAD.decode(&s).unwrap_or_default();
        assert_eq!(raw[0], VERSION_EXTENDED);
        // Relabelled as the older version (what older builds would open): the tag fails.
        raw[0] = VERSION;
        assert_eq!(
            r.open_checked(Purpose::Session, "__Host-bff", &URL_SAFE_NO_PAD.encode(&raw)),
            Err(OpenError::Invalid)
        );
    }

    #[test]
    fn shared_entries_open_only_with_their_secret_and_ids_do_not_depend_on_keys() {
        let label = SharedLabel::RefreshCache;
        let id = shared_id(label, "rt-1");
        let sealed = seal_shared(label, "rt-1", &id, b"tokens").unwrap_or_default();
        assert_eq!(open_shared(label, "rt-1", &id, &sealed).as_deref(), Some(&b"tokens"[..]));
        assert!(open_shared(label, "rt-2", &id, &sealed).is_none());
        assert!(open_shared(label, "rt-1", &shared_id(label, "rt-2"), &sealed).is_none());
        assert_ne!(shared_id(label, "rt-1"), shared_id(label, "rt-2"));
        // Not the plain SHA-256 of the token, which anyone could link to it.
        assert_ne!(shared_id(label, "rt-1"), <[u8; 32]>::from(Sha256::digest(b"rt-1")));
    }

    #[test]
    fn ids_of_several_parts_do_not_collide_across_boundaries_or_labels() {
        let l = SharedLabel::ExchangeCache;
        assert_ne!(shared_id_of(l, &[b"ab", b"c"]), shared_id_of(l, &[b"a", b"bc"]));
        assert_ne!(shared_id_of(l, &[b"a"]), shared_id_of(SharedLabel::ExchangeSubject, &[b"a"]));
        assert_eq!(shared_id_of(l, &[b"a", b"b"]), shared_id_of(l, &[b"a", b"b"]));
    }

    #[test]
    fn rotation_first_seals_all_open() {
        let old = ring(&[1]);
        let sealed = old.seal(Purpose::Session, "n", b"x");
        assert!(ring(&[2, 1]).open(Purpose::Session, "n", &sealed).is_some());
        assert!(ring(&[2]).open(Purpose::Session, "n", &sealed).is_none());
        assert_eq!(ring(&[2]).open_checked(Purpose::Session, "n", &sealed), Err(OpenError::UnknownKey));
        assert_eq!(ring(&[2, 1]).open_checked(Purpose::Session, "other", &sealed), Err(OpenError::Invalid));
    }

    #[test]
    fn tampering_and_truncation_fail_closed() {
        let r = ring(&[1]);
        let s = r.seal(Purpose::Session, "n", b"payload");
        let mut bytes = s.clone().into_bytes();
        let mid = bytes.len() / 2;
        bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
        assert!(r.open(Purpose::Session, "n", &String::from_utf8_lossy(&bytes)).is_none());
        assert!(r.open(Purpose::Session, "n", &s[..s.len() - 3]).is_none());
        assert!(r.open(Purpose::Session, "n", "").is_none());
        assert!(r.open(Purpose::Session, "n", "!!!").is_none());
    }
}
