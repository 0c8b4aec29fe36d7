//! One line of `oidc-bff doctor`'s report: a verdict, the check's name and a short explanation
//! that never holds a secret, a key, a token or an IdP's error description (only its filtered
//! `error`). What an IdP advertises may appear (an issuer, a parse diagnostic quoting a value):
//! every explanation is cleaned of control and invisible formatting characters and bounded.

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

/// Characters never printed: controls (terminal escapes) and the invisible formatting ones
/// that could make a line read as something else (bidirectional overrides, zero-width marks).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// The longest explanation printed (an IdP's answer can be 256 KiB).
pub const MAX_DETAIL: usize = 400;

/// `ok   discovery          issuer https://… matches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    status: Status,
    /// `discovery`, `jwks`, `client-credentials`, `cookie-budget`…
    check: &'static str,
    /// Only ever set by `new`, which cleans it.
    detail: String,
}

impl Line {
    /// `detail` as it will be printed: control characters (terminal escapes an IdP could put
    /// in what it advertises) replaced, and at most [`MAX_DETAIL`] characters.
    pub fn new(status: Status, check: &'static str, detail: impl Into<String>) -> Self {
        let detail: String = detail.into();
        let mut clean: String =
            detail.chars().take(MAX_DETAIL).map(|c| if hidden(c) { '\u{FFFD}' } else { c }).collect();
        if detail.chars().nth(MAX_DETAIL).is_some() {
            clean.push('…');
        }
        Self { status, check, detail: clean }
    }

    /// The same line with `who: ` before its explanation (several providers).
    pub fn prefixed(self, who: &str) -> Self {
        Self::new(self.status, self.check, format!("{who}: {}", self.detail))
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
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
        let hostile = Line::fail("dpop", "lists \u{1b}]52;c;cGF5bG9hZA==\u{7}ES384\r\n\u{202E}gpj.exe\u{200B}");
        assert!(!hostile.to_string().chars().any(hidden), "{hostile}");
        assert!(!hostile.clone().prefixed("p\u{202E}").to_string().chars().any(hidden));
        assert!(hostile.detail().contains("ES384"));
        let long = Line::warn("jwks", "x".repeat(100_000));
        assert_eq!(long.detail.chars().count(), MAX_DETAIL + 1);
        assert_eq!(Line::ok("clock", "fine").detail, "fine");
    }
}
