//! `return_to` (SPEC §3.1): a same-origin relative path or an absolute URL on an allowed origin.
//! Checked on the value as given and on every percent-decoding of it, so `/%2F%2Fevil` gets
//! the same verdict as `//evil`.

use crate::error::{AppError, ErrorCode};
use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use url::Url;

/// The longest `return_to` accepted, as the transaction cookie stores it (JSON: a `"` takes two
/// bytes there): 2 KiB, so that 5 transaction cookies fit beside a full session (SPEC §4) and
/// each stays under a browser's 4 KiB per cookie.
pub const MAX_LEN: usize = 2048;

/// A validated `return_to`, kept exactly as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnTo(String);

impl ReturnTo {
    pub fn parse(raw: Option<&str>, allowed_origins: &[String]) -> Result<Self, AppError> {
        let raw = match raw {
            None | Some("") => return Ok(Self("/".to_owned())),
            Some(r) => r,
        };
        if raw.len() + raw.bytes().filter(|b| *b == b'"').count() > MAX_LEN {
            return Err(refuse("too long"));
        }
        // It ends up in a Location header as given: visible ASCII only (browsers
        // percent-encode the rest).
        if !raw.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(refuse("not visible ASCII"));
        }
        let mut current: Cow<'_, str> = Cow::Borrowed(raw);
        // Decoding three times covers double- and triple-encoding; a value that still decodes
        // further after that is refused outright.
        for _ in 0..4 {
            check(&current, allowed_origins)?;
            let decoded = percent_decode_str(&current).decode_utf8().map_err(|_| refuse("not UTF-8 once decoded"))?;
            if decoded == current {
                return Ok(Self(raw.to_owned()));
            }
            current = Cow::Owned(decoded.into_owned());
        }
        Err(refuse("encoded too many times"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn refuse(why: &'static str) -> AppError {
    tracing::warn!(reason = why, "return_to refused");
    ErrorCode::InvalidReturnTo.into()
}

fn check(v: &str, allowed_origins: &[String]) -> Result<(), AppError> {
    if v.chars().any(|c| c.is_control() || c == '\\') {
        return Err(refuse("control character or backslash"));
    }

    if v.starts_with('/') {
        if v.starts_with("//") {
            return Err(refuse("protocol-relative"));
        }
        return Ok(());
    }
    let url = Url::parse(v).map_err(|_| refuse("neither a path nor an absolute URL"))?;
    if !matches!(url.scheme(), "https" | "http") || !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("scheme or credentials not allowed"));
    }
    // Browsers and the url crate must agree on the origin: reject anything the parser had to
    // repair (whitespace, odd slashes) by requiring the serialization to start like the input.
    let origin = url.origin().ascii_serialization();
    if !allowed_origins.contains(&origin) || !v.to_ascii_lowercase().starts_with(&origin) {
        return Err(refuse("origin not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOWED: &[&str] = &["https://spa.example.com"];

    fn parse(v: &str) -> Result<ReturnTo, AppError> {
        let allowed: Vec<String> = ALLOWED.iter().map(|s| s.to_string()).collect();
        ReturnTo::parse(Some(v), &allowed)
    }

    #[test]
    fn hostile_values_are_refused() {
        let hostile = [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "http://evil.example/",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "%2F%2Fevil.example",
            "/%5Cevil.example",
            "/%255C%255Cevil.example",
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "/ok\r\nSet-Cookie: x=y",
            "/ok%0d%0aSet-Cookie:%20x=y",
            "/\tevil",
            "https://spa.example.com@evil.example/",
            "https://user:pw@spa.example.com/",
            "https://spa.example.com.evil.example/",
            "evil.example",
            "///evil.example",
            "/%2525252F",
        ];
        for h in hostile {
            assert_eq!(parse(h).map_err(|e| e.code), Err(ErrorCode::InvalidReturnTo), "{h:?} was accepted");
        }
    }

    #[test]
    fn same_origin_paths_and_allowed_origins_pass() {
        for ok in ["/", "/orders?id=3#top", "/a/b%20c", "https://spa.example.com/app"] {
            assert_eq!(parse(ok).map(|r| r.0), Ok(ok.to_owned()));
        }
        assert_eq!(ReturnTo::parse(None, &[]).map(|r| r.0), Ok("/".to_owned()));
    }

    #[test]
    fn length_is_measured_as_the_transaction_cookie_stores_it() {
        assert!(parse(&format!("/{}", "a".repeat(MAX_LEN - 1))).is_ok());
        assert!(parse(&format!("/{}", "a".repeat(MAX_LEN))).is_err());
        // A `"` takes two bytes in the transaction's JSON.
        assert!(parse(&format!("/{}", "\"".repeat(MAX_LEN / 2 - 1))).is_ok());
        assert!(parse(&format!("/{}", "\"".repeat(MAX_LEN / 2))).is_err());
    }
}
