//! Everything that talks to the OpenID Provider: discovery, keys, the authorization request,
//! token calls and ID token validation. Protocol only; the HTTP endpoints live in `routes`.

pub mod discovery;
pub mod http;
pub mod id_token;
pub mod jwks;
pub mod logout_token;
pub mod token;

use crate::error::{AppError, ErrorCode};
use crate::settings::OidcSettings;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use discovery::{DiscoveryError, ProviderMetadata};
use http::IdpHttp;
use jwks::Jwks;
use sha2::{Digest, Sha256};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use url::Url;

/// The IdP as discovered: metadata and signing keys.
pub struct Provider {
    pub metadata: ProviderMetadata,
    pub jwks: Jwks,
}

pub struct Oidc {
    pub settings: OidcSettings,
    pub http: IdpHttp,
    provider: RwLock<Option<Arc<Provider>>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc").field("issuer", &self.settings.issuer).field("ready", &self.is_ready()).finish()
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Self, crate::startup::StartupError> {
        let http = IdpHttp::new(settings.http_timeout)?;
        Ok(Self { settings, http, provider: RwLock::new(None) })
    }

    pub fn is_ready(&self) -> bool {
        self.provider.read().map(|p| p.is_some()).unwrap_or(false)
    }

    /// The discovered provider, or 502 `idp_unavailable` before discovery has loaded.
    pub fn provider(&self) -> Result<Arc<Provider>, AppError> {
        self.provider.read().ok().and_then(|p| p.clone()).ok_or_else(|| {
            tracing::warn!("IdP discovery has not completed yet");
            AppError::from(ErrorCode::IdpUnavailable)
        })
    }

    /// One discovery + JWKS load.
    pub async fn load(&self) -> Result<(), DiscoveryError> {
        let metadata = discovery::discover(&self.http, &self.settings.issuer).await?;
        let jwks = Jwks::load(&self.http, metadata.jwks_uri.clone()).await.map_err(DiscoveryError::Invalid)?;
        let provider = Arc::new(Provider { metadata, jwks });
        if let Ok(mut p) = self.provider.write() {
            *p = Some(provider);
        }
        Ok(())
    }

    /// Load discovery at start-up, retrying with capped exponential backoff while the IdP is
    /// down. Returns only on success or on a fatal error (issuer mismatch).
    pub async fn discover_with_retry(&self) -> Result<(), DiscoveryError> {
        let mut delay = Duration::from_millis(250);
        loop {
            match self.load().await {
                Ok(()) => {
                    tracing::info!(issuer = %self.settings.issuer, "IdP discovery and JWKS loaded");
                    return Ok(());
                }
                Err(e @ DiscoveryError::IssuerMismatch { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "IdP discovery failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

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

/// Map token-endpoint failures of the code exchange to SPEC codes.
pub fn exchange_error(e: token::TokenError) -> AppError {
    match e {
        token::TokenError::Refused(code) => AppError::idp(ErrorCode::TokenExchangeFailed, code),
        token::TokenError::Timeout => ErrorCode::IdpTimeout.into(),
        token::TokenError::Unavailable(_) => ErrorCode::IdpUnavailable.into(),
    }
}
