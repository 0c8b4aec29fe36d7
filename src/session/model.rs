//! What a session holds (SPEC §4), and its compact binary form.
//!
//! The session travels in every request's Cookie header, so it is stored small (postcard, a
//! maintained serde binary format): JWTs are kept as their three *decoded* parts — a quarter
//! smaller than their base64url text, which the cookie's own base64 would otherwise encode a
//! second time — and the ID token's claims are not stored twice: `/session` shows the payload
//! of the stored ID token, which was verified at login and is sealed since.

use crate::oidc::dpop::DpopKey;
use crate::secret::{Secret, ct_eq};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::OnceLock;

/// A token as stored: a JWS compact serialization as its decoded parts, or an opaque string.
#[derive(Clone, Serialize, Deserialize)]
pub enum Token {
    // serde_bytes: one length-prefixed copy instead of a sequence of single bytes.
    Jws {
        #[serde(with = "serde_bytes")]
        header: Vec<u8>,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
        /// `Bearer <token>`, built the first time the proxy needs it. A token never changes
        /// once built (a refresh stores a new `Token`), so neither does this.
        #[serde(skip)]
        bearer: OnceLock<HeaderValue>,
    },
    Opaque {
        text: String,
        #[serde(skip)]
        bearer: OnceLock<HeaderValue>,
    },
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Token {
    /// Keep `s` as decoded JWS parts when that round-trips exactly, else as it is.
    pub fn new(s: &str) -> Self {
        let mut parts = s.split('.');
        if let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) {
            let decode = |x: &str| URL_SAFE_NO_PAD.decode(x).ok().filter(|d| URL_SAFE_NO_PAD.encode(d) == x);
            if let (Some(header), Some(payload), Some(signature)) = (decode(h), decode(p), decode(sig)) {
                return Self::Jws { header, payload, signature, bearer: OnceLock::new() };
            }
        }
        Self::Opaque { text: s.to_owned(), bearer: OnceLock::new() }
    }

    /// `Authorization: Bearer <token>` for the upstream, marked sensitive (never HPACK-indexed
    /// on HTTP/2 upstreams). Built once per token: the session memo shares it across requests.
    pub fn bearer(&self) -> Option<HeaderValue> {
        let (Self::Jws { bearer, .. } | Self::Opaque { bearer, .. }) = self;
        if let Some(h) = bearer.get() {
            return Some(h.clone());
        }
        let mut v = String::with_capacity(7 + self.compact_len());
        v.push_str("Bearer ");
        self.write_compact(&mut v);
        let mut h = HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()?;
        h.set_sensitive(true);
        Some(bearer.get_or_init(|| h).clone())
    }

    /// Append the token's text form to `out`.
    pub fn write_compact(&self, out: &mut String) {
        match self {
            Self::Jws { header, payload, signature, .. } => {
                URL_SAFE_NO_PAD.encode_string(header, out);
                out.push('.');
                URL_SAFE_NO_PAD.encode_string(payload, out);
                out.push('.');
                URL_SAFE_NO_PAD.encode_string(signature, out);
            }
            Self::Opaque { text, .. } => out.push_str(text),
        }
    }

    /// The token as sent to the IdP or an API.
    pub fn compact(&self) -> Secret {
        let mut s = String::with_capacity(self.compact_len());
        self.write_compact(&mut s);
        Secret::new(s)
    }

    pub fn compact_len(&self) -> usize {
        let b64 = |n: usize| (n * 4).div_ceil(3);
        match self {
            Self::Jws { header, payload, signature, .. } => {
                b64(header.len()) + b64(payload.len()) + b64(signature.len()) + 2
            }
            Self::Opaque { text, .. } => text.len(),
        }
    }

    /// The JWS payload (for an ID token: its claims as the IdP signed them).
    pub fn payload(&self) -> Option<&[u8]> {
        match self {
            Self::Jws { payload, .. } => Some(payload),
            Self::Opaque { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub sub: String,
    pub sid: Option<String>,
    pub id_token: Token,
    pub access_token: Token,
    /// Unix seconds.
    pub access_expires_at: i64,
    /// When the current access token was obtained (for the refresh margin rule).
    pub access_issued_at: i64,
    pub refresh_token: Option<Secret>,
    pub scope: Option<String>,
    pub created_at: i64,
    pub absolute_expires_at: i64,
    /// When this copy was sealed; the idle expiry slides from here.
    pub sealed_at: i64,
    /// The refresh-cache id of the refresh that produced the current tokens, so logout can
    /// delete that entry too.
    pub refreshed_from: Option<[u8; 32]>,
    /// Random per session; `GET /logout?sid=` must present it (SPEC §5).
    pub logout_token: LogoutToken,
    /// Where a server-side session is stored; `None` in cookie mode. Not serialized.
    #[serde(skip)]
    pub stored: Option<StoredRef>,
    /// The session's DPoP key (SPEC §3.6), when it was created with `dpop = true`. Stored after
    /// the fields above (`to_bytes`), so sessions sealed before DPoP existed still open.
    #[serde(skip)]
    pub dpop: Option<DpopKey>,
    /// The provider the session was created at (SPEC §3.7); `None` is "default". Stored as an
    /// extension, so single-provider sessions keep their form.
    #[serde(skip)]
    pub provider: Option<String>,
}

/// What may follow a session's fields in its stored form. Tags are postcard's variant
/// indexes: append only.
#[derive(Serialize, Deserialize)]
enum Extension {
    /// The DPoP private scalar.
    DpopKey([u8; 32]),
    /// The name of a provider other than "default".
    Provider(String),
}

/// A server-side session's row: SHA-256 of the cookie's id, and the version read.
#[derive(Clone, Default)]
pub struct StoredRef {
    pub key: [u8; 32],
    pub version: i64,
}

impl fmt::Debug for StoredRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredRef(v{})", self.version)
    }
}

/// 128 random bits, shown base64url-encoded in `bff_logout_url`.
#[derive(Clone, Serialize, Deserialize)]
pub struct LogoutToken([u8; 16]);

impl fmt::Debug for LogoutToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl LogoutToken {
    pub fn random() -> Self {
        Self(crate::secret::random_bytes())
    }

    pub fn write_encoded(&self, out: &mut String) {
        URL_SAFE_NO_PAD.encode_string(self.0, out);
    }

    pub fn encoded(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The raw secret, for ids and keys derived from it (SPEC §4: shared entries are named and
    /// sealed by what every replica sees alike, never by a session key).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time check of a presented `sid`.
    pub fn matches(&self, presented: &str) -> bool {
        URL_SAFE_NO_PAD.decode(presented).is_ok_and(|d| ct_eq(&d, &self.0))
    }
}

impl Session {
    /// The provider's name ("default" unless set).
    pub fn provider_name(&self) -> &str {
        self.provider.as_deref().unwrap_or(crate::settings::DEFAULT_PROVIDER)
    }

    pub fn idle_expires_at(&self, idle_timeout_secs: u64) -> i64 {
        self.sealed_at.saturating_add(idle_timeout_secs as i64)
    }

    /// The earlier of idle and absolute expiry.
    pub fn expires_at(&self, idle_timeout_secs: u64) -> i64 {
        self.idle_expires_at(idle_timeout_secs).min(self.absolute_expires_at)
    }

    pub fn is_live(&self, now: i64, idle_timeout_secs: u64) -> bool {
        now < self.expires_at(idle_timeout_secs)
    }

    /// Re-seal at most every min(60 s, idle/4) so a busy SPA does not pay for encryption on
    /// every request (SPEC §4).
    pub fn needs_reseal(&self, now: i64, idle_timeout_secs: u64) -> bool {
        let interval = (idle_timeout_secs / 4).min(60) as i64;
        now - self.sealed_at >= interval
    }

    /// The stored ID token's audiences, sorted (to compare with a refreshed token's).
    pub fn audience(&self) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Aud {
            aud: Option<crate::oidc::id_token::Audience>,
        }
        self.id_token
            .payload()
            .and_then(|c| serde_json::from_slice::<Aud>(c).ok())
            .and_then(|a| a.aud)
            .map(crate::oidc::id_token::Audience::sorted)
            .unwrap_or_default()
    }

    /// The session's fields, then each extension it has (a tag and its value).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = postcard::to_allocvec(self).unwrap_or_default();
        if let Some(key) = &self.dpop
            && let Ok(ext) = postcard::to_allocvec(&Extension::DpopKey(*key.scalar()))
        {
            out.extend_from_slice(&ext);
        }
        if let Some(name) = &self.provider
            && let Ok(ext) = postcard::to_allocvec(&Extension::Provider(name.clone()))
        {
            out.extend_from_slice(&ext);
        }
        out
    }

    /// Sealed for a cookie or a store row: a session with extensions in a format older builds
    /// refuse (`Keyring::seal_extended`), so none of them can open it without its key.
    pub fn seal(
        &self,
        keys: &crate::session::seal::Keyring,
        purpose: crate::session::seal::Purpose,
        name: &str,
    ) -> String {
        if self.dpop.is_some() || self.provider.is_some() {
            keys.seal_extended(purpose, name, &self.to_bytes())
        } else {
            keys.seal(purpose, name, &self.to_bytes())
        }
    }

    /// `None` for anything but the exact form `to_bytes` writes (an unknown or malformed
    /// extension included).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let (mut session, mut rest) = postcard::take_from_bytes::<Self>(b).ok()?;
        while !rest.is_empty() {
            let (ext, after) = postcard::take_from_bytes::<Extension>(rest).ok()?;
            match ext {
                Extension::DpopKey(scalar) if session.dpop.is_none() => {
                    session.dpop = Some(DpopKey::from_scalar(scalar)?)
                }
                Extension::DpopKey(_) => return None,
                // "default" is never written: its sessions carry no extension.
                Extension::Provider(name)
                    if session.provider.is_none() && name != crate::settings::DEFAULT_PROVIDER =>
                {
                    session.provider = Some(name)
                }
                Extension::Provider(_) => return None,
            }
            rest = after;
        }
        Some(session)
    }
}

/// The session a request carries, if any.
pub enum Loaded {
    /// No session. `stale_cookie` is true when a session cookie was sent but did not open, has
    /// expired or was revoked: the response should expire it.
    Anonymous { stale_cookie: bool },
    /// Shared with the per-thread memo in cookie mode: `Arc::make_mut` copies it only when a
    /// request changes it (refresh, re-seal).
    Live(std::sync::Arc<Session>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jws_tokens_round_trip_through_their_decoded_parts() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let t = Token::new(jwt);
        assert!(matches!(t, Token::Jws { .. }));
        assert_eq!(t.compact().expose(), jwt);
        assert_eq!(t.compact_len(), jwt.len());
        assert_eq!(t.payload(), Some(&br#"{"sub":"a"}"#[..]));
        for opaque in ["abc", "a.b", "a.b.c.d", "eyJh.e30.c2ln=", "not base64!.x.y"] {
            let t = Token::new(opaque);
            assert_eq!(t.compact().expose(), opaque);
        }
    }

    #[test]
    fn the_stored_form_is_unchanged_by_the_bearer_memo() {
        // Cookies and store rows sealed before the memo existed must still open: an opaque
        // token is variant 1 and its text, a JWS is variant 0 and its three byte strings.
        assert_eq!(postcard::to_allocvec(&Token::new("abc")).ok(), Some(vec![1, 3, b'a', b'b', b'c']));
        let jws = Token::new("e30.e30.c2ln");
        assert_eq!(postcard::to_allocvec(&jws).ok(), Some(vec![0, 2, b'{', b'}', 2, b'{', b'}', 3, b's', b'i', b'g']));
        assert_eq!(jws.bearer().as_ref().map(|h| h.as_bytes()), Some(&b"Bearer e30.e30.c2ln"[..]));
        assert!(jws.bearer().is_some_and(|h| h.is_sensitive()));
        let back: Token = postcard::from_bytes(&[1, 2, b'r', b't']).unwrap_or_else(|_| Token::new(""));
        assert_eq!(back.compact().expose(), "rt");
    }

    #[test]
    fn the_dpop_key_follows_the_fields_and_older_sessions_still_open() {
        let mut s = Session {
            sub: "alice".into(),
            sid: None,
            id_token: Token::new("e30.e30.c2ln"),
            access_token: Token::new("at"),
            access_expires_at: 2,
            access_issued_at: 1,
            refresh_token: None,
            scope: None,
            created_at: 1,
            absolute_expires_at: 3,
            sealed_at: 1,
            refreshed_from: None,
            logout_token: LogoutToken::random(),
            stored: None,
            dpop: None,
            provider: None,
        };
        let plain = s.to_bytes();
        assert!(Session::from_bytes(&plain).is_some_and(|back| back.dpop.is_none()));
        let key = DpopKey::generate();
        s.dpop = Some(key.clone());
        let with_key = s.to_bytes();
        // Exactly the older form, then the extension: a tag and the 32-byte scalar.
        assert_eq!(&with_key[..plain.len()], &plain[..]);
        assert_eq!(with_key.len(), plain.len() + 33);
        let back = Session::from_bytes(&with_key).and_then(|b| b.dpop);
        assert_eq!(back.as_ref().map(DpopKey::scalar), Some(key.scalar()));
        // Anything else after the fields is refused: junk, a second key, an invalid scalar.
        assert!(Session::from_bytes(&[&plain[..], &[7]].concat()).is_none());
        assert!(Session::from_bytes(&[&with_key[..], &with_key[plain.len()..]].concat()).is_none());
        let mut zero = plain.clone();
        zero.push(0);
        zero.extend_from_slice(&[0; 32]);
        assert!(Session::from_bytes(&zero).is_none());
        assert_eq!(format!("{:?}", s.dpop), "Some(DpopKey([redacted]))");
        // The provider follows too; "default" is never written, and only one name is read.
        s.provider = Some("partners".into());
        let both = s.to_bytes();
        assert_eq!(&both[..with_key.len()], &with_key[..]);
        assert_eq!(Session::from_bytes(&both).as_ref().map(Session::provider_name), Some("partners"));
        assert!(Session::from_bytes(&[&both[..], &both[with_key.len()..]].concat()).is_none());
        let named_default = postcard::to_allocvec(&Extension::Provider("default".into())).unwrap_or_default();
        assert!(Session::from_bytes(&[&with_key[..], &named_default[..]].concat()).is_none());
    }

    #[test]
    fn logout_token_matches_only_itself() {
        let t = LogoutToken::random();
        assert!(t.matches(&t.encoded()));
        assert!(!t.matches(&LogoutToken::random().encoded()));
        assert!(!t.matches("not-base64!"));
    }
}
