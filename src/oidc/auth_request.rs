//! The authorization request (SPEC §3.1): its secrets (state, nonce, PKCE verifier) and the URL
//! the browser is sent to.

use super::discovery::ProviderMetadata;
use crate::settings::OidcSettings;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use url::Url;

/// The secrets of one authorization request.
pub struct AuthRequest {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl AuthRequest {
    /// 256 bits each: above SPEC §3.1's 128-bit floor.
    pub fn new() -> Self {
        Self {
            state: crate::secret::random_urlsafe(32),
            nonce: crate::secret::random_urlsafe(32),
            verifier: crate::secret::random_urlsafe(32),
        }
    }

    /// RFC 7636 S256.
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }

    pub fn url(&self, metadata: &ProviderMetadata, settings: &OidcSettings) -> Url {
        let mut url = metadata.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &settings.client_id)
                .append_pair("redirect_uri", settings.redirect_uri.as_str())
                .append_pair("scope", &settings.scope)
                .append_pair("state", &self.state)
                .append_pair("nonce", &self.nonce)
                .append_pair("code_challenge", &self.challenge())
                .append_pair("code_challenge_method", "S256");
            for r in &settings.resource {
                q.append_pair("resource", r);
            }
            for (k, v) in &settings.auth_params {
                q.append_pair(k, v);
            }
        }
        url
    }
}

impl Default for AuthRequest {
    fn default() -> Self {
        Self::new()
    }
}
