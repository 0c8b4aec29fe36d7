//! The `oidc-bff` command line (SPEC §2, §7): `serve`, `check-config`, `doctor`, `generate-key`,
//! `migrate`, `healthcheck`.

use clap::{Args, Parser, Subcommand};
use oidc_bff::settings::Settings;
use oidc_bff::startup::{App, shutdown_signal};
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "oidc-bff", version, about = "Backend-for-frontend OpenID Connect token proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The one flag every subcommand but `generate-key` takes.
#[derive(Args)]
struct ConfigFile {
    /// The TOML configuration file (config/default.toml documents every key); BFF_CONFIG may
    /// name it instead. BFF_<SECTION>__<KEY> variables override its keys.
    #[arg(long, env = "BFF_CONFIG", value_name = "FILE")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: log in, answer the SPA, proxy its API calls, until SIGTERM (then drain).
    Serve(ConfigFile),
    /// Validate a configuration without reaching the IdP or the store: one line per problem,
    /// naming the key, and warnings; exit 0 when valid, 1 otherwise.
    CheckConfig(ConfigFile),
    /// Check the configuration against the live IdP(s): discovery, keys, endpoints, client
    /// credentials, clock, redirect URIs and the cookie budget, one line per check (ok, warn or
    /// fail); exit 1 on any fail, 0 otherwise.
    Doctor(ConfigFile),
    /// Print a fresh random session key (standard base64 of 32 bytes).
    GenerateKey,
    /// Apply the SQL schema (migrations/) to the `[session] url` database and exit; idempotent.
    /// `serve` applies it too: this is for operators who apply schema separately.
    Migrate(ConfigFile),
    /// Exit 0 if the oidc-bff configured by --config answers /healthz on its listen port
    /// (for container HEALTHCHECKs in shell-less images).
    Healthcheck(ConfigFile),
}

fn load(path: &std::path::Path) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|errors| {
        for line in &errors.0 {
            eprintln!("{line}");
        }
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateKey => {
            use base64::Engine;
            let key: [u8; 32] = oidc_bff::secret::random_bytes();
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        Command::Healthcheck(ConfigFile { config }) => {
            let Ok(settings) = load(&config) else { return ExitCode::from(1) };
            healthcheck(settings.server.listen)
        }
        Command::CheckConfig(ConfigFile { config }) => match load(&config) {
            Ok(settings) => {
                for w in settings.warnings() {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Doctor(ConfigFile { config }) => doctor(&config),
        Command::Migrate(ConfigFile { config }) => {
            let settings = match load(&config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            migrate(&settings)
        }
        Command::Serve(ConfigFile { config }) => {
            let settings = match load(&config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            // Dropped last, after the runtime: every line of the drain is written before exit.
            let _logs = oidc_bff::telemetry::init(&settings.logging);
            // One usable CPU (a 1-CPU container, or pinned): a current-thread runtime avoids
            // the cross-thread wake-ups of the work-stealing scheduler (see docs/benchmarks.md).
            let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let mut builder = if cpus == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            };
            let runtime = match builder.enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(async {
                oidc_bff::startup::install_crypto_providers();
                // Before the app: discovery at start-up is traced too.
                let traces = match oidc_bff::telemetry::trace::init(&settings.telemetry) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "start-up failed");
                        return ExitCode::from(1);
                    }
                };
                if traces.is_some() {
                    // Not the endpoint itself: its URL may carry credentials.
                    tracing::info!("traces are exported over OTLP/HTTP ([telemetry] otlp_endpoint)");
                }
                let code = match App::build(settings).await {
                    Ok(app) => match app.run_until(shutdown_signal()).await {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            tracing::error!(error = %e, "stopped");
                            ExitCode::from(1)
                        }
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "start-up failed");
                        ExitCode::from(1)
                    }
                };
                if let Some(t) = traces {
                    t.finish(oidc_bff::telemetry::trace::FLUSH_AT_EXIT).await;
                }
                code
            })
        }
    }
}

fn migrate(settings: &Settings) -> ExitCode {
    let Some(url) = &settings.session.url else {
        eprintln!("session.url: required for migrate (cookie mode without a store has no schema)");
        return ExitCode::from(1);
    };
    let runtime = match one_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let result = async {
            let store = oidc_bff::store::Store::open(url)?;
            store.ping().await?;
            store.migrate().await
        };
        match result.await {
            Ok(()) => {
                println!("migrations applied (or already up to date)");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("migrate failed: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// The crypto providers and a current-thread runtime, for the subcommands that are not `serve`.
fn one_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    oidc_bff::startup::install_crypto_providers();
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

/// `doctor` (SPEC §7): every line on stdout. A configuration that does not load is reported as
/// `fail config` lines, one per problem, without reaching any IdP.
fn doctor(path: &std::path::Path) -> ExitCode {
    use oidc_bff::doctor::{Line, Status};
    let settings = match Settings::load(path) {
        Ok(s) => s,
        Err(errors) => {
            for problem in errors.0 {
                println!("{}", Line::fail("config", problem));
            }
            return ExitCode::from(1);
        }
    };
    for w in settings.warnings() {
        println!("{}", Line::warn("config", w));
    }
    let runtime = match one_thread_runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let worst = runtime.block_on(oidc_bff::doctor::run(&settings, |line| println!("{line}")));
    if worst == Status::Fail { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// GET /healthz on the configured listen port (loopback when listening on all addresses),
/// within 2 s.
fn healthcheck(listen: std::net::SocketAddr) -> ExitCode {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}/healthz", std::net::SocketAddr::new(ip, listen.port()));
    oidc_bff::startup::install_crypto_providers();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(_) => return ExitCode::from(1),
    };
    runtime.block_on(async {
        // Plain HTTP to loopback: the shared TLS configuration never loads the trust roots.
        let Ok(tls) = oidc_bff::tls::client_config() else { return ExitCode::from(1) };
        let client = match reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(std::time::Duration::from_secs(2))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(_) => return ExitCode::from(1),
        };
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
            Ok(r) => {
                eprintln!("{url}: HTTP {}", r.status().as_u16());
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("{url}: {e}");
                ExitCode::from(1)
            }
        }
    })
}
