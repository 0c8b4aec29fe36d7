//! Everything that talks to the OpenID Provider, behind one client per provider ([`Oidc`]):
//! discovery and keys, the authorization request, token calls with client authentication, and
//! ID and logout token validation by a verifier built once. Protocol only: no HTTP framework,
//! and its own error types (`error.rs` maps them to the SPEC's codes).

pub mod auth_request;
mod client_auth;
pub mod discovery;
pub mod dpop;
pub mod http;
pub mod id_token;
pub mod jwks;
pub mod logout_token;
pub mod par;
pub mod providers;
pub mod token;

use crate::settings::OidcSettings;
use auth_request::AuthRequest;
use discovery::{DiscoveryError, ProviderMetadata};
use dpop::{Nonces, Signer};
use http::{BuildError, IdpHttp};
use id_token::{Check, IdTokenError, ValidIdToken, Verifier};
use jwks::Jwks;
use logout_token::{LogoutTokenError, ValidLogoutToken};
use par::ParError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use token::{Dpop, TokenError, TokenSet};
use url::Url;

/// The IdP as discovered: metadata and signing keys.
pub struct Provider {
    pub metadata: ProviderMetadata,
    pub jwks: Jwks,
}

/// Discovery has not completed yet (SPEC: 502 `idp_unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("IdP discovery has not completed yet")]
pub struct NotDiscovered;

/// IdP calls one instance makes to one provider at once; more wait their turn (refresh,
/// exchange) or are refused with 429 (logins). Per provider: a slow or hostile IdP fills only
/// its own slots, never another provider's (SPEC §3.7).
pub struct Slots {
    /// Code exchanges and PAR pushes.
    pub login: tokio::sync::Semaphore,
    /// Refresh grants.
    pub refresh: tokio::sync::Semaphore,
    /// Route token exchanges (SPEC §6.2).
    pub exchange: tokio::sync::Semaphore,
}

pub const LOGIN_SLOTS: usize = 256;
pub const REFRESH_SLOTS: usize = 64;
pub const EXCHANGE_SLOTS: usize = 64;

/// The client of one OpenID Provider.
pub struct Oidc {
    settings: OidcSettings,
    http: IdpHttp,
    verifier: Verifier,
    provider: RwLock<Option<Arc<Provider>>>,
    /// Set once a discovery made logins use PAR: they never fall back to the front channel
    /// (SPEC §3.5), even if a later discovery drops the endpoint.
    uses_par: AtomicBool,
    /// DPoP nonces the IdP gave us (SPEC §3.6).
    nonces: Nonces,
    /// A refusal caused by configuration was logged since the last discovery (see
    /// [`Self::first_report`]).
    reported: AtomicBool,
    slots: Slots,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("name", &self.settings.name)
            .field("issuer", &self.settings.issuer)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Self, BuildError> {
        let http = IdpHttp::new(settings.http_timeout)?;
        let verifier = Verifier::new(&settings);
        let uses_par = AtomicBool::new(settings.par == crate::settings::Par::Required);
        Ok(Self {
            settings,
            http,
            verifier,
            provider: RwLock::new(None),
            uses_par,
            nonces: Nonces::default(),
            reported: AtomicBool::new(false),
            slots: Slots {
                login: tokio::sync::Semaphore::new(LOGIN_SLOTS),
                refresh: tokio::sync::Semaphore::new(REFRESH_SLOTS),
                exchange: tokio::sync::Semaphore::new(EXCHANGE_SLOTS),
            },
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// A refresh-grant slot, waited for at most `http_timeout_secs`: the queue behind an IdP
    /// that hangs ends in a timeout instead of growing with every request (`None`).
    pub async fn refresh_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(self.settings.http_timeout, self.slots.refresh.acquire()).await.ok()?.ok()
    }

    /// A token-exchange slot, waited for likewise.
    pub async fn exchange_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        tokio::time::timeout(self.settings.http_timeout, self.slots.exchange.acquire()).await.ok()?.ok()
    }

    /// "default" for `[oidc]`, else the `[[providers]]` name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn is_ready(&self) -> bool {
        self.provider.read().map(|p| p.is_some()).unwrap_or(false)
    }

    /// The discovered provider.
    pub fn provider(&self) -> Result<Arc<Provider>, NotDiscovered> {
        self.provider.read().ok().and_then(|p| p.clone()).ok_or_else(|| {
            tracing::warn!(provider = %self.settings.name, "IdP discovery has not completed yet");
            NotDiscovered
        })
    }

    /// One discovery + JWKS load.
    pub async fn load(&self) -> Result<(), DiscoveryError> {
        let metadata = discovery::discover(&self.http, &self.settings.issuer).await?;
        discovery::check_requirements(&metadata, self.settings.par, self.settings.dpop)?;
        if self.settings.par == crate::settings::Par::Auto && metadata.par_endpoint.is_some() {
            self.uses_par.store(true, Ordering::Relaxed);
        }
        let jwks = Jwks::load(&self.http, metadata.jwks_uri.clone()).await.map_err(DiscoveryError::Invalid)?;
        let provider = Arc::new(Provider { metadata, jwks });
        if let Ok(mut p) = self.provider.write() {
            *p = Some(provider);
        }
        metrics::gauge!("bff_provider_ready", "provider" => self.settings.name.clone()).set(1.0);
        self.reported.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Load discovery at start-up, retrying with capped exponential backoff while the IdP is
    /// down. Returns only on success or on a fatal error (issuer mismatch, a contradiction of
    /// the configuration): the `default` provider stops the process on those.
    pub async fn discover_with_retry(&self) -> Result<(), DiscoveryError> {
        self.discover(true).await
    }

    /// A provider other than `default` (SPEC §3.7): its failures never stop the process. A
    /// discovery that contradicts the configuration marks it failed (logged as an error on each
    /// attempt) and is retried like an unreachable IdP, with backoff up to a minute, until the
    /// IdP or its configuration is fixed.
    pub async fn keep_discovering(&self) {
        let _ = self.discover(false).await;
    }

    /// The retry loop of both: with `fatal`, a contradiction ends it with the error.
    async fn discover(&self, fatal: bool) -> Result<(), DiscoveryError> {
        let name = &self.settings.name;
        let mut delay = Duration::from_millis(250);
        let mut cap = Duration::from_secs(10);
        loop {
            match self.load().await {
                Ok(()) => {
                    tracing::info!(provider = %name, issuer = %self.settings.issuer, "IdP discovery and JWKS loaded");
                    return Ok(());
                }
                Err(e @ (DiscoveryError::IssuerMismatch { .. } | DiscoveryError::Contradicts(_))) if fatal => {
                    return Err(e);
                }
                Err(e @ (DiscoveryError::IssuerMismatch { .. } | DiscoveryError::Contradicts(_))) => {
                    cap = Duration::from_secs(60);
                    delay = delay.max(Duration::from_secs(5));
                    tracing::error!(provider = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "provider marked failed: its discovery contradicts the configuration; its logins answer idp_unavailable");
                }
                Err(e) => {
                    tracing::warn!(provider = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "IdP discovery failed; retrying");
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(cap);
        }
    }

    /// True once per discovery: a refusal that configuration causes is logged as an error the
    /// first time, not once per anonymous request.
    pub fn first_report(&self) -> bool {
        !self.reported.swap(true, Ordering::Relaxed)
    }

    /// May a login start at this provider? With several providers, one whose callbacks share
    /// `{base}/callback` must send RFC 9207's `iss`, or a response could not be told apart from
    /// another provider's (RFC 9700 §4.4.2, SPEC §3.7).
    pub fn can_tell_callbacks_apart(&self, provider: &Provider, several: bool) -> bool {
        !several || self.settings.callback_is_own || provider.metadata.iss_parameter_supported
    }

    /// Where to send the browser for `req`: the front-channel URL, or, with `par` (the caller's
    /// one reading of [`Self::uses_par`], under which it applied the push's limits), the URL
    /// carrying only the `request_uri` the IdP returned for the pushed parameters.
    pub async fn authorization_url(
        &self,
        provider: &Provider,
        req: &AuthRequest,
        dpop_jkt: Option<&str>,
        par: bool,
    ) -> Result<Url, ParError> {
        let m = &provider.metadata;
        if !par {
            return Ok(req.url(m, &self.settings, dpop_jkt));
        }
        let Some(endpoint) = &m.par_endpoint else {
            return Err(ParError::Unavailable("logins use PAR but discovery no longer lists its endpoint"));
        };
        let request_uri =
            par::push(&self.http, endpoint, &self.settings, &req.params(&self.settings, dpop_jkt)).await?;
        Ok(AuthRequest::pushed_url(m, &self.settings, &request_uri))
    }

    /// Do logins go through the PAR endpoint (SPEC §3.5)?
    pub fn uses_par(&self) -> bool {
        self.uses_par.load(Ordering::Relaxed)
    }

    fn dpop<'a>(&'a self, signer: Option<&'a Signer>) -> Option<Dpop<'a>> {
        signer.map(|signer| Dpop { signer, nonces: &self.nonces })
    }

    /// Exchange an authorization code (with its PKCE verifier), with a DPoP proof when the login
    /// has a key.
    pub async fn exchange_code(
        &self,
        provider: &Provider,
        code: &str,
        verifier: &str,
        dpop: Option<&Signer>,
    ) -> Result<TokenSet, TokenError> {
        let endpoint = &provider.metadata.token_endpoint;
        token::exchange_code(&self.http, endpoint, &self.settings, code, verifier, self.dpop(dpop)).await
    }

    pub async fn refresh(
        &self,
        provider: &Provider,
        refresh_token: &str,
        dpop: Option<&Signer>,
    ) -> Result<TokenSet, TokenError> {
        let endpoint = &provider.metadata.token_endpoint;
        token::refresh(&self.http, endpoint, &self.settings, refresh_token, self.dpop(dpop)).await
    }

    /// RFC 8693: a token for one route, from the session's access token (SPEC §6.2).
    pub async fn exchange_token(
        &self,
        provider: &Provider,
        subject: &str,
        spec: &crate::settings::routes::ExchangeSpec,
        dpop: Option<&Signer>,
    ) -> Result<TokenSet, TokenError> {
        let endpoint = &provider.metadata.token_endpoint;
        token::exchange_token(&self.http, endpoint, &self.settings, subject, spec, self.dpop(dpop)).await
    }

    /// RFC 7009, when the IdP has a revocation endpoint (`Ok(false)` when it has none).
    pub async fn revoke(&self, provider: &Provider, refresh_token: &str) -> Result<bool, TokenError> {
        let Some(endpoint) = &provider.metadata.revocation_endpoint else {
            return Ok(false);
        };
        token::revoke(&self.http, endpoint, &self.settings, refresh_token).await.map(|()| true)
    }

    pub async fn verify_id_token(
        &self,
        provider: &Provider,
        token: &str,
        check: &Check<'_>,
    ) -> Result<ValidIdToken, IdTokenError> {
        id_token::validate(token, &self.verifier, check, &provider.jwks, &self.http).await
    }

    pub async fn verify_logout_token(
        &self,
        provider: &Provider,
        token: &str,
        now: i64,
    ) -> Result<ValidLogoutToken, LogoutTokenError> {
        logout_token::validate(token, &self.verifier, now, &provider.jwks, &self.http).await
    }

    /// The RP-initiated logout URL, when the IdP has an end-session endpoint.
    pub fn end_session_url(&self, provider: &Provider, id_token_hint: &str, state: &str) -> Option<Url> {
        let mut url = provider.metadata.end_session_endpoint.clone()?;
        url.query_pairs_mut()
            .append_pair("id_token_hint", id_token_hint)
            .append_pair("post_logout_redirect_uri", &self.settings.post_logout_redirect_uri)
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("state", state);
        Some(url)
    }
}
