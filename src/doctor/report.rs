//! One line of `oidc-bff doctor`'s report: a verdict, the check's name and a short explanation
//! that never holds a secret, a key, a token or an IdP's message (only its filtered `error`).

use std::fmt;

/// A check's verdict. Only `Fail` makes `doctor` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// The longest explanation printed (an IdP's answer can be 256 KiB).
pub const MAX_DETAIL: usize = 400;

/// `ok   discovery          issuer https://… matches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub status: Status,
    /// `discovery`, `jwks`, `client-credentials`, `cookie-budget`…
    pub check: &'static str,
    pub detail: String,
}

impl Line {
    /// `detail` as it will be printed: control characters (terminal escapes an IdP could put
    /// in what it advertises) replaced, and at most [`MAX_DETAIL`] characters.
    pub fn new(status: Status, check: &'static str, detail: impl Into<String>) -> Self {
        let detail: String = detail.into();
        let mut clean: String =
            detail.chars().take(MAX_DETAIL).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect();
        if detail.chars().nth(MAX_DETAIL).is_some() {
            clean.push('…');
        }
        Self { status, check, detail: clean }
    }

    pub fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::Ok, check, detail)
    }

    pub fn warn(check: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::Warn, check, detail)
    }

    pub fn fail(check: &'static str, detail: impl Into<String>) -> Self {
        Self::new(Status::Fail, check, detail)
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4} {:<18} {}", self.status.as_str(), self.check, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_hold_no_control_characters_and_are_bounded() {
        let hostile = Line::fail("dpop", "lists \u{1b}]52;c;cGF5bG9hZA==\u{7}ES384\r\n");
        assert!(!hostile.to_string().chars().any(char::is_control), "{hostile}");
        assert!(hostile.detail.contains("ES384"));
        let long = Line::warn("jwks", "x".repeat(100_000));
        assert_eq!(long.detail.chars().count(), MAX_DETAIL + 1);
        assert_eq!(Line::ok("clock", "fine").detail, "fine");
    }
}
