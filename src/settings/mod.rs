//! Configuration, parsed once (SPEC §2): TOML file → `BFF_<SECTION>__<KEY>` environment →
//! `*_file` secrets, deserialized into [`raw`] shapes, then validated into the typed
//! [`Settings`] the rest of the program uses. Every problem is reported at once, one line per
//! problem, each naming its key (`oidc.client_id: required`).

mod checks;
mod deserialize;
mod env;
mod model;
mod oidc;
mod providers;
pub mod raw;
pub mod routes;
pub mod store_url;
mod validate;

pub use checks::is_loopback_host as validate_is_loopback;
pub use model::*;
pub use validate::{MIN_MAX_HEADER_BYTES, endpoint_paths, reserved_paths, validate};

use raw::RawSettings;
use std::path::Path;

impl Settings {
    /// What is accepted but probably not meant: check-config prints these and exits 0, start-up
    /// logs them.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.session.url.as_ref().map(store_url::warnings).unwrap_or_default();
        if let Some(url) = &self.telemetry.traces_url
            && url.scheme() == "http"
            && !checks::is_loopback_host(url)
        {
            w.push(
                "telemetry.otlp_endpoint: plain http to another host: spans (and any OTEL_EXPORTER_OTLP_HEADERS) \
                 cross the network unencrypted"
                    .to_owned(),
            );
        }
        w
    }

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
        let provider_overrides = env.provider_overrides();
        let otel_endpoint = env.otel_endpoint.clone();
        let merged = config::Config::builder()
            .add_source(file)
            .add_source(env)
            .build()
            .and_then(|c| c.try_deserialize::<serde_json::Value>())
            .map_err(|e| ConfigErrors(vec![describe_load_error(&e)]))?;
        let mut raw: RawSettings = deserialize::reporting_all(merged, "", &mut problems);
        providers::apply_overrides(&mut raw.providers, provider_overrides, &mut problems);
        if raw.telemetry.otlp_endpoint.trim().is_empty()
            && let Some(endpoint) = otel_endpoint
        {
            raw.telemetry.otlp_endpoint = endpoint;
        }
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

#[cfg(test)]
mod tests;
