//! Environment overrides: only variables shaped exactly `BFF_<SECTION>__<KEY>` are read, so
//! `BFF_CONFIG` or an orchestrator's `BFF_PORT_8080_TCP` never break start-up. Each value is
//! typed by the key it targets (a secret `0123` stays the string "0123"); lists are
//! comma-separated. `[[providers]]` entries are reached by name,
//! `BFF_PROVIDERS__<NAME>__<KEY>` (`-` written as `_`): they are applied to the file's entry of
//! that name after the merge (`super::providers`), since a TOML array has no keys to merge by.

use super::raw::{Kind, kind_of};
use config::{Map, Source, Value, ValueKind};

#[derive(Debug, Clone)]
pub struct BffEnvironment {
    vars: Vec<(String, String)>,
    /// The standard `OTEL_EXPORTER_OTLP_ENDPOINT`, used when `[telemetry] otlp_endpoint` is unset.
    pub otel_endpoint: Option<String>,
}

impl BffEnvironment {
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut otel_endpoint = None;
        let vars = vars
            .into_iter()
            .filter(|(k, v)| {
                if k == "OTEL_EXPORTER_OTLP_ENDPOINT" {
                    otel_endpoint = Some(v.clone());
                }
                split_name(k).is_some()
            })
            .collect();
        Self { vars, otel_endpoint }
    }

    /// Problems found while reading the variables (unknown keys, non-numeric integers…).
    pub fn problems(&self) -> Vec<String> {
        self.vars.iter().filter_map(|(name, value)| typed(name, value).err()).collect()
    }
}

/// `BFF_OIDC__CLIENT_SECRET` → ("oidc", "client_secret").
fn split_name(name: &str) -> Option<(String, String)> {
    let rest = name.strip_prefix("BFF_")?;
    let (section, key) = rest.split_once("__")?;
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    (valid(section) && valid(key)).then(|| (section.to_ascii_lowercase(), key.to_ascii_lowercase()))
}

/// `partners__client_secret` → ("partners", "client_secret"); `my_idp__x` → ("my-idp", "x").
fn provider_key(key: &str) -> Option<(String, &str)> {
    let (name, key) = key.split_once("__")?;
    (!name.is_empty() && !key.is_empty()).then(|| (name.replace('_', "-"), key))
}

fn typed(name: &str, value: &str) -> Result<(String, ValueKind), String> {
    let (section, key) = split_name(name).ok_or_else(|| format!("{name}: not a BFF_<SECTION>__<KEY> name"))?;
    // A provider's keys are [oidc]'s.
    let (path, schema_section, key) = if section == "providers" {
        let (provider, key) =
            provider_key(&key).ok_or_else(|| format!("{name}: not a BFF_PROVIDERS__<NAME>__<KEY> name"))?;
        (format!("providers.{provider}.{key}"), "oidc", key)
    } else {
        (format!("{section}.{key}"), section.as_str(), key.as_str())
    };
    let kind = kind_of(schema_section, key).ok_or_else(|| format!("{path}: unknown key (from {name})"))?;
    let v = match kind {
        Kind::Str => ValueKind::String(value.to_owned()),
        Kind::Int => ValueKind::U64(
            value.trim().parse().map_err(|_| format!("{path}: expected a non-negative integer (from {name})"))?,
        ),
        Kind::Float => {
            ValueKind::Float(value.trim().parse().map_err(|_| format!("{path}: expected a number (from {name})"))?)
        }
        Kind::Bool => ValueKind::Boolean(match value.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{path}: expected true or false (from {name})")),
        }),
        Kind::List => ValueKind::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::new(None, ValueKind::String(s.to_owned())))
                .collect(),
        ),
        Kind::Table => {
            return Err(format!("{path}: a table cannot be set from the environment (from {name})"));
        }
    };
    Ok((path, v))
}

impl BffEnvironment {
    /// The `[[providers]]` overrides: (provider name, key, value), typed like `[oidc]`'s keys.
    pub fn provider_overrides(&self) -> Vec<(String, String, serde_json::Value)> {
        self.vars
            .iter()
            .filter_map(|(name, value)| typed(name, value).ok())
            .filter_map(|(path, kind)| {
                let rest = path.strip_prefix("providers.")?;
                let (provider, key) = rest.split_once('.')?;
                Some((provider.to_owned(), key.to_owned(), json_of(kind)?))
            })
            .collect()
    }
}

fn json_of(kind: ValueKind) -> Option<serde_json::Value> {
    Some(match kind {
        ValueKind::String(s) => serde_json::Value::String(s),
        ValueKind::U64(n) => serde_json::Value::from(n),
        ValueKind::Boolean(b) => serde_json::Value::Bool(b),
        ValueKind::Array(items) => {
            serde_json::Value::Array(items.into_iter().filter_map(|v| v.into_string().ok()).map(Into::into).collect())
        }
        _ => return None,
    })
}

impl Source for BffEnvironment {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        let origin = "environment".to_owned();
        Ok(self
            .vars
            .iter()
            .filter_map(|(name, value)| typed(name, value).ok())
            .filter(|(path, _)| !path.starts_with("providers."))
            .map(|(path, kind)| (path, Value::new(Some(&origin), kind)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_shape_is_read() {
        let env = BffEnvironment::from_vars([
            ("BFF_CONFIG".to_owned(), "x".to_owned()),
            ("BFF_PORT_8080_TCP".to_owned(), "tcp://1".to_owned()),
            ("BFF_OIDC__CLIENT_SECRET".to_owned(), "0123".to_owned()),
        ]);
        let map = env.collect().unwrap_or_default();
        assert_eq!(map.len(), 1);
        assert_eq!(map["oidc.client_secret"].clone().into_string().ok().as_deref(), Some("0123"));
    }

    #[test]
    fn values_are_typed_by_their_key() {
        let env = BffEnvironment::from_vars([
            ("BFF_SERVER__MAX_CONNECTIONS".to_owned(), "12".to_owned()),
            ("BFF_OIDC__SCOPES".to_owned(), "openid, email".to_owned()),
            ("BFF_SESSION__SECURE".to_owned(), "false".to_owned()),
        ]);
        let map = env.collect().unwrap_or_default();
        assert_eq!(map["server.max_connections"].clone().into_uint().ok(), Some(12));
        assert_eq!(map["oidc.scopes"].clone().into_array().map(|a| a.len()).ok(), Some(2));
        assert_eq!(map["session.secure"].clone().into_bool().ok(), Some(false));
    }

    #[test]
    fn provider_overrides_are_found_by_name() {
        let env = BffEnvironment::from_vars([
            ("BFF_PROVIDERS__MY_IDP__CLIENT_SECRET".to_owned(), "0123".to_owned()),
            ("BFF_PROVIDERS__MY_IDP__DPOP".to_owned(), "true".to_owned()),
            ("BFF_PROVIDERS__MY_IDP__CLIENT_SECRT".to_owned(), "x".to_owned()),
        ]);
        assert!(env.collect().unwrap_or_default().is_empty(), "never merged as a table");
        let o = env.provider_overrides();
        assert_eq!(o.len(), 2);
        assert_eq!((o[0].0.as_str(), o[0].1.as_str(), &o[0].2), ("my-idp", "client_secret", &"0123".into()));
        assert_eq!(o[1].2, serde_json::Value::Bool(true));
        let p = env.problems();
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("providers.my-idp.client_secrt: unknown key"), "{p:?}");
    }

    #[test]
    fn unknown_keys_and_bad_numbers_are_problems() {
        let env = BffEnvironment::from_vars([
            ("BFF_OIDC__CLIENT_SECRT".to_owned(), "x".to_owned()),
            ("BFF_SERVER__MAX_CONNECTIONS".to_owned(), "many".to_owned()),
        ]);
        let mut p = env.problems();
        p.sort();
        assert_eq!(p.len(), 2);
        assert!(p[0].starts_with("oidc.client_secrt: unknown key"));
        assert!(p[1].starts_with("server.max_connections: expected"));
    }
}
