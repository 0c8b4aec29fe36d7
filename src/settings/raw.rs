//! The configuration file's shape, as serde sees it: every key with its SPEC §2 default.
//! Nothing here is trusted; `super::validate` turns it into typed settings.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The type of each scalar or list key outside `[[routes]]`, used to type environment
/// overrides (a secret `0123` stays a string) and to name unknown keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// A number that may have a fraction (`sample_ratio`).
    Float,
    List,
    /// Tables (`auth_params`): file only.
    Table,
}

pub const SCHEMA: &[(&str, &[(&str, Kind)])] = &[
    (
        "server",
        &[
            ("listen", Kind::Str),
            ("public_url", Kind::Str),
            ("base_path", Kind::Str),
            ("allowed_origins", Kind::List),
            ("trusted_proxies", Kind::List),
            ("error_url", Kind::Str),
            ("admin_listen", Kind::Str),
            ("static_dir", Kind::Str),
            ("shutdown_timeout_secs", Kind::Int),
            ("max_header_bytes", Kind::Int),
            ("max_headers", Kind::Int),
            ("max_connections", Kind::Int),
            ("max_body_bytes", Kind::Int),
            ("header_read_timeout_secs", Kind::Int),
            ("exchange_rate_per_minute", Kind::Int),
            ("max_event_streams", Kind::Int),
        ],
    ),
    (
        "oidc",
        &[
            ("issuer", Kind::Str),
            ("client_id", Kind::Str),
            ("client_secret", Kind::Str),
            ("client_secret_file", Kind::Str),
            ("client_auth", Kind::Str),
            ("private_key_file", Kind::Str),
            ("private_key_id", Kind::Str),
            ("scopes", Kind::List),
            ("redirect_uri", Kind::Str),
            ("post_logout_redirect_uri", Kind::Str),
            ("auth_params", Kind::Table),
            ("id_token_signing_algs", Kind::List),
            ("clock_skew_secs", Kind::Int),
            ("http_timeout_secs", Kind::Int),
            ("refresh_margin_secs", Kind::Int),
            ("refresh_grace_secs", Kind::Int),
            ("resource", Kind::List),
            ("par", Kind::Str),
            ("dpop", Kind::Bool),
        ],
    ),
    (
        "session",
        &[
            ("store", Kind::Str),
            ("keys", Kind::List),
            ("keys_file", Kind::Str),
            ("secure", Kind::Bool),
            ("same_site", Kind::Str),
            ("idle_timeout_secs", Kind::Int),
            ("absolute_timeout_secs", Kind::Int),
            ("url", Kind::Str),
            ("url_file", Kind::Str),
            ("cache_max_bytes", Kind::Int),
            ("events_warning_secs", Kind::Int),
            ("redis_mode", Kind::Str),
            ("redis_sentinel_master", Kind::Str),
        ],
    ),
    ("logging", &[("format", Kind::Str), ("level", Kind::Str), ("access_log", Kind::Bool)]),
    (
        "telemetry",
        &[
            ("otlp_endpoint", Kind::Str),
            ("service_name", Kind::Str),
            ("sample_ratio", Kind::Float),
            ("follow_incoming_sampled", Kind::Str),
            ("max_forced_samples_per_sec", Kind::Int),
        ],
    ),
];

pub fn kind_of(section: &str, key: &str) -> Option<Kind> {
    SCHEMA
        .iter()
        .find(|(s, _)| *s == section)
        .and_then(|(_, keys)| keys.iter().find(|(k, _)| *k == key))
        .map(|(_, kind)| *kind)
}

/// No `Debug`: it holds the client secret and session keys in plain text.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
    pub server: RawServer,
    pub oidc: RawOidc,
    pub session: RawSession,
    pub logging: RawLogging,
    pub telemetry: RawTelemetry,
    pub routes: Vec<RawRoute>,
    /// `[[providers]]` as written: each is read into a [`RawOidc`] (plus its `name`) by
    /// `super::providers`, which names the provider in every problem it reports.
    pub providers: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub public_url: String,
    pub base_path: String,
    pub allowed_origins: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub error_url: String,
    pub admin_listen: String,
    pub static_dir: String,
    pub shutdown_timeout_secs: u64,
    pub max_header_bytes: u64,
    pub max_headers: u64,
    pub max_connections: u64,
    pub max_body_bytes: u64,
    pub header_read_timeout_secs: u64,
    pub exchange_rate_per_minute: u64,
    /// Unset: 1000, or below `max_connections` when that is lower.
    pub max_event_streams: Option<u64>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            public_url: String::new(),
            base_path: String::new(),
            allowed_origins: vec![],
            trusted_proxies: vec![],
            error_url: String::new(),
            admin_listen: String::new(),
            static_dir: String::new(),
            shutdown_timeout_secs: 30,
            max_header_bytes: 65536,
            max_headers: 100,
            max_connections: 10000,
            max_body_bytes: 65536,
            header_read_timeout_secs: 10,
            exchange_rate_per_minute: 0,
            max_event_streams: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOidc {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub client_secret_file: String,
    pub client_auth: String,
    pub private_key_file: String,
    pub private_key_id: String,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
    pub auth_params: BTreeMap<String, String>,
    pub id_token_signing_algs: Vec<String>,
    pub clock_skew_secs: u64,
    pub http_timeout_secs: u64,
    pub refresh_margin_secs: u64,
    pub refresh_grace_secs: u64,
    pub resource: Vec<String>,
    pub par: String,
    pub dpop: bool,
}

impl Default for RawOidc {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_file: String::new(),
            client_auth: "client_secret_basic".into(),
            private_key_file: String::new(),
            private_key_id: String::new(),
            scopes: ["openid", "profile", "email", "offline_access"].map(String::from).to_vec(),
            redirect_uri: String::new(),
            post_logout_redirect_uri: String::new(),
            auth_params: BTreeMap::new(),
            id_token_signing_algs: ["RS256", "PS256", "ES256"].map(String::from).to_vec(),
            clock_skew_secs: 60,
            http_timeout_secs: 10,
            refresh_margin_secs: 30,
            refresh_grace_secs: 60,
            resource: vec![],
            par: "auto".into(),
            dpop: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSession {
    pub store: String,
    pub keys: Vec<String>,
    pub keys_file: String,
    pub secure: bool,
    pub same_site: String,
    pub idle_timeout_secs: u64,
    pub absolute_timeout_secs: u64,
    pub url: String,
    pub url_file: String,
    pub cache_max_bytes: u64,
    pub events_warning_secs: u64,
    pub redis_mode: String,
    pub redis_sentinel_master: String,
}

impl Default for RawSession {
    fn default() -> Self {
        Self {
            store: "cookie".into(),
            keys: vec![],
            keys_file: String::new(),
            secure: true,
            same_site: "strict".into(),
            idle_timeout_secs: 1800,
            absolute_timeout_secs: 28800,
            url: String::new(),
            url_file: String::new(),
            cache_max_bytes: 16 * 1024 * 1024,
            events_warning_secs: 120,
            redis_mode: "single".into(),
            redis_sentinel_master: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLogging {
    pub format: String,
    pub level: String,
    pub access_log: bool,
}

impl Default for RawLogging {
    fn default() -> Self {
        Self { format: "pretty".into(), level: "info".into(), access_log: true }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    pub otlp_endpoint: String,
    pub service_name: String,
    pub sample_ratio: f64,
    pub follow_incoming_sampled: String,
    pub max_forced_samples_per_sec: u64,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: "oidc-bff".into(),
            sample_ratio: 1.0,
            follow_incoming_sampled: "always".into(),
            max_forced_samples_per_sec: 10,
        }
    }
}

/// `[[routes]]` (SPEC §6).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: String,
    pub upstream: String,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub csrf: Option<bool>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub forward_set_cookie: bool,
    #[serde(default)]
    pub websocket: bool,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub providers: Vec<String>,
}
