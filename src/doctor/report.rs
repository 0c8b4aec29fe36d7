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

/// `ok   discovery          issuer https://… matches`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub status: Status,
    /// `discovery`, `jwks`, `client-credentials`, `cookie-budget`…
    pub check: &'static str,
    pub detail: String,
}

impl Line {
    pub fn new(status: Status, check: &'static str, detail: impl Into<String>) -> Self {
        Self { status, check, detail: detail.into() }
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
