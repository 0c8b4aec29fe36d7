//! What a session holds (SPEC §4). Serialized compactly (short field names) because it travels
//! in every request's Cookie header. The ID token's claims are not stored twice: they are the
//! payload of the stored ID token, which was verified at login and is sealed since.

use crate::secret::Secret;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    #[serde(rename = "s")]
    pub sub: String,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(rename = "i")]
    pub id_token: Secret,
    #[serde(rename = "a")]
    pub access_token: Secret,
    /// Unix seconds.
    #[serde(rename = "ae")]
    pub access_expires_at: i64,
    /// When the current access token was obtained (for the refresh margin rule).
    #[serde(rename = "ai")]
    pub access_issued_at: i64,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    #[serde(rename = "sc", default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(rename = "c")]
    pub created_at: i64,
    #[serde(rename = "x")]
    pub absolute_expires_at: i64,
    /// When this copy was sealed; the idle expiry slides from here.
    #[serde(rename = "l")]
    pub sealed_at: i64,
    /// The refresh-cache id of the refresh that produced the current tokens, so logout can
    /// delete that entry too.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub refreshed_from: Option<String>,
    /// Random per session; `GET /logout?sid=` must present it (SPEC §5).
    #[serde(rename = "o")]
    pub logout_token: Secret,
}

impl Session {
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

    /// The ID token's claims as the JSON object the IdP signed. `None` only if the stored token
    /// is malformed, which sealing makes impossible short of a bug.
    pub fn claims_json(&self) -> Option<Vec<u8>> {
        let payload = self.id_token.expose().split('.').nth(1)?;
        URL_SAFE_NO_PAD.decode(payload).ok()
    }

    /// The stored ID token's audiences, sorted (to compare with a refreshed token's).
    pub fn audience(&self) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Aud {
            aud: Option<crate::oidc::id_token::Audience>,
        }
        self.claims_json()
            .and_then(|c| serde_json::from_slice::<Aud>(&c).ok())
            .and_then(|a| a.aud)
            .map(crate::oidc::id_token::Audience::sorted)
            .unwrap_or_default()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        serde_json::from_slice(b).ok()
    }
}
