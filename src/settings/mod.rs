//! Configuration, parsed once (SPEC §2): TOML file → `BFF_<SECTION>__<KEY>` environment →
//! `*_file` secrets, deserialized into [`raw`] shapes, then validated into the typed
//! [`Settings`] the rest of the program uses. Every problem is reported at once, one line per
//! problem, each naming its key (`oidc.client_id: required`).

mod env;
pub mod raw;
pub mod routes;
mod validate;

pub use validate::{MIN_MAX_HEADER_BYTES, is_loopback_host as validate_is_loopback, reserved_paths, validate};

use crate::secret::Secret;
use jsonwebtoken::Algorithm;
use raw::{RawSettings, SCHEMA};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub oidc: OidcSettings,
    pub session: SessionSettings,
    pub logging: LoggingSettings,
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
    pub post_logout_redirect_uri: String,
    pub auth_params: Vec<(String, String)>,
    pub id_token_signing_algs: Vec<Algorithm>,
    /// `auth_params.max_age`, when set: ID tokens must then carry a recent enough `auth_time`.
    pub max_age: Option<u64>,
    pub clock_skew_secs: u64,
    pub http_timeout: Duration,
    pub refresh_margin_secs: u64,
    pub refresh_grace_secs: u64,
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
    pub url: crate::secret::Secret,
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

/// All problems found in a configuration, one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl Settings {
    /// Load from a TOML file and the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        Self::load_with_env(path, env::BffEnvironment::from_process())
    }

    /// Load from a TOML string and explicit environment variables (tests, `check-config`).
    pub fn from_toml_str(toml: &str, vars: Vec<(String, String)>) -> Result<Self, ConfigErrors> {
        let source = config::File::from_str(toml, config::FileFormat::Toml);
        Self::build(source, env::BffEnvironment::from_vars(vars))
    }

    fn load_with_env(path: &Path, env: env::BffEnvironment) -> Result<Self, ConfigErrors> {
        if !path.is_file() {
            return Err(ConfigErrors(vec![format!("{}: configuration file not found", path.display())]));
        }
        let source = config::File::from(path).format(config::FileFormat::Toml);
        Self::build(source, env)
    }

    fn build<S>(file: S, env: env::BffEnvironment) -> Result<Self, ConfigErrors>
    where
        S: config::Source + Send + Sync + 'static,
    {
        let mut problems = env.problems();
        let merged = config::Config::builder()
            .add_source(file)
            .add_source(env)
            .build()
            .and_then(|c| c.try_deserialize::<serde_json::Value>())
            .map_err(|e| ConfigErrors(vec![describe_load_error(&e)]))?;
        let raw = deserialize_reporting_all(merged, &mut problems);
        match validate(raw) {
            Ok(settings) if problems.is_empty() => Ok(settings),
            Ok(_) => Err(ConfigErrors(problems)),
            Err(ConfigErrors(more)) => {
                problems.extend(more);
                Err(ConfigErrors(problems))
            }
        }
    }
}

/// serde stops at the first error; to report every bad key at once, record the failing key,
/// drop it (its default then applies) and deserialize again.
fn deserialize_reporting_all(mut value: serde_json::Value, problems: &mut Vec<String>) -> RawSettings {
    remove_unknown_keys(&mut value, problems);
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, RawSettings>(&value) {
            Ok(raw) => return raw,
            Err(e) => {
                let path = e.path().to_string();
                // serde quotes the offending value; never for a secret.
                let secret = ["oidc.client_secret", "session.keys", "session.url"].iter().any(|k| path.starts_with(k));
                if secret {
                    problems.push(format!("{path}: wrong type (value not shown: it is a secret)"));
                } else {
                    problems.push(format!("{path}: {}", e.inner()));
                }
                if !remove_path(&mut value, &path) {
                    break;
                }
            }
        }
    }
    RawSettings::default()
}

/// A file that does not parse: the parser's message names the line, but may quote it, and the
/// line may hold a secret. Keep the location only.
fn describe_load_error(e: &config::ConfigError) -> String {
    let text = e.to_string();
    let location = text.find("line ").map(|i| {
        let rest = &text[i..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == ' ' || c == ',')).unwrap_or(rest.len());
        rest[..end].trim_end_matches([',', ' ']).to_owned()
    });
    match location {
        Some(loc) => format!("configuration: not valid TOML at {loc} (the line is not shown: it may hold a secret)"),
        None => "configuration: the file could not be read as TOML".to_owned(),
    }
}

fn remove_unknown_keys(value: &mut serde_json::Value, problems: &mut Vec<String>) {
    let Some(top) = value.as_object_mut() else {
        return;
    };
    top.retain(|section, v| {
        if section == "routes" {
            return true;
        }
        let Some((_, keys)) = SCHEMA.iter().find(|(s, _)| s == section) else {
            problems.push(format!("{section}: unknown section"));
            return false;
        };
        if let Some(table) = v.as_object_mut() {
            table.retain(|key, _| {
                let known = keys.iter().any(|(k, _)| k == key);
                if !known {
                    problems.push(format!("{section}.{key}: unknown key"));
                }
                known
            });
        }
        true
    });
}

fn remove_path(value: &mut serde_json::Value, path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let mut cur = value;
    for p in parents {
        cur = match p.parse::<usize>() {
            Ok(i) if cur.is_array() => &mut cur[i],
            _ => match cur.get_mut(*p) {
                Some(v) => v,
                None => return false,
            },
        };
    }
    match cur {
        serde_json::Value::Object(m) => m.remove(*last).is_some(),
        serde_json::Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests;
