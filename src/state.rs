//! Application state: one `AppState` (an `Arc`) built once at start-up and shared by every
//! handler. Nothing in it is locked across an await.

use crate::login::completed::CompletedStates;
use crate::login::limiter::ExchangeLimiter;
use crate::oidc::Oidc;
use crate::proxy::Proxy;
use crate::session::cookie::CookieNames;
use crate::session::refresh::Refresher;
use crate::session::seal::Keyring;
use crate::settings::{Settings, StoreKind};
use crate::store::Store;
use crate::store::revocations::Revocations;
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
    /// `[session] url`: the server-side store, or in cookie mode the shared refresh cache,
    /// refresh locks and revocation list.
    pub store: Option<Store>,
    /// Cookie mode with a store: the revocation list, mirrored in memory.
    pub revocations: Option<Revocations>,
    /// The store answered and `migrations/` are applied.
    pub store_ready: std::sync::atomic::AtomicBool,
    /// When the store last answered the maintenance task (unix ms): `/readyz` reads this
    /// instead of dialling the store on every probe.
    pub store_ok_ms: std::sync::atomic::AtomicI64,
}

impl AppState {
    pub fn new(settings: Settings) -> Result<Self, crate::startup::StartupError> {
        let oidc = Oidc::new(settings.oidc.clone())?;
        let keys = Keyring::new(&settings.session.keys);
        let cookies = CookieNames::new(&settings.session);
        let limiter = ExchangeLimiter::new(settings.server.exchange_rate_per_minute);
        let refresher = Refresher::new(settings.session.cache_max_bytes);
        let logout_path_prefix = format!("{}/logout?sid=", settings.server.base_path);
        let proxy = Proxy::new(&settings)?;
        let store = match &settings.session.url {
            Some(url) => Some(Store::open(url).map_err(crate::startup::StartupError::Store)?),
            None => None,
        };
        let revocations = (store.is_some() && settings.session.store == StoreKind::Cookie).then(Revocations::default);
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
            refresher,
            exchanges: tokio::sync::Semaphore::new(MAX_CONCURRENT_EXCHANGES),
            proxy,
            static_files,
            logout_path_prefix,
            store,
            revocations,
            store_ready: std::sync::atomic::AtomicBool::new(false),
            store_ok_ms: std::sync::atomic::AtomicI64::new(0),
        })))
    }

    pub fn is_store_ready(&self) -> bool {
        self.store.is_none() || self.store_ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The store that holds sessions, when sessions are server-side.
    pub fn server_store(&self) -> Option<&Store> {
        self.store.as_ref().filter(|_| self.settings.session.store != StoreKind::Cookie)
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
