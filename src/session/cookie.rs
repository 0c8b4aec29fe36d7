//! The session cookie on the wire (SPEC §4): one cookie named exactly `__Host-bff` when the
//! sealed session fits, else chunks `__Host-bff.0`…`.7`. The first chunk starts with the chunk
//! count (`3.`) so that a stale higher chunk left by an older, larger session is ignored; all
//! chunks are one AEAD ciphertext, so a chunk from another session makes the whole fail.
//! Every write expires the names it does not use, whether or not the browser sent them.

use super::memo;
use super::model::{Loaded, Session};
use super::seal::{Keyring, OpenError, Purpose};
use crate::settings::{SameSite, SessionSettings};
use cookie::Cookie;
use http::HeaderMap;
use http::header::SET_COOKIE;
use std::sync::Arc;

pub const MAX_CHUNKS: usize = 8;
/// Browsers keep at least 4096 bytes per cookie including its name and attributes.
pub const CHUNK_BYTES: usize = 3800;
/// The largest sealed session that fits in `MAX_CHUNKS` cookies (the count prefix included).
pub const MAX_SEALED_BYTES: usize = MAX_CHUNKS * CHUNK_BYTES - 2;

/// Cookie names and attributes, fixed at start-up.
#[derive(Debug, Clone)]
pub struct CookieNames {
    pub session: String,
    pub chunks: [String; MAX_CHUNKS],
    /// `__Host-bff-tx.` or `bff-tx.`.
    pub tx_prefix: String,
    pub secure: bool,
    pub same_site: SameSite,
}

impl CookieNames {
    pub fn new(s: &SessionSettings) -> Self {
        let base = if s.secure { "__Host-bff" } else { "bff" };
        Self {
            session: base.to_owned(),
            chunks: std::array::from_fn(|i| format!("{base}.{i}")),
            tx_prefix: format!("{base}-tx."),
            secure: s.secure,
            same_site: s.same_site,
        }
    }

    fn build<'a>(&self, name: &'a str, value: String, max_age: i64, same_site: cookie::SameSite) -> Cookie<'a> {
        Cookie::build((name, value))
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .path("/")
            .max_age(cookie::time::Duration::seconds(max_age.max(0)))
            .build()
    }

    fn session_same_site(&self) -> cookie::SameSite {
        match self.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
        }
    }

    /// A Set-Cookie line for one cookie of this app; `max_age` 0 expires it.
    pub fn set_cookie(&self, name: &str, value: String, max_age: i64, lax: bool) -> String {
        let ss = if lax { cookie::SameSite::Lax } else { self.session_same_site() };
        self.build(name, value, max_age, ss).to_string()
    }

    /// Set-Cookie lines that store `sealed` and expire every other session name. A session
    /// above `MAX_SEALED_BYTES` cannot be stored: it is cleared instead (callers check first).
    pub fn write_session(&self, sealed: &str, max_age: i64) -> Vec<String> {
        if sealed.len() > MAX_SEALED_BYTES {
            tracing::error!(bytes = sealed.len(), "session too large for 8 cookie chunks; ending it");
            return self.clear_session();
        }
        let mut out = Vec::with_capacity(MAX_CHUNKS + 1);
        if sealed.len() <= CHUNK_BYTES {
            out.push(self.set_cookie(&self.session, sealed.to_owned(), max_age, false));
            out.extend(self.chunks.iter().map(|n| self.set_cookie(n, String::new(), 0, false)));
            return out;
        }
        let pieces: Vec<&str> =
            sealed.as_bytes().chunks(CHUNK_BYTES).filter_map(|c| std::str::from_utf8(c).ok()).collect();
        out.push(self.set_cookie(&self.session, String::new(), 0, false));
        for (i, name) in self.chunks.iter().enumerate() {
            match pieces.get(i) {
                Some(piece) if i == 0 => {
                    out.push(self.set_cookie(name, format!("{}.{piece}", pieces.len()), max_age, false))
                }
                Some(piece) => out.push(self.set_cookie(name, (*piece).to_owned(), max_age, false)),
                None => out.push(self.set_cookie(name, String::new(), 0, false)),
            }
        }
        out
    }

    /// Set-Cookie lines that expire every session name.
    pub fn clear_session(&self) -> Vec<String> {
        std::iter::once(&self.session)
            .chain(self.chunks.iter())
            .map(|n| self.set_cookie(n, String::new(), 0, false))
            .collect()
    }
}

/// The session cookie values found in a request, before opening.
#[derive(Debug, Default)]
pub struct SessionCookie<'a> {
    single: Option<&'a str>,
    chunks: [Option<&'a str>; MAX_CHUNKS],
    /// A session-cookie name occurred more than once (SPEC §4: the request is anonymous).
    duplicated: bool,
}

/// Why the session cookie a request carries gave no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unopened {
    /// No session cookie.
    Absent,
    /// A session-cookie name occurred more than once, or both the single and the chunked form
    /// came: anonymous, whichever would open. Not expired: a response can only expire the
    /// copies at `Path=/`, and one of them may be the user's own while the other was planted.
    Ambiguous,
    /// Sealed under a key this instance does not have (another replica's, mid key rotation):
    /// anonymous here, but not expired, since that replica may open it (SPEC §4).
    UnknownKey,
    /// Tampered, truncated, mixed chunks, or sealed for something else: expire it.
    Invalid,
}

impl Unopened {
    /// Should the response expire the session cookie?
    pub fn expire(self) -> bool {
        self == Self::Invalid
    }

    /// The anonymous outcome of a session cookie that gave no session, logged once here.
    pub fn into_loaded(self) -> Loaded {
        match self {
            Self::Ambiguous => tracing::warn!(
                "a session cookie name was sent more than once, or in both forms; treating the request as anonymous"
            ),
            Self::UnknownKey => {
                tracing::info!("session cookie sealed under a key this instance does not have; not expiring it")
            }
            Self::Invalid => tracing::info!("session cookie did not open (tampered, truncated or mixed)"),
            Self::Absent => {}
        }
        Loaded::Anonymous { stale_cookie: self.expire() }
    }

    fn from_seal(e: OpenError) -> Self {
        match e {
            OpenError::UnknownKey => Self::UnknownKey,
            OpenError::Invalid => Self::Invalid,
        }
    }
}

impl<'a> SessionCookie<'a> {
    /// Collect our session cookie(s) from all `Cookie` fields (HTTP/2 crumbs included), read
    /// leniently as bytes (`cookie_header`), without allocating.
    pub fn from_headers(names: &CookieNames, headers: &'a HeaderMap) -> Self {
        let mut found = Self::default();
        for (name, value) in crate::cookie_header::pairs(headers) {
            let slot = if name == names.session {
                &mut found.single
            } else if let Some(suffix) = name.strip_prefix(names.session.as_str()).and_then(|r| r.strip_prefix('.')) {
                match suffix.as_bytes() {
                    [d @ b'0'..=b'7'] => &mut found.chunks[usize::from(d - b'0')],
                    _ => continue,
                }
            } else {
                continue;
            };
            found.duplicated |= slot.is_some();
            *slot = Some(value);
        }
        found
    }

    /// Is a session cookie (single or first chunk) among `headers`' cookies? Names only: the
    /// access log asks this of every request, and reading the kilobytes of the value as text
    /// (as `from_headers` must) is most of the cost.
    pub fn present_in(names: &CookieNames, headers: &HeaderMap) -> bool {
        let (single, first_chunk) = (names.session.as_bytes(), names.chunks[0].as_bytes());
        crate::cookie_header::pieces(headers).any(|piece| {
            let name = crate::cookie_header::name_of(piece);
            name == single || name == first_chunk
        })
    }

    pub fn is_present(&self) -> bool {
        self.single.is_some() || self.chunks[0].is_some()
    }

    /// The sealed value, reassembled. A name sent twice, or both forms at once, is refused.
    pub fn sealed(&self) -> Result<std::borrow::Cow<'a, str>, Unopened> {
        if self.duplicated {
            return Err(Unopened::Ambiguous);
        }
        match (self.single, self.chunks[0]) {
            (Some(_), Some(_)) => Err(Unopened::Ambiguous),
            (Some(v), None) if !v.is_empty() => Ok(std::borrow::Cow::Borrowed(v)),
            (None, Some(first)) => {
                let (count, head) = first.split_once('.').ok_or(Unopened::Invalid)?;
                let count: usize = count.parse().map_err(|_| Unopened::Invalid)?;
                if !(2..=MAX_CHUNKS).contains(&count) {
                    return Err(Unopened::Invalid);
                }
                let mut joined = String::with_capacity(count * CHUNK_BYTES);
                joined.push_str(head);
                for c in &self.chunks[1..count] {
                    joined.push_str(c.ok_or(Unopened::Invalid)?);
                }
                Ok(std::borrow::Cow::Owned(joined))
            }
            (None, None) => Err(Unopened::Absent),
            (Some(_), None) => Err(Unopened::Invalid),
        }
    }

    /// Open the session cookie, or take the session this exact value opened to earlier on this
    /// thread (`memo`).
    pub fn open(&self, names: &CookieNames, keys: &Keyring) -> Result<Arc<Session>, Unopened> {
        let sealed = self.sealed()?;
        if let Some(s) = memo::get(keys.id(), &names.session, &sealed) {
            return Ok(s);
        }
        let session = Arc::new(Self::decrypt(names, keys, &sealed)?);
        memo::put(keys.id(), &names.session, &sealed, &session);
        Ok(session)
    }

    /// Open the session cookie without the memo: always decodes and decrypts.
    pub fn open_uncached(&self, names: &CookieNames, keys: &Keyring) -> Option<Session> {
        Self::decrypt(names, keys, &self.sealed().ok()?).ok()
    }

    fn decrypt(names: &CookieNames, keys: &Keyring, sealed: &str) -> Result<Session, Unopened> {
        let plain = keys.open_checked(Purpose::Session, &names.session, sealed).map_err(Unopened::from_seal)?;
        Session::from_bytes(&plain).ok_or(Unopened::Invalid)
    }

    /// The payload of a sealed value under `purpose` (a server-side session's id).
    pub fn open_as(&self, names: &CookieNames, keys: &Keyring, purpose: Purpose) -> Result<Vec<u8>, Unopened> {
        keys.open_checked(purpose, &names.session, &self.sealed()?).map_err(Unopened::from_seal)
    }
}

pub fn seal_session(names: &CookieNames, keys: &Keyring, session: &Session) -> String {
    session.seal(keys, Purpose::Session, &names.session)
}

/// Append Set-Cookie lines to a response's headers.
pub fn append_set_cookies(headers: &mut HeaderMap, lines: impl IntoIterator<Item = String>) {
    for line in lines {
        if let Ok(v) = http::HeaderValue::try_from(line) {
            headers.append(SET_COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests;
