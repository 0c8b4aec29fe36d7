//! Secret-bearing newtypes. Tokens, client secrets and keys live inside these so that a stray
//! `{:?}` or `tracing::debug!(?x)` can never print them (STYLE: "every secret a newtype").

use serde::{Deserialize, Serialize};
use std::fmt;
use subtle::ConstantTimeEq;

/// A string that must never be printed: a token, a client secret, a code.
/// No `PartialEq`: compare with [`Secret::ct_eq`].
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The only way to read the value; grep for it when auditing where secrets flow.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison, for values an attacker may probe byte by byte.
    pub fn ct_eq(&self, other: &str) -> bool {
        ct_eq(self.0.as_bytes(), other.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Constant-time byte comparison (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// `N` bytes from the OS CSPRNG (session ids, logout tokens, lock owners, keys).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use chacha20poly1305::aead::OsRng;
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut buf = [0u8; N];
    OsRng.fill_bytes(&mut buf);
    buf
}

/// `n` bytes from the OS CSPRNG, base64url without padding (state, nonce, PKCE verifier).
pub fn random_urlsafe(n: usize) -> String {
    use base64::Engine;
    use chacha20poly1305::aead::OsRng;
    use chacha20poly1305::aead::rand_core::RngCore;
    let mut buf = vec![0u8; n];
    OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Lower-case hex (store keys and names; never for secrets in logs).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab]), "000fab");
        assert_ne!(random_bytes::<16>(), random_bytes::<16>());
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}
