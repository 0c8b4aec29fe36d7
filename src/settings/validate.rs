//! Raw → typed settings. Each check pushes one line naming its key; nothing stops early.

use super::checks::{Problems, is_loopback_host, parse_cidr, parse_origin, read_secret_file, same_site, secs};
use super::model::*;
use super::raw::{RawLogging, RawServer, RawSession, RawSettings, RawTelemetry};
use super::store_url::{redis_mode_without_url, store_url};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// The smallest `server.max_header_bytes` accepted: the longest `Cookie` header the BFF can
/// make a browser send (8 session chunks and 5 transaction cookies with a 2 KiB `return_to`,
/// SPEC §4: `login::tx::largest_cookie_header`, ~46 KiB) plus 8 KiB for the request line and a
/// browser's other fields. A unit test holds the two together.
pub const MIN_MAX_HEADER_BYTES: usize = 56 * 1024;

/// The BFF's own paths, which routes may not overlap (SPEC §6).
pub fn reserved_paths(base_path: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "/login",
        "/login/start",
        "/login/end",
        "/callback",
        "/session",
        "/session/events",
        "/logout",
        "/backchannel-logout",
    ]
    .iter()
    .map(|p| format!("{base_path}{p}"))
    .collect();
    v.push("/healthz".into());
    v.push("/readyz".into());
    v
}

/// The paths the router serves, exactly: [`reserved_paths`] and each provider's own
/// `{base}/callback/<name>` (SPEC §3.7).
pub fn endpoint_paths(settings: &Settings) -> Vec<String> {
    let base = &settings.server.base_path;
    let mut v = reserved_paths(base);
    for name in std::iter::once(&settings.oidc.name).chain(settings.providers.iter().map(|p| &p.name)) {
        v.push(format!("{base}/callback/{name}"));
    }
    v
}

pub fn validate(raw: RawSettings) -> Result<Settings, ConfigErrors> {
    let mut p = Problems(Vec::new());
    let server = server(raw.server, &mut p);
    let session = session(raw.session, server.as_ref(), &mut p);
    let oidc = super::oidc::oidc(raw.oidc, DEFAULT_PROVIDER, server.as_ref(), &mut p);
    let providers = super::providers::validate(raw.providers, server.as_ref(), &mut p);
    if let (Some(server), Some(oidc)) = (&server, &oidc) {
        let all: Vec<&OidcSettings> = std::iter::once(oidc).chain(&providers).collect();
        super::providers::check_all(&all, server, &mut p);
    }
    let logging = logging(raw.logging, &mut p);
    let telemetry = telemetry(raw.telemetry, &mut p);
    let reserved = reserved_paths(server.as_ref().map(|s| s.base_path.as_str()).unwrap_or(""));
    let routes = super::routes::validate(raw.routes, &reserved, &mut p.0);
    for (i, r) in routes.iter().enumerate() {
        for name in &r.providers {
            if name != DEFAULT_PROVIDER && !providers.iter().any(|s| &s.name == name) {
                p.push(&format!("routes[{i}].providers"), format_args!("{name:?} is not a configured provider"));
            }
        }
    }
    match (server, oidc, session, logging, telemetry) {
        (Some(server), Some(oidc), Some(session), Some(logging), Some(telemetry)) if p.0.is_empty() => {
            Ok(Settings { server, oidc, providers, session, logging, telemetry, routes })
        }
        _ => Err(ConfigErrors(p.0)),
    }
}

fn server(raw: RawServer, p: &mut Problems) -> Option<ServerSettings> {
    let listen = raw.listen.parse::<SocketAddr>().map_err(|_| p.push("server.listen", "must be ADDRESS:PORT")).ok();
    let admin_listen = if raw.admin_listen.is_empty() {
        None
    } else {
        let a = raw
            .admin_listen
            .parse::<SocketAddr>()
            .map_err(|_| p.push("server.admin_listen", "must be ADDRESS:PORT"))
            .ok();
        if a.is_some() && a == listen {
            p.push("server.admin_listen", "must differ from server.listen (metrics never share the public listener)");
        }
        a
    };
    let public = if raw.public_url.is_empty() {
        p.push("server.public_url", "required");
        None
    } else {
        match parse_origin(&raw.public_url) {
            Ok((url, origin)) if url.scheme() == "https" || is_loopback_host(&url) => Some((url, origin)),
            Ok(_) => {
                p.push("server.public_url", "must be https (http only on loopback)");
                None
            }
            Err(e) => {
                p.push("server.public_url", e);
                None
            }
        }
    };
    let base_path = raw.base_path.clone();
    let base_ok = base_path.is_empty()
        || (base_path.starts_with('/')
            && !base_path.ends_with('/')
            && base_path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_".contains(&b))
            && !base_path.contains("//"));
    if !base_ok {
        p.push("server.base_path", "must be empty or like \"/bff\" (letters, digits, - _ /; no trailing slash)");
    }
    let mut allowed_origins = Vec::new();
    for o in &raw.allowed_origins {
        match parse_origin(o) {
            Ok((url, origin)) => {
                if let Some((public, _)) = &public
                    && !same_site(&url, public)
                {
                    p.push("server.allowed_origins", format_args!("{origin} is not same-site with server.public_url"));
                }
                allowed_origins.push(origin);
            }
            Err(e) => p.push("server.allowed_origins", format_args!("{o:?} {e}")),
        }
    }
    let mut trusted_proxies = Vec::new();
    for t in &raw.trusted_proxies {
        match parse_cidr(t) {
            Some(net) => trusted_proxies.push(net),
            None => p.push("server.trusted_proxies", format_args!("{t:?} is not an IP address or CIDR")),
        }
    }
    let error_url = if raw.error_url.is_empty() {
        None
    } else {
        let parsed = match &public {
            Some((base, _)) if raw.error_url.starts_with('/') && !raw.error_url.starts_with("//") => {
                base.join(&raw.error_url).ok()
            }
            _ => Url::parse(&raw.error_url).ok().filter(|u| matches!(u.scheme(), "https" | "http")),
        };
        if parsed.is_none() {
            p.push("server.error_url", "must be an http(s) URL or a path starting with /");
        }
        parsed
    };
    let static_dir = if raw.static_dir.is_empty() {
        None
    } else if Path::new(&raw.static_dir).is_dir() {
        Some(PathBuf::from(&raw.static_dir))
    } else {
        p.push("server.static_dir", format_args!("{:?} is not a directory", raw.static_dir));
        None
    };
    let shutdown = secs("server.shutdown_timeout_secs", raw.shutdown_timeout_secs, 0, 3600, p);
    let max_header_bytes =
        secs("server.max_header_bytes", raw.max_header_bytes, MIN_MAX_HEADER_BYTES as u64, 1 << 20, p);
    let max_headers = secs("server.max_headers", raw.max_headers, 32, 1000, p);
    let max_connections = secs("server.max_connections", raw.max_connections, 1, 1_000_000, p);
    let max_body_bytes = secs("server.max_body_bytes", raw.max_body_bytes, 1024, 1 << 20, p);
    let header_read = secs("server.header_read_timeout_secs", raw.header_read_timeout_secs, 1, 300, p);
    let rate = secs("server.exchange_rate_per_minute", raw.exchange_rate_per_minute, 0, 1_000_000, p);
    // Below the connection cap: event streams and WebSockets hold a connection each, and the
    // rest of the traffic needs connections too.
    let max_event_streams = match raw.max_event_streams {
        Some(n) => {
            let n = secs("server.max_event_streams", n, 0, 1_000_000, p);
            if n >= max_connections {
                p.push("server.max_event_streams", "must be below server.max_connections");
            }
            n
        }
        None => 1000.min(max_connections.saturating_sub(1)),
    };
    let (public_url, public_origin) = public?;
    Some(ServerSettings {
        listen: listen?,
        public_origin,
        public_url,
        base_path,
        allowed_origins,
        trusted_proxies,
        error_url,
        admin_listen,
        static_dir,
        shutdown_timeout: Duration::from_secs(shutdown),
        max_header_bytes: max_header_bytes as usize,
        max_headers: max_headers as usize,
        max_connections: max_connections as usize,
        max_body_bytes: max_body_bytes as usize,
        header_read_timeout: Duration::from_secs(header_read),
        exchange_rate_per_minute: rate as u32,
        max_event_streams: max_event_streams as usize,
    })
}

fn session(raw: RawSession, server: Option<&ServerSettings>, p: &mut Problems) -> Option<SessionSettings> {
    let store = match raw.store.as_str() {
        "cookie" => Some(StoreKind::Cookie),
        "sqlite" => Some(StoreKind::Sqlite),
        "postgres" => Some(StoreKind::Postgres),
        "redis" => Some(StoreKind::Redis),
        _ => {
            p.push("session.store", "must be cookie, sqlite, postgres or redis");
            None
        }
    };
    let url = store_url(&raw, store, p);
    redis_mode_without_url(&raw, p);
    let lines: Vec<String> = match (raw.keys.is_empty(), raw.keys_file.is_empty()) {
        (false, false) => {
            p.push("session.keys", "set either keys or keys_file, not both");
            vec![]
        }
        (false, true) => raw.keys.clone(),
        (true, false) => read_secret_file("session.keys_file", &raw.keys_file, p)
            .map(|s| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
            .unwrap_or_default(),
        (true, true) => {
            p.push("session.keys", "required (generate one with `oidc-bff generate-key`)");
            vec![]
        }
    };
    let mut keys = Vec::new();
    for (i, k) in lines.iter().enumerate() {
        match STANDARD.decode(k.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
            Some(bytes) => keys.push(KeyMaterial(bytes)),
            None => p.push("session.keys", format_args!("key #{} is not standard base64 of exactly 32 bytes", i + 1)),
        }
    }
    let same_site = match raw.same_site.as_str() {
        "strict" => Some(SameSite::Strict),
        "lax" => Some(SameSite::Lax),
        _ => {
            p.push("session.same_site", "must be strict or lax");
            None
        }
    };
    if !raw.secure
        && let Some(s) = server
        && !(s.public_url.scheme() == "http" && is_loopback_host(&s.public_url))
    {
        p.push("session.secure", "false is allowed only with an http:// public_url on loopback");
    }
    let idle = secs("session.idle_timeout_secs", raw.idle_timeout_secs, 60, 30 * 86400, p);
    let absolute = secs("session.absolute_timeout_secs", raw.absolute_timeout_secs, 60, 90 * 86400, p);
    let cache_max_bytes = secs("session.cache_max_bytes", raw.cache_max_bytes, 65_536, 1 << 30, p);
    let events_warning_secs = secs("session.events_warning_secs", raw.events_warning_secs, 0, 86_400, p);
    if keys.is_empty() {
        return None;
    }
    Some(SessionSettings {
        store: store?,
        url,
        keys,
        secure: raw.secure,
        same_site: same_site?,
        idle_timeout_secs: idle,
        absolute_timeout_secs: absolute,
        cache_max_bytes: cache_max_bytes as usize,
        events_warning_secs,
    })
}

fn logging(raw: RawLogging, p: &mut Problems) -> Option<LoggingSettings> {
    let format = match raw.format.as_str() {
        "pretty" => Some(LogFormat::Pretty),
        "json" => Some(LogFormat::Json),
        _ => {
            p.push("logging.format", "must be pretty or json");
            None
        }
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
        p.push("logging.level", "not a valid level or filter directive");
    }
    Some(LoggingSettings { format: format?, level: raw.level, access_log: raw.access_log })
}

fn telemetry(raw: RawTelemetry, p: &mut Problems) -> Option<TelemetrySettings> {
    let traces_url = match raw.otlp_endpoint.trim() {
        "" => Some(None),
        base => match url::Url::parse(base) {
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                p.push(
                    "telemetry.otlp_endpoint",
                    "must not carry credentials (a collector's credentials go in OTEL_EXPORTER_OTLP_HEADERS)",
                );
                None
            }
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none() =>
            {
                // The base URL as given, `/v1/traces` after its path (OTEL_EXPORTER_OTLP_ENDPOINT's rule).
                url::Url::parse(&format!("{}/v1/traces", u.as_str().trim_end_matches('/'))).ok().map(Some)
            }
            _ => {
                p.push(
                    "telemetry.otlp_endpoint",
                    "must be an http(s) URL without a query or fragment, e.g. http://collector:4318",
                );
                None
            }
        },
    };
    if !(0.0..=1.0).contains(&raw.sample_ratio) {
        p.push("telemetry.sample_ratio", "must be between 0.0 and 1.0");
    }
    let follow = match raw.follow_incoming_sampled.as_str() {
        "always" => Some(FollowSampled::Always),
        "trusted_proxies" => Some(FollowSampled::TrustedProxies),
        "never" => Some(FollowSampled::Never),
        _ => {
            p.push("telemetry.follow_incoming_sampled", "must be always, trusted_proxies or never");
            None
        }
    };
    let max_forced = u32::try_from(raw.max_forced_samples_per_sec).ok().filter(|n| *n <= 1_000_000);
    if max_forced.is_none() {
        p.push("telemetry.max_forced_samples_per_sec", "must be at most 1000000");
    }
    let name = raw.service_name.trim();
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        p.push("telemetry.service_name", "must be 1 to 255 printable characters");
    }
    Some(TelemetrySettings {
        traces_url: traces_url?,
        service_name: name.to_owned(),
        sample_ratio: raw.sample_ratio,
        follow_incoming_sampled: follow?,
        max_forced_samples_per_sec: max_forced?,
    })
}
