//! The login flow (SPEC §3) as one service, independent of how the browser reaches it:
//! [`Login::start`] builds the authorization request and its transaction cookie;
//! [`Login::complete`] turns the IdP's redirect parameters into a session, in the SPEC's order:
//! state → iss → error → exchange → ID token.

pub mod completed;
pub mod limiter;
pub mod return_to;
pub mod tx;

use crate::clock::now;
use crate::error::{AppError, ErrorCode, IdpErrorCode};
use crate::oidc::Oidc;
use crate::oidc::auth_request::AuthRequest;
use crate::oidc::dpop::DpopKey;
use crate::oidc::id_token::{Check, IdTokenError};
use crate::oidc::providers::Providers;
use crate::secret::Secret;
use crate::session::Sessions;
use crate::session::model::{LogoutToken, Session, Token};
use crate::settings::Settings;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use completed::CompletedStates;
use http::HeaderMap;
use limiter::ExchangeLimiter;
use return_to::ReturnTo;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tx::LoginTx;
use url::Url;

/// Code exchanges (and PAR pushes) allowed in flight at once on one instance, per provider.
pub const MAX_CONCURRENT_EXCHANGES: usize = crate::oidc::LOGIN_SLOTS;

/// The authorization response, however it reached us.
/// Unknown parameters (IdPs add `scope`, `session_state`, `authuser`…; an SPA page may have its
/// own) are ignored; a repeated `code`, `state`, `iss` or `error` is refused.
#[derive(Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<Secret>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

impl CallbackParams {
    pub fn from_query(query: &str) -> Result<Self, AppError> {
        serde_urlencoded::from_str(query).map_err(|_| {
            tracing::warn!("callback parameters malformed");
            ErrorCode::InvalidRequest.into()
        })
    }
}

pub enum Completed {
    /// A new session: `set_cookies` carries it and the "done" marker.
    Session { session: Box<Session>, return_to: String, set_cookies: Vec<String> },
    /// The state was completed before by this browser (Back button): go to `return_to`.
    AlreadyDone { return_to: String },
}

/// Where the authorization response arrived, to check against the transaction's provider
/// (SPEC §3.7: a provider with its own `{base}/callback/<name>` is told apart by that path).
#[derive(Debug, Clone, Copy)]
pub enum Arrival<'a> {
    /// `GET {base}/callback`.
    SharedCallback,
    /// `GET {base}/callback/<name>`.
    OwnCallback(&'a str),
    /// `POST /login/end` with the URL the IdP redirected to (some provider's `redirect_uri`;
    /// `Login::complete` requires the transaction's provider's).
    RedirectUrl(&'a url::Url),
    /// `POST /login/end` with the parameters only: nothing says where they arrived.
    ParametersOnly,
}

/// Is `url` (where the IdP sent the browser) at `redirect_uri`? Scheme, host, port and path;
/// the query holds the response.
pub fn redirect_matches(url: &Url, redirect_uri: &Url) -> bool {
    url.scheme() == redirect_uri.scheme()
        && url.host() == redirect_uri.host()
        && url.port_or_known_default() == redirect_uri.port_or_known_default()
        && url.path() == redirect_uri.path()
}

/// An error plus the Set-Cookie lines to send with it (the spent transaction is expired).
pub type Failure = (AppError, Vec<String>);

fn fail(code: impl Into<AppError>, why: &str, cookies: Vec<String>) -> Failure {
    let err = code.into();
    tracing::warn!(error = err.code.as_str(), reason = why, "login failed");
    crate::metrics::login_failed(err.code.as_str());
    (err, cookies)
}

/// The login service: what a login needs and nothing else.
pub struct Login {
    providers: Arc<Providers>,
    sessions: Arc<Sessions>,
    /// States completed on this instance (replays within the transaction lifetime).
    completed: CompletedStates,
    limiter: ExchangeLimiter,
    allowed_origins: Vec<String>,
    absolute_timeout_secs: u64,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Login")
    }
}

impl Login {
    pub fn new(settings: &Settings, providers: Arc<Providers>, sessions: Arc<Sessions>) -> Self {
        Self {
            providers,
            sessions,
            completed: CompletedStates::default(),
            limiter: ExchangeLimiter::new(settings.server.exchange_rate_per_minute),
            allowed_origins: settings.server.allowed_origins.clone(),
            absolute_timeout_secs: settings.session.absolute_timeout_secs,
        }
    }

    /// The default provider's code exchanges in flight (tests hold its permits to fill it).
    pub fn exchanges(&self) -> &Semaphore {
        &self.providers.default_provider().slots().login
    }

    /// The provider `name` chooses (absent: "default"; SPEC §3.7).
    fn chosen(&self, name: Option<&str>) -> Result<&Arc<Oidc>, AppError> {
        self.providers.of(name).ok_or_else(|| {
            tracing::warn!("login refused: unknown provider");
            crate::metrics::login_failed(ErrorCode::UnknownProvider.as_str());
            AppError::from(ErrorCode::UnknownProvider)
        })
    }

    /// Begin a login at `provider` (absent: "default"): the IdP URL to send the browser to, and
    /// the Set-Cookie lines. With PAR (SPEC §3.5) the parameters are pushed first, under the same
    /// per-client rate limit and in-flight cap as code exchanges, and the transaction cookie is
    /// set only if that worked.
    pub async fn start(
        &self,
        headers: &HeaderMap,
        return_to: Option<&str>,
        provider_name: Option<&str>,
        peer: IpAddr,
    ) -> Result<(Url, Vec<String>), AppError> {
        let oidc = self.chosen(provider_name)?;
        let return_to = ReturnTo::parse(return_to, &self.allowed_origins)?;
        let provider = oidc.provider()?;
        if !oidc.can_tell_callbacks_apart(&provider, self.providers.several()) {
            if oidc.first_report() {
                tracing::error!(
                    provider = oidc.name(),
                    "login refused: this provider shares {{base}}/callback but does not send RFC 9207's iss; \
                     give it its own redirect_uri, {{public_url}}{{base}}/callback/<name>"
                );
            }
            crate::metrics::login_failed(ErrorCode::IdpUnavailable.as_str());
            return Err(ErrorCode::IdpUnavailable.into());
        }
        let req = AuthRequest::new();
        let t = now();
        // Read once: the limits below and the push go together.
        let par = oidc.uses_par();
        // Limits first: they are what stands between an anonymous flood and both the IdP and
        // the key's scalar multiplication below.
        let _permit = if par {
            if !self.limiter.allow(peer, t) {
                tracing::warn!(reason = "exchange rate limit", "pushed authorization request refused");
                return Err(ErrorCode::RateLimited.into());
            }
            let Ok(permit) = oidc.slots().login.try_acquire() else {
                tracing::warn!(reason = "too many IdP calls in flight", "pushed authorization request refused");
                return Err(ErrorCode::RateLimited.into());
            };
            Some(permit)
        } else {
            None
        };
        // SPEC §3.6: a fresh key per login; its thumbprint binds the code to it.
        let dpop = oidc.settings().dpop.then(DpopKey::generate);
        let jkt = match &dpop {
            Some(key) => Some(key.signer().ok_or(ErrorCode::IdpUnavailable)?.thumbprint()),
            None => None,
        };
        let url = oidc.authorization_url(&provider, &req, jkt, par).await.map_err(|e| {
            tracing::warn!(provider = oidc.name(), error = %e, "pushed authorization request failed");
            let err = AppError::from(e);
            crate::metrics::login_failed(err.code.as_str());
            err
        })?;
        let tx = LoginTx {
            state: Secret::new(req.state),
            nonce: Secret::new(req.nonce),
            verifier: Secret::new(req.verifier),
            return_to: return_to.as_str().to_owned(),
            created_at: t,
            done: false,
            replaces: self.sessions.current_key(headers).map(|k| URL_SAFE_NO_PAD.encode(k)),
            dpop: dpop.map(|k| Secret::new(k.to_encoded())),
            provider: (oidc.name() != crate::settings::DEFAULT_PROVIDER).then(|| oidc.name().to_owned()),
        };
        let cookies = tx::start(self.sessions.cookies(), self.sessions.keys(), headers, &tx, t);
        tracing::info!(provider = oidc.name(), par, dpop = tx.dpop.is_some(), "login started");
        metrics::counter!("bff_logins_total", "result" => "started").increment(1);
        Ok((url, cookies))
    }

    pub async fn complete(
        &self,
        headers: &HeaderMap,
        params: CallbackParams,
        arrival: Arrival<'_>,
        peer: IpAddr,
    ) -> Result<Completed, Failure> {
        let t = now();
        let Some(st) = params.state.as_deref().filter(|s| !s.is_empty()) else {
            return Err(fail(ErrorCode::InvalidRequest, "no state parameter", vec![]));
        };
        let Some((name, tx)) = tx::find(self.sessions.cookies(), self.sessions.keys(), headers, st, t) else {
            return Err(fail(ErrorCode::InvalidState, "no live transaction cookie for this state", vec![]));
        };
        if tx.done {
            tracing::info!("completed state presented again; sending the browser to return_to");
            return Ok(Completed::AlreadyDone { return_to: tx.return_to });
        }
        let spent = vec![tx::expire(self.sessions.cookies(), &name)];
        if self.completed.contains(st, t) {
            return Err(fail(
                ErrorCode::InvalidState,
                "state already completed on this instance (replayed transaction)",
                spent,
            ));
        }
        // Everything below is checked against the provider the login started at, and only it
        // (SPEC §3.7, RFC 9700 §4.4).
        let Some(oidc) = self.providers.of(tx.provider.as_deref()) else {
            return Err(fail(ErrorCode::InvalidState, "the transaction's provider is no longer configured", spent));
        };
        let several = self.providers.several();
        let own = oidc.settings().callback_is_own;
        let wrong_place = match arrival {
            Arrival::SharedCallback => several && own,
            Arrival::OwnCallback(name) => name != oidc.name() || !own,
            Arrival::RedirectUrl(url) => !redirect_matches(url, &oidc.settings().redirect_uri),
            Arrival::ParametersOnly => several && own,
        };
        if wrong_place {
            return Err(fail(
                ErrorCode::InvalidIssuer,
                "the response arrived where another provider's responses arrive (mix-up defence)",
                spent,
            ));
        }
        let provider = oidc.provider().map_err(|e| (AppError::from(e), vec![]))?;
        if !oidc.can_tell_callbacks_apart(&provider, several) {
            return Err(fail(ErrorCode::IdpUnavailable, "provider shares the callback without RFC 9207 iss", spent));
        }
        let issuer = &oidc.settings().issuer;
        match params.iss.as_deref() {
            Some(iss) if iss != issuer => {
                return Err(fail(ErrorCode::InvalidIssuer, "iss parameter differs from the issuer", spent));
            }
            None if provider.metadata.iss_parameter_supported => {
                return Err(fail(ErrorCode::InvalidIssuer, "iss parameter missing (RFC 9207)", spent));
            }
            _ => {}
        }
        if let Some(error) = params.error.as_deref() {
            let err = AppError::idp(ErrorCode::LoginFailed, IdpErrorCode::filter(error));
            return Err(fail(err, "IdP returned an error", spent));
        }
        let Some(code) = params.code.filter(|c| !c.is_empty()) else {
            return Err(fail(ErrorCode::InvalidRequest, "no code parameter", spent));
        };
        // Both limits first, and a 429 expires nothing and burns nothing (SPEC §5): the same
        // callback succeeds once there is room.
        if !self.limiter.allow(peer, t) {
            return Err(fail(ErrorCode::RateLimited, "exchange rate limit", vec![]));
        }
        // Bound the token-endpoint calls in flight, so a flood of junk callbacks cannot pile up
        // requests at the IdP under our client credentials.
        let Ok(_permit) = oidc.slots().login.try_acquire() else {
            return Err(fail(ErrorCode::RateLimited, "too many code exchanges in flight", vec![]));
        };
        // Burn the state before calling the IdP: a concurrent replay must not exchange twice.
        if !self.completed.insert(st, t) {
            return Err(fail(
                ErrorCode::InvalidState,
                "state already completed on this instance (concurrent replay)",
                spent,
            ));
        }
        // And on every replica, when they share a store (SPEC §3.2).
        if let Some(store) = self.sessions.store() {
            let id = format!("state:{}", crate::secret::hex(&<sha2::Sha256 as sha2::Digest>::digest(st.as_bytes())));
            match store.first_use(&id, t + 2 * tx::TX_LIFETIME_SECS).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(fail(ErrorCode::InvalidState, "state already completed on another instance", spent));
                }
                Err(e) => return Err(fail(AppError::from(e), "session store unavailable", vec![])),
            }
        }
        // The login's DPoP key, as sealed at its start: the code is bound to its thumbprint.
        let dpop = match tx.dpop.as_ref().map(|k| DpopKey::from_encoded(k.expose())) {
            None => None,
            Some(Some(key)) => Some(key),
            Some(None) => return Err(fail(ErrorCode::InvalidState, "transaction holds no valid DPoP key", spent)),
        };
        let signer = match &dpop {
            Some(key) => match key.signer() {
                Some(s) => Some(s.as_ref()),
                None => return Err(fail(ErrorCode::IdpUnavailable, "cannot build the DPoP signer", spent)),
            },
            None => None,
        };
        let tokens = oidc.exchange_code(&provider, code.expose(), tx.verifier.expose(), signer).await.map_err(|e| {
            let why = e.to_string();
            fail(AppError::from(e), &why, spent.clone())
        })?;
        let id_token = tokens.id_token.clone().unwrap_or_default();
        let check = Check {
            login: true,
            nonce: Some(tx.nonce.expose()),
            sub: None,
            access_token: Some(tokens.access_token.expose()),
            now: t,
        };
        let valid = oidc.verify_id_token(&provider, id_token.expose(), &check).await.map_err(|e| {
            let code =
                if e == IdTokenError::KeysUnavailable { ErrorCode::IdpUnavailable } else { ErrorCode::InvalidIdToken };
            fail(code, &e.to_string(), spent.clone())
        })?;
        let mut session = Session {
            sub: valid.sub,
            sid: valid.sid,
            id_token: Token::new(id_token.expose()),
            access_token: Token::new(tokens.access_token.expose()),
            access_expires_at: t + tokens.expires_in,
            access_issued_at: t,
            refresh_token: tokens.refresh_token,
            scope: tokens.scope,
            created_at: t,
            absolute_expires_at: t + self.absolute_timeout_secs as i64,
            sealed_at: t,
            refreshed_from: None,
            logout_token: LogoutToken::random(),
            stored: None,
            dpop,
            provider: tx.provider.clone(),
        };
        let replaces =
            tx.replaces.as_deref().and_then(|r| URL_SAFE_NO_PAD.decode(r).ok()).and_then(|k| k.try_into().ok());
        let mut set_cookies = match self.sessions.create(&mut session, t, headers, replaces).await {
            Ok(c) => c,
            Err(e) => return Err(fail(e.code, "session not stored", spent)),
        };
        let return_to = tx.return_to.clone();
        set_cookies.push(tx::seal(self.sessions.cookies(), self.sessions.keys(), &name, &tx.into_done(), t));
        tracing::info!(provider = oidc.name(), has_refresh_token = session.refresh_token.is_some(), "login completed");
        metrics::counter!("bff_logins_total", "result" => "completed").increment(1);
        Ok(Completed::Session { session: Box::new(session), return_to, set_cookies })
    }
}
