//! Application state: one `AppState` (an `Arc`) built once at start-up and shared by every
//! handler. Nothing in it is locked across an await.

use crate::login::completed::CompletedStates;
use crate::login::limiter::ExchangeLimiter;
use crate::oidc::Oidc;
use crate::proxy::Proxy;
use crate::session::cookie::CookieNames;
use crate::session::refresh::Refresher;
use crate::session::seal::Keyring;
use crate::settings::Settings;
use std::ops::Deref;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};

/// Code exchanges allowed in flight at once on one instance.
pub const MAX_CONCURRENT_EXCHANGES: usize = 256;

#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub settings: Settings,
    pub oidc: Oidc,
    pub keys: Keyring,
    pub cookies: CookieNames,
    pub completed: CompletedStates,
    pub limiter: ExchangeLimiter,
    pub refresher: Refresher,
    /// Code exchanges in flight (see `login::complete`).
    pub exchanges: tokio::sync::Semaphore,
    pub proxy: Proxy,
    /// The SPA's files (`static_dir`), served for paths no route claims.
    pub static_files: Option<ServeDir<ServeFile>>,
    /// `{base_path}/logout?sid=`, prebuilt for `/session`.
    pub logout_path_prefix: String,
}

impl AppState {
    pub fn new(settings: Settings) -> Result<Self, crate::startup::StartupError> {
        let oidc = Oidc::new(settings.oidc.clone())?;
        let keys = Keyring::new(&settings.session.keys);
        let cookies = CookieNames::new(&settings.session);
        let limiter = ExchangeLimiter::new(settings.server.exchange_rate_per_minute);
        let logout_path_prefix = format!("{}/logout?sid=", settings.server.base_path);
        let proxy = Proxy::new(&settings).map_err(crate::startup::StartupError::Tls)?;
        let static_files = settings
            .server
            .static_dir
            .as_ref()
            .map(|dir| ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html"))));
        Ok(Self(Arc::new(Inner {
            settings,
            oidc,
            keys,
            cookies,
            completed: CompletedStates::default(),
            limiter,
            refresher: Refresher::default(),
            exchanges: tokio::sync::Semaphore::new(MAX_CONCURRENT_EXCHANGES),
            proxy,
            static_files,
            logout_path_prefix,
        })))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}
