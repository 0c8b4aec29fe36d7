//! Raw → typed settings. Each check pushes one line naming its key; nothing stops early.

use super::raw::{RawOidc, RawServer, RawSession, RawSettings};
use super::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const RESERVED_AUTH_PARAMS: &[&str] = &[
    "response_type",
    "response_mode",
    "redirect_uri",
    "state",
    "nonce",
    "scope",
    "client_id",
    "code_challenge",
    "code_challenge_method",
    // A request object could replace every parameter above at a JAR-capable IdP.
    "request",
    "request_uri",
];

/// The smallest `server.max_header_bytes` accepted: the longest `Cookie` header the BFF can
/// make a browser send (8 session chunks and 5 transaction cookies with a 2 KiB `return_to`,
/// SPEC §4: `login::tx::largest_cookie_header`, ~46 KiB) plus 8 KiB for the request line and a
/// browser's other fields. A unit test holds the two together.
pub const MIN_MAX_HEADER_BYTES: usize = 56 * 1024;

struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, key: &str, msg: impl fmt::Display) {
        self.0.push(format!("{key}: {msg}"));
    }
}

/// The BFF's own paths, which routes may not overlap (SPEC §6).
pub fn reserved_paths(base_path: &str) -> Vec<String> {
    let mut v: Vec<String> =
        ["/login", "/login/start", "/login/end", "/callback", "/session", "/logout", "/backchannel-logout"]
            .iter()
            .map(|p| format!("{base_path}{p}"))
            .collect();
    v.push("/healthz".into());
    v.push("/readyz".into());
    v
}

pub fn validate(raw: RawSettings) -> Result<Settings, ConfigErrors> {
    let mut p = Problems(Vec::new());
    let server = server(raw.server, &mut p);
    let session = session(raw.session, server.as_ref(), &mut p);
    let oidc = oidc(raw.oidc, server.as_ref(), &mut p);
    let logging = logging(raw.logging, &mut p);
    let reserved = reserved_paths(server.as_ref().map(|s| s.base_path.as_str()).unwrap_or(""));
    let routes = super::routes::validate(raw.routes, &reserved, &mut p.0);
    match (server, oidc, session, logging) {
        (Some(server), Some(oidc), Some(session), Some(logging)) if p.0.is_empty() => {
            Ok(Settings { server, oidc, session, logging, routes })
        }
        _ => Err(ConfigErrors(p.0)),
    }
}

pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An origin: http(s), a host, no path/query/fragment/userinfo.
fn parse_origin(s: &str) -> Result<(Url, String), &'static str> {
    let url = Url::parse(s).map_err(|_| "not an absolute URL")?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err("must be an http(s) URL with a host");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must be an origin (scheme, host, port) without path, query or credentials");
    }
    let origin = url.origin().ascii_serialization();
    Ok((url, origin))
}

fn secs(key: &str, v: u64, min: u64, max: u64, p: &mut Problems) -> u64 {
    if !(min..=max).contains(&v) {
        p.push(key, format_args!("must be between {min} and {max}"));
    }
    v
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
    })
}

/// Same site, approximated without a public-suffix list: same scheme and either the same
/// host or hosts sharing a parent domain of at least two labels. Stricter than browsers for
/// most names; documented in docs/security.md.
fn same_site(a: &Url, b: &Url) -> bool {
    if a.scheme() != b.scheme() {
        return false;
    }
    let (Some(ha), Some(hb)) = (a.host_str(), b.host_str()) else {
        return false;
    };
    if ha == hb {
        return true;
    }
    let site = |h: &str| -> Option<String> {
        if h.parse::<IpAddr>().is_ok() || h.starts_with('[') {
            return None;
        }
        let labels: Vec<&str> = h.split('.').collect();
        (labels.len() >= 2).then(|| labels[labels.len() - 2..].join("."))
    };
    matches!((site(ha), site(hb)), (Some(x), Some(y)) if x == y)
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn read_secret_file(key: &str, path: &str, p: &mut Problems) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
        Err(e) => {
            p.push(key, format_args!("cannot read {path:?}: {}", e.kind()));
            None
        }
    }
}

fn oidc(raw: RawOidc, server: Option<&ServerSettings>, p: &mut Problems) -> Option<OidcSettings> {
    let issuer_ok = match Url::parse(&raw.issuer) {
        _ if raw.issuer.is_empty() => {
            p.push("oidc.issuer", "required");
            false
        }
        Ok(u)
            if (u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)))
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            true
        }
        Ok(_) => {
            p.push("oidc.issuer", "must be an https URL (http only on loopback) without query or fragment");
            false
        }
        Err(_) => {
            p.push("oidc.issuer", "not an absolute URL");
            false
        }
    };
    if raw.client_id.is_empty() {
        p.push("oidc.client_id", "required");
    }
    let client_auth = match raw.client_auth.as_str() {
        "client_secret_basic" => Some(ClientAuth::ClientSecretBasic),
        "client_secret_post" => Some(ClientAuth::ClientSecretPost),
        "private_key_jwt" => signing_key(&raw.private_key_file, &raw.private_key_id, p).map(ClientAuth::PrivateKeyJwt),
        _ => {
            p.push("oidc.client_auth", "must be client_secret_basic, client_secret_post or private_key_jwt");
            None
        }
    };
    let key_jwt = raw.client_auth == "private_key_jwt";
    if !key_jwt && (!raw.private_key_file.is_empty() || !raw.private_key_id.is_empty()) {
        p.push("oidc.private_key_file", "only used with client_auth = \"private_key_jwt\"");
    }
    let secret = match (raw.client_secret.is_empty(), raw.client_secret_file.is_empty()) {
        // private_key_jwt needs no secret (HS* ID tokens would, checked below).
        (true, true) if key_jwt => Some(String::new()),
        (false, false) => {
            p.push("oidc.client_secret", "set either client_secret or client_secret_file, not both");
            None
        }
        (false, true) => Some(raw.client_secret.clone()),
        (true, false) => read_secret_file("oidc.client_secret_file", &raw.client_secret_file, p),
        (true, true) => {
            p.push("oidc.client_secret", "required for client_secret_basic and client_secret_post");
            None
        }
    };
    if secret.as_deref() == Some("") && !key_jwt {
        p.push("oidc.client_secret", "must not be empty");
    }
    if !raw.scopes.iter().any(|s| s == "openid") {
        p.push("oidc.scopes", "must contain \"openid\"");
    }
    if raw
        .scopes
        .iter()
        .any(|s| s.is_empty() || s.contains(|c: char| c == ' ' || c.is_control() || c == '"' || c == '\\'))
    {
        p.push("oidc.scopes", "scope tokens may not contain spaces, quotes or control characters");
    }
    let default_callback = server.and_then(|s| s.public_url.join(&format!("{}/callback", s.base_path)).ok());
    let redirect_uri = if raw.redirect_uri.is_empty() {
        default_callback.clone()
    } else {
        match Url::parse(&raw.redirect_uri) {
            Ok(u) if u.fragment().is_none() && matches!(u.scheme(), "https" | "http") => {
                if let Some(s) = server {
                    let origin = u.origin().ascii_serialization();
                    if origin != s.public_origin && !s.allowed_origins.contains(&origin) {
                        p.push(
                            "oidc.redirect_uri",
                            "must be on server.public_url's origin or one of server.allowed_origins",
                        );
                    }
                }
                Some(u)
            }
            _ => {
                p.push("oidc.redirect_uri", "must be an absolute http(s) URL without fragment");
                None
            }
        }
    };
    let redirect_is_callback = redirect_uri.is_some() && redirect_uri == default_callback;
    let post_logout_redirect_uri = if raw.post_logout_redirect_uri.is_empty() {
        server.map(|s| format!("{}/", s.public_origin)).unwrap_or_default()
    } else {
        if Url::parse(&raw.post_logout_redirect_uri).map(|u| matches!(u.scheme(), "https" | "http")) != Ok(true) {
            p.push("oidc.post_logout_redirect_uri", "must be an absolute http(s) URL");
        }
        raw.post_logout_redirect_uri.clone()
    };
    for key in raw.auth_params.keys() {
        if RESERVED_AUTH_PARAMS.contains(&key.as_str()) || key.starts_with("code_challenge") {
            p.push("oidc.auth_params", format_args!("{key} is set by oidc-bff itself and cannot be overridden"));
        }
    }
    let mut algs = Vec::new();
    for a in &raw.id_token_signing_algs {
        match a.parse::<Algorithm>() {
            Ok(alg) => algs.push(alg),
            Err(_) => p.push(
                "oidc.id_token_signing_algs",
                format_args!("{a:?} is not a supported algorithm (\"none\" never is)"),
            ),
        }
    }
    if raw.id_token_signing_algs.is_empty() {
        p.push("oidc.id_token_signing_algs", "must list at least one algorithm");
    }
    // RFC 7518 §3.2: an HMAC key at least as long as the hash.
    for (alg, min) in [(Algorithm::HS256, 32), (Algorithm::HS384, 48), (Algorithm::HS512, 64)] {
        if algs.contains(&alg) && secret.as_deref().is_some_and(|s| s.len() < min) {
            p.push("oidc.id_token_signing_algs", format_args!("{alg:?} needs a client secret of at least {min} bytes"));
        }
    }
    let max_age = match raw.auth_params.get("max_age").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            p.push("oidc.auth_params", "max_age must be a non-negative integer");
            None
        }
    };
    let skew = secs("oidc.clock_skew_secs", raw.clock_skew_secs, 0, 600, p);
    let timeout = secs("oidc.http_timeout_secs", raw.http_timeout_secs, 1, 120, p);
    let margin = secs("oidc.refresh_margin_secs", raw.refresh_margin_secs, 0, 3600, p);
    let grace = secs("oidc.refresh_grace_secs", raw.refresh_grace_secs, 0, 600, p);
    if !issuer_ok || raw.client_id.is_empty() {
        return None;
    }
    Some(OidcSettings {
        issuer: raw.issuer,
        client_id: raw.client_id,
        client_secret: Secret::new(secret?),
        client_auth: client_auth?,
        scope: raw.scopes.join(" "),
        redirect_uri: redirect_uri?,
        redirect_is_callback,
        post_logout_redirect_uri,
        auth_params: raw.auth_params.into_iter().collect(),
        id_token_signing_algs: algs,
        max_age,
        clock_skew_secs: skew,
        http_timeout: Duration::from_secs(timeout),
        refresh_margin_secs: margin,
        refresh_grace_secs: grace,
    })
}

/// The `private_key_jwt` key: a PEM file holding a P-256 (ES256) or RSA (RS256) private key.
/// ES256 is preferred: RSA signing in the pure-Rust backend carries RUSTSEC-2023-0071 (a timing
/// side channel); see docs/security.md.
fn signing_key(file: &str, kid: &str, p: &mut Problems) -> Option<SigningKey> {
    if file.is_empty() {
        p.push("oidc.private_key_file", "required for private_key_jwt");
        return None;
    }
    let pem = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            p.push("oidc.private_key_file", format_args!("cannot read {file:?}: {}", e.kind()));
            return None;
        }
    };
    let kid = (!kid.is_empty()).then(|| kid.to_owned());
    if let Ok(key) = jsonwebtoken::EncodingKey::from_ec_pem(&pem) {
        return Some(SigningKey { key: std::sync::Arc::new(key), alg: Algorithm::ES256, kid });
    }
    if let Ok(key) = jsonwebtoken::EncodingKey::from_rsa_pem(&pem) {
        return Some(SigningKey { key: std::sync::Arc::new(key), alg: Algorithm::RS256, kid });
    }
    p.push("oidc.private_key_file", "not a PEM P-256 (EC) or RSA private key");
    None
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
    })
}

/// `[session] url` (or `url_file`): required by the server-side stores, optional in cookie
/// mode (shared refresh cache and revocation list). Checked for syntax only: check-config
/// never connects. Messages never quote the URL (it may hold a password).
fn store_url(raw: &RawSession, store: Option<StoreKind>, p: &mut Problems) -> Option<StoreUrl> {
    let text = match (raw.url.is_empty(), raw.url_file.is_empty()) {
        (false, false) => {
            p.push("session.url", "set either url or url_file, not both");
            return None;
        }
        (false, true) => raw.url.trim().to_owned(),
        (true, false) => read_secret_file("session.url_file", &raw.url_file, p)?.trim().to_owned(),
        (true, true) => {
            if matches!(store, Some(StoreKind::Sqlite | StoreKind::Postgres | StoreKind::Redis)) {
                p.push("session.url", format_args!("required with store = \"{}\"", raw.store));
            }
            return None;
        }
    };
    let scheme = text.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    let backend = match scheme.as_str() {
        "sqlite" => StoreKind::Sqlite,
        "postgres" | "postgresql" => StoreKind::Postgres,
        "redis" | "rediss" => StoreKind::Redis,
        _ => {
            p.push("session.url", "must be a sqlite://, postgres://, redis:// or rediss:// URL");
            return None;
        }
    };
    if let Some(kind) = store.filter(|k| *k != StoreKind::Cookie && *k != backend) {
        let want = match kind {
            StoreKind::Sqlite => "sqlite://",
            StoreKind::Postgres => "postgres://",
            _ => "redis:// or rediss://",
        };
        p.push("session.url", format_args!("must be a {want} URL for store = \"{}\"", raw.store));
        return None;
    }
    if let Err(why) = crate::store::check_url(backend, &text) {
        p.push("session.url", why);
        return None;
    }
    Some(StoreUrl { backend, url: crate::secret::Secret::new(text) })
}

fn logging(raw: raw::RawLogging, p: &mut Problems) -> Option<LoggingSettings> {
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
