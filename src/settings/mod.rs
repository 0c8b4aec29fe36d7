//! Configuration, parsed once (SPEC §2): TOML file → `BFF_<SECTION>__<KEY>` environment →
//! `*_file` secrets, deserialized into [`raw`] shapes, then validated into the typed
//! [`Settings`] the rest of the program uses. Every problem is reported at once, one line per
//! problem, each naming its key (`oidc.client_id: required`).

mod checks;
mod env;
mod model;
mod oidc;
pub mod raw;
pub mod routes;
pub mod store_url;
mod validate;

pub use checks::is_loopback_host as validate_is_loopback;
pub use model::*;
pub use validate::{MIN_MAX_HEADER_BYTES, reserved_paths, validate};

use raw::{RawSettings, SCHEMA};
use std::path::Path;

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
