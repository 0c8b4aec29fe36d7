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

    /// Every parameter of the authorization request (SPEC §3.1), plus `dpop_jkt` (RFC 9449
    /// §10) when the login has a DPoP key: the front-channel query, or the PAR body.
    pub fn params<'a>(&'a self, settings: &'a OidcSettings, dpop_jkt: Option<&'a str>) -> Vec<(&'a str, String)> {
        let mut p: Vec<(&str, String)> = vec![
            ("response_type", "code".into()),
            ("client_id", settings.client_id.clone()),
            ("redirect_uri", settings.redirect_uri.as_str().into()),
            ("scope", settings.scope.clone()),
            ("state", self.state.clone()),
            ("nonce", self.nonce.clone()),
            ("code_challenge", self.challenge()),
            ("code_challenge_method", "S256".into()),
        ];
        if let Some(jkt) = dpop_jkt {
            p.push(("dpop_jkt", jkt.into()));
        }
        p.extend(settings.resource.iter().map(|r| ("resource", r.clone())));
        p.extend(settings.auth_params.iter().map(|(k, v)| (k.as_str(), v.clone())));
        p
    }

    /// The front-channel authorization URL: every parameter in the query.
    pub fn url(&self, metadata: &ProviderMetadata, settings: &OidcSettings, dpop_jkt: Option<&str>) -> Url {
        let mut url = metadata.authorization_endpoint.clone();
        url.query_pairs_mut().extend_pairs(self.params(settings, dpop_jkt));
        url
    }

    /// RFC 9126 §4: after a push, the browser carries only the client and the reference.
    pub fn pushed_url(metadata: &ProviderMetadata, settings: &OidcSettings, request_uri: &str) -> Url {
        let mut url = metadata.authorization_endpoint.clone();
        url.query_pairs_mut().append_pair("client_id", &settings.client_id).append_pair("request_uri", request_uri);
        url
    }
}

impl Default for AuthRequest {
    fn default() -> Self {
        Self::new()
    }
}
