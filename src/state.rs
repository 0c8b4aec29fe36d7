//! Application state: one `AppState` (an `Arc`) built once at start-up (`startup`) and shared
//! by every HTTP handler. It only composes the feature services; no feature module imports it.
//! Nothing in it is locked across an await.

use crate::login::Login;
use crate::oidc::providers::Providers;
use crate::proxy::Proxy;
use crate::session::Sessions;
use crate::settings::Settings;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tower_http::services::{ServeDir, ServeFile};

#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub settings: Settings,
    /// The OpenID Providers' clients ("default" first).
    pub providers: Arc<Providers>,
    pub sessions: Arc<Sessions>,
    pub login: Login,
    /// The upstream client of `[[routes]]`.
    pub proxy: Proxy,
    /// The SPA's files (`static_dir`), served for paths no route claims.
    pub static_files: Option<ServeDir<ServeFile>>,
    /// `{base_path}/logout?sid=`, prebuilt for `/session`.
    pub logout_path_prefix: String,
    /// With several providers, their names as a JSON array, prebuilt for an anonymous
    /// `/session` (the SPA's login buttons).
    pub provider_names: Option<String>,
    /// The store answered and `migrations/` are applied.
    pub store_ready: AtomicBool,
    /// When the store last answered the maintenance task (unix ms): `/readyz` reads this
    /// instead of dialling the store on every probe.
    pub store_ok_ms: AtomicI64,
}

impl AppState {
    /// Compose the services (built by `startup`).
    pub fn new(
        settings: Settings,
        providers: Arc<Providers>,
        sessions: Arc<Sessions>,
        login: Login,
        proxy: Proxy,
    ) -> Self {
        let logout_path_prefix = format!("{}/logout?sid=", settings.server.base_path);
        let provider_names = providers
            .several()
            .then(|| serde_json::to_string(&providers.iter().map(|p| p.name()).collect::<Vec<_>>()).ok())
            .flatten();
        let static_files = settings
            .server
            .static_dir
            .as_ref()
            .map(|dir| ServeDir::new(dir).fallback(ServeFile::new(dir.join("index.html"))));
        Self(Arc::new(Inner {
            settings,
            providers,
            sessions,
            login,
            proxy,
            static_files,
            logout_path_prefix,
            provider_names,
            store_ready: AtomicBool::new(false),
            store_ok_ms: AtomicI64::new(0),
        }))
    }

    pub fn is_store_ready(&self) -> bool {
        self.sessions.store().is_none() || self.store_ready.load(Ordering::Relaxed)
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
