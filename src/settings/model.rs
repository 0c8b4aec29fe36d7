//! The typed settings the rest of the program reads (built by `validate`).

use super::routes;
use crate::secret::Secret;
use jsonwebtoken::Algorithm;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// The name of the provider `[oidc]` configures (SPEC §3.7).
pub const DEFAULT_PROVIDER: &str = "default";

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    /// The provider named "default".
    pub oidc: OidcSettings,
    /// `[[providers]]`: the other IdPs, in the file's order (SPEC §3.7).
    pub providers: Vec<OidcSettings>,
    pub session: SessionSettings,
    pub logging: LoggingSettings,
    pub telemetry: TelemetrySettings,
    /// Longest prefix first.
    pub routes: Vec<routes::Route>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// `scheme://host[:port]`, no trailing slash: the origin the browser uses.
    pub public_origin: String,
    pub public_url: Url,
    /// "" or "/prefix" without a trailing slash.
    pub base_path: String,
    /// Extra origins allowed with credentials (CORS), serialized like `public_origin`.
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<(IpAddr, u8)>,
    pub error_url: Option<Url>,
    /// `/metrics` listener; `None` = no admin listener, no metrics recorder.
    pub admin_listen: Option<SocketAddr>,
    pub static_dir: Option<PathBuf>,
    pub shutdown_timeout: Duration,
    pub max_header_bytes: usize,
    /// Request header fields accepted (HTTP/1); more is 431.
    pub max_headers: usize,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    pub exchange_rate_per_minute: u32,
    /// `/session/events` streams and WebSockets open at once (SPEC §5, §6.3); 0 = none.
    pub max_event_streams: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// RFC 6749 §2.3.1 HTTP Basic (PingOne's default).
    ClientSecretBasic,
    /// Credentials in the form body.
    ClientSecretPost,
    /// RFC 7523 client assertion signed with our private key (SPEC §3.3).
    PrivateKeyJwt(SigningKey),
}

/// The private key for `private_key_jwt`, loaded from `private_key_file`. Debug prints only
/// its algorithm and key id.
#[derive(Clone)]
pub struct SigningKey {
    pub key: std::sync::Arc<jsonwebtoken::EncodingKey>,
    /// ES256 for a P-256 key, RS256 for an RSA key.
    pub alg: Algorithm,
    pub kid: Option<String>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, kid {:?}, [redacted])", self.alg, self.kid)
    }
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.alg == other.alg && self.kid == other.kid
    }
}

impl Eq for SigningKey {}

#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// "default" for `[oidc]`, else the `[[providers]]` entry's name.
    pub name: String,
    /// Exactly as configured: compared byte for byte with discovery, `iss` claims and RFC 9207.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_auth: ClientAuth,
    /// Space-separated, always containing `openid`.
    pub scope: String,
    pub redirect_uri: Url,
    /// True when `redirect_uri` is the BFF's own `/callback`.
    pub redirect_is_callback: bool,
    /// True when `redirect_uri` is this provider's own `{base}/callback/<name>`: its callbacks
    /// are told apart by their path, not by RFC 9207's `iss` (SPEC §3.7).
    pub callback_is_own: bool,
    pub post_logout_redirect_uri: String,
    pub auth_params: Vec<(String, String)>,
    pub id_token_signing_algs: Vec<Algorithm>,
    /// `auth_params.max_age`, when set: ID tokens must then carry a recent enough `auth_time`.
    pub max_age: Option<u64>,
    pub clock_skew_secs: u64,
    pub http_timeout: Duration,
    pub refresh_margin_secs: u64,
    pub refresh_grace_secs: u64,
    /// RFC 8707 resource indicators for the login's access token: sent with the authorization
    /// request, the code exchange and every refresh.
    pub resource: Vec<String>,
    /// RFC 9126 (SPEC §3.5).
    pub par: Par,
    /// RFC 9449 (SPEC §3.6): new sessions get a key of their own.
    pub dpop: bool,
}

/// When the authorization request goes through the PAR endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Par {
    /// When discovery lists a `pushed_authorization_request_endpoint`.
    Auto,
    /// Always; start-up fails without the endpoint.
    Required,
    /// Never; start-up fails when discovery says PAR is required.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
}

/// A 32-byte session key. Debug prints only that it exists.
#[derive(Clone)]
pub struct KeyMaterial(pub [u8; 32]);

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial([redacted])")
    }
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub store: StoreKind,
    /// `[session] url`: the server-side store, or in cookie mode the shared refresh cache and
    /// revocation list. A secret: it may carry a password.
    pub url: Option<StoreUrl>,
    /// The first seals; every key opens.
    pub keys: Vec<KeyMaterial>,
    pub secure: bool,
    pub same_site: SameSite,
    pub idle_timeout_secs: u64,
    pub absolute_timeout_secs: u64,
    /// Bound of the in-memory refresh cache (bytes, entries and their bookkeeping).
    pub cache_max_bytes: usize,
    /// `/session/events` says `expiring` this long before the session ends.
    pub events_warning_secs: u64,
}

/// Where sessions live (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Cookie,
    Sqlite,
    Postgres,
    Redis,
}

/// A store URL, its backend known from its scheme.
#[derive(Debug, Clone)]
pub struct StoreUrl {
    /// Never `Cookie`.
    pub backend: StoreKind,
    /// One URL; for a cluster or the sentinels, nodes listed after one scheme (SPEC §9).
    pub url: crate::secret::Secret,
    /// `Single` for the SQL backends.
    pub redis_mode: RedisMode,
}

/// How `[session] url` reaches Redis (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    Single,
    /// `url` lists seed nodes.
    Cluster,
    /// `url` lists the sentinels; `master` is the name they know the primary by.
    Sentinel {
        master: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LoggingSettings {
    pub format: LogFormat,
    pub level: String,
    pub access_log: bool,
}

/// Whose incoming sampled flag (`traceparent`) decides that a request is traced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowSampled {
    Always,
    /// Only from `[server] trusted_proxies` peers.
    TrustedProxies,
    Never,
}

/// `[telemetry]` (SPEC §7): OpenTelemetry traces over OTLP/HTTP.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `{otlp_endpoint}/v1/traces`; `None`: no traces (and no cost).
    pub traces_url: Option<url::Url>,
    pub service_name: String,
    pub sample_ratio: f64,
    pub follow_incoming_sampled: FollowSampled,
    pub max_forced_samples_per_sec: u32,
}

/// All problems found in a configuration, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}
