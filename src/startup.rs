//! Building and running the server: the listeners (`listener`: limits, idle connections,
//! drain), discovery and the store's upkeep in the background, and a graceful drain on
//! shutdown (SPEC §7).

use crate::events::Events;
use crate::listener::Limits;
use crate::login::Login;
use crate::oidc::discovery::DiscoveryError;
use crate::oidc::http::BuildError;
use crate::oidc::providers::Providers;
use crate::proxy::Proxy;
use crate::routes;
use crate::session::Sessions;
use crate::settings::Settings;
use crate::state::AppState;
use crate::store::Store;
use axum::extract::ConnectInfo;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Discovery(#[from] DiscoveryError),
    #[error("session store: {0}")]
    Store(crate::store::StoreError),
}

impl From<BuildError> for StartupError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Client(e) => Self::Client(e),
            BuildError::Tls(e) => Self::Tls(e),
        }
    }
}

/// Settings → services → `AppState`: each service gets only what it uses.
pub fn app_state(settings: Settings) -> Result<AppState, StartupError> {
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    let providers = Arc::new(Providers::new(settings.oidc.clone(), settings.providers.clone())?);
    let store = match &settings.session.url {
        Some(url) => Some(Store::open(url).map_err(StartupError::Store)?),
        None => None,
    };
    let events = Events::new(settings.server.max_event_streams, store.clone());
    let sessions = Arc::new(Sessions::new(&settings.session, store, providers.clone(), &settings.routes, events));
    let login = Login::new(&settings, providers.clone(), sessions.clone());
    let proxy = Proxy::new(&settings)?;
    Ok(AppState::new(settings, providers, sessions, login, proxy))
}

pub struct App {
    listener: TcpListener,
    /// `server.admin_listen`, bound with the main listener so a bad address fails start-up.
    admin: Option<TcpListener>,
    state: AppState,
}

/// Install the process-wide crypto providers (rustls for reqwest, RustCrypto for jsonwebtoken).
/// Idempotent; call before building anything that makes TLS connections or verifies JWTs.
pub fn install_crypto_providers() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

impl App {
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let addr = settings.server.listen;
        let listener = TcpListener::bind(addr).await.map_err(|e| StartupError::Bind(addr, e))?;
        Self::with_listener(settings, listener)
    }

    /// Use an already-bound listener (tests bind port 0 first so they know the port).
    pub fn with_listener(settings: Settings, listener: TcpListener) -> Result<Self, StartupError> {
        install_crypto_providers();
        let all_providers = || std::iter::once(&settings.oidc).chain(&settings.providers);
        if all_providers().any(|p| {
            matches!(&p.client_auth, crate::settings::ClientAuth::PrivateKeyJwt(key) if key.alg == jsonwebtoken::Algorithm::RS256)
        }) {
            // Accepted in deny.toml for this configuration only (docs/security.md).
            tracing::warn!(
                advisory = "RUSTSEC-2023-0071",
                "private_key_jwt signs with an RSA key through the `rsa` crate, which has a known timing \
                 side channel (Marvin attack, RUSTSEC-2023-0071, no fixed release); an EC P-256 key (ES256) \
                 avoids it"
            );
        }
        let https = |u: &str| u.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if all_providers().any(|p| https(&p.issuer)) || settings.routes.iter().any(|r| https(&r.upstream)) {
            crate::tls::preload()?;
        }
        let admin = match settings.server.admin_listen {
            Some(addr) => {
                let std = std::net::TcpListener::bind(addr).map_err(|e| StartupError::Bind(addr, e))?;
                std.set_nonblocking(true).map_err(|e| StartupError::Bind(addr, e))?;
                Some(TcpListener::from_std(std).map_err(|e| StartupError::Bind(addr, e))?)
            }
            None => None,
        };
        Ok(Self { listener, admin, state: app_state(settings)? })
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` resolves (then drain for up to `shutdown_timeout_secs`) or until
    /// discovery fails fatally (issuer mismatch).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
        let Self { listener, admin, state } = self;
        let server = &state.settings.server;
        let limits = Limits {
            header_read_timeout: server.header_read_timeout,
            max_header_bytes: server.max_header_bytes,
            max_headers: server.max_headers,
            max_connections: server.max_connections,
            http2: true,
        };
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_limits =
            Limits { max_connections: crate::listener::ADMIN_MAX_CONNECTIONS, http2: false, ..limits.clone() };
        let admin_task = admin.and_then(|l| crate::metrics::install().map(|h| (l, h))).map(|(l, handle)| {
            tracing::info!(listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin listener (/metrics)");
            let stopped = async {
                let _ = admin_stopped.await;
            };
            tokio::spawn(crate::admin::serve(l, handle, admin_limits, stopped, server.shutdown_timeout))
        });
        // Now that a recorder may exist: every provider's readiness, so that one down since
        // start-up shows as 0 rather than as no series at all.
        for p in state.providers.iter() {
            metrics::gauge!("bff_provider_ready", "provider" => p.name().to_owned())
                .set(f64::from(u8::from(p.is_ready())));
        }
        let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<StartupError>(2);
        // Resolves only on a fatal error (issuer mismatch, a schema the binary does not know);
        // the senders going away (discovery done) must not end the server.
        let fatal_error = async move {
            match fatal_rx.recv().await {
                Some(e) => e,
                None => std::future::pending().await,
            }
        };
        let discovery_state = state.clone();
        let discovery_fatal = fatal_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = discovery_state.providers.default_provider().discover_with_retry().await {
                let _ = discovery_fatal.send(e.into()).await;
            }
        });
        // The other providers load on their own: a failing one never stops the process or
        // holds up readiness (SPEC §3.7).
        for oidc in state.providers.iter().skip(1) {
            let oidc = oidc.clone();
            tokio::spawn(async move { oidc.keep_discovering().await });
        }
        // The one subscription per instance to the store's event channel (SPEC §5).
        let feed = tokio::spawn(state.sessions.events().clone().run_feed());
        let sweeper = if state.sessions.store().is_some() {
            tokio::spawn(store_maintenance(state.clone(), fatal_tx));
            None
        } else {
            drop(fatal_tx);
            Some(tokio::spawn(refresh_cache_sweeper(state.clone())))
        };

        let router = routes::router(state.clone());
        let handler = {
            let state = state.clone();
            move |mut req: http::Request<axum::body::Body>, peer: SocketAddr| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let (router, state) = (router.clone(), state.clone());
                async move { routes::serve(&state, router, req).await }
            }
        };
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "oidc-bff listening");
        let fatal = std::sync::OnceLock::new();
        let stop = async {
            tokio::select! {
                () = shutdown => tracing::info!("draining in-flight requests"),
                e = fatal_error => {
                    tracing::error!(error = %e, "fatal: stopping");
                    let _ = fatal.set(e);
                }
            }
            // Both listeners drain at once, within one shutdown_timeout.
            let _ = admin_stop.send(());
            // Event streams end now (their clients reconnect to another instance); WebSockets
            // close with 1001 before the drain runs out (SPEC §5, §6.3).
            let events = state.sessions.events().clone();
            events.close_streams();
            // Late enough to let sockets finish their work, early enough for their closing
            // handshakes to complete within the drain.
            let drain = server.shutdown_timeout;
            let margin = crate::proxy::websocket::CLOSE_TIMEOUT + std::time::Duration::from_secs(1);
            let last = drain.saturating_sub(margin).max(drain / 2);
            tokio::spawn(async move {
                tokio::time::sleep(last).await;
                events.close_sockets();
            });
        };
        crate::listener::serve(listener, limits, handler, stop, server.shutdown_timeout).await;
        if let Some(s) = sweeper {
            s.abort();
        }
        feed.abort();
        if let Some(mut t) = admin_task {
            // The admin listener drains like the public one; a stuck scrape must not hold up the exit.
            if tokio::time::timeout(server.shutdown_timeout, &mut t).await.is_err() {
                t.abort();
            }
        }
        tracing::info!("stopped");
        match fatal.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The store's background work: wait for it, apply `migrations/`, then keep the revocation
/// mirror current (cookie mode) and delete expired rows, without ever blocking a request.
async fn store_maintenance(state: AppState, fatal: tokio::sync::mpsc::Sender<StartupError>) {
    use std::time::Duration;
    let Some(store) = state.sessions.store().cloned() else { return };
    let mut delay = Duration::from_millis(200);
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "session store not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    // The store answers: a migration failure now is a schema problem, not an outage.
    if let Err(e) = store.migrate().await {
        let _ = fatal.send(StartupError::Store(e)).await;
        return;
    }
    state.store_ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("session store ready (migrations applied)");
    drop(fatal);
    let longest = state.settings.session.absolute_timeout_secs as i64;
    let mut last_cleanup = std::time::Instant::now() - Duration::from_secs(3600);
    let mark_ok = || state.store_ok_ms.store(crate::clock::now_ms(), std::sync::atomic::Ordering::Relaxed);
    mark_ok();
    loop {
        // Each round is also the health check `/readyz` reports.
        let round = match state.sessions.revocations() {
            Some(rev) => rev.sync(&store).await.map(|new| state.sessions.revoked_elsewhere(&new)),
            None => store.ping().await,
        };
        match round {
            Ok(()) => mark_ok(),
            Err(e) => tracing::warn!(error = %e, "session store did not answer the maintenance task"),
        }
        if last_cleanup.elapsed() >= Duration::from_secs(60) {
            last_cleanup = std::time::Instant::now();
            let now = crate::clock::now();
            if let Some(rev) = state.sessions.revocations() {
                rev.prune(now - longest - 120);
            }
            match store.cleanup(now, (now - longest - 120) * 1000).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "expired sessions and records deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "store clean-up failed; will retry"),
            }
        }
        tokio::time::sleep(crate::session::revocations::POLL).await;
    }
}

/// Without a store, the refresh cache is in memory: expire its entries on a timer as well as on
/// every insert, so the last burst's tokens do not stay in memory until the next refresh, and
/// give the freed pages back to the OS once a few MiB have been freed, or the cache has emptied.
async fn refresh_cache_sweeper(state: AppState) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(2);
    const TRIM_AFTER_BYTES: usize = 2 << 20;
    let mut freed_since_trim = 0;
    loop {
        tokio::time::sleep(EVERY).await;
        let (freed, held) = state.sessions.refresher().sweep(crate::clock::now());
        freed_since_trim += freed;
        if freed_since_trim >= TRIM_AFTER_BYTES || (freed_since_trim > 0 && held == 0) {
            freed_since_trim = 0;
            crate::memory::release_free_memory().await;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
