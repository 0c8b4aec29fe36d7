//! `[[providers]]` (SPEC §2, §3.7): the IdPs beside `[oidc]`. Each entry is read like `[oidc]`
//! from its own keys only — an unset key takes the built-in default, never `[oidc]`'s value —
//! and every problem names the entry (`providers.partners.client_id: required`).

use super::checks::Problems;
use super::model::{DEFAULT_PROVIDER, OidcSettings, ServerSettings};
use super::raw::{RawOidc, SCHEMA};

/// Apply `BFF_PROVIDERS__<NAME>__<KEY>` to the file's entry of that name. An override for a
/// provider the file does not list is a problem (a typo must not pass silently).
pub(super) fn apply_overrides(
    entries: &mut [serde_json::Value],
    overrides: Vec<(String, String, serde_json::Value)>,
    problems: &mut Vec<String>,
) {
    for (name, key, value) in overrides {
        let entry = entries.iter_mut().find(|e| e.get("name").and_then(|n| n.as_str()) == Some(name.as_str()));
        match entry.and_then(|e| e.as_object_mut()) {
            Some(table) => {
                table.insert(key, value);
            }
            None => problems
                .push(format!("providers.{name}: set from the environment, but no [[providers]] entry has that name")),
        }
    }
}

/// `[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?` without `--` (SPEC §2).
pub fn name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=32).contains(&b.len())
        && b.first().is_some_and(inner)
        && b.last().is_some_and(inner)
        && b.iter().all(|c| inner(c) || *c == b'-')
        && !name.contains("--")
}

/// Validate every entry; `None` for an entry with problems (they are in `p`).
pub(super) fn validate(
    entries: Vec<serde_json::Value>,
    server: Option<&ServerSettings>,
    p: &mut Problems,
) -> Vec<OidcSettings> {
    let mut out: Vec<OidcSettings> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, mut entry) in entries.into_iter().enumerate() {
        let Some(table) = entry.as_object_mut() else {
            p.push(&format!("providers[{i}]"), "must be a table");
            continue;
        };
        let name = match table.remove("name") {
            Some(serde_json::Value::String(n)) => n,
            _ => {
                p.push(&format!("providers[{i}].name"), "required (a string)");
                continue;
            }
        };
        if !name_ok(&name) {
            p.push(
                &format!("providers[{i}].name"),
                format_args!("{name:?} must match [a-z0-9]([a-z0-9-]{{0,30}}[a-z0-9])? without \"--\""),
            );
            continue;
        }
        if name == DEFAULT_PROVIDER {
            p.push(&format!("providers.{name}.name"), "\"default\" is [oidc]'s name");
            continue;
        }
        if seen.contains(&name) {
            p.push(&format!("providers.{name}.name"), "used by two [[providers]] entries");
            continue;
        }
        seen.push(name.clone());
        let oidc_keys = SCHEMA.iter().find(|(s, _)| *s == "oidc").map(|(_, k)| *k).unwrap_or_default();
        table.retain(|key, _| {
            let known = oidc_keys.iter().any(|(k, _)| k == key);
            if !known {
                p.push(&format!("providers.{name}.{key}"), "unknown key");
            } else if key == "refresh_grace_secs" {
                // One refresh cache serves every provider, with one grace period.
                p.push(&format!("providers.{name}.{key}"), "set it in [oidc]: it applies to every provider");
                return false;
            }
            known
        });
        let prefix = format!("providers.{name}.");
        let raw: RawOidc = super::deserialize::reporting_all(entry, &prefix, &mut p.0);
        if let Some(s) = super::oidc::oidc(raw, &name, server, p) {
            out.push(s);
        }
    }
    out
}

/// Rules that need every provider at once: a `{base}/callback/<name>` redirect belongs to the
/// provider of that name only (its callbacks are told apart by that path), and no two
/// providers share an issuer (a logout token or an `iss` names exactly one of them).
pub(super) fn check_all(all: &[&OidcSettings], server: &ServerSettings, p: &mut Problems) {
    let own_prefix = format!("{}/callback/", server.base_path);
    for (i, s) in all.iter().enumerate() {
        if let Some(first) = all[..i].iter().find(|o| o.issuer == s.issuer) {
            p.push(
                &format!("providers.{}.issuer", s.name),
                format_args!("already the issuer of provider {:?}: each provider needs its own", first.name),
            );
        }
        let path = s.redirect_uri.path();
        let same_origin = s.redirect_uri.origin() == server.public_url.origin();
        if let Some(other) = path.strip_prefix(&own_prefix).filter(|_| same_origin)
            && other != s.name
        {
            let key = if s.name == DEFAULT_PROVIDER { "oidc".to_owned() } else { format!("providers.{}", s.name) };
            p.push(
                &format!("{key}.redirect_uri"),
                format_args!(
                    "{path} is the callback of provider {other:?}; this provider's own is {own_prefix}{}",
                    s.name
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::name_ok;

    #[test]
    fn provider_names() {
        for ok in ["a", "partners", "idp-2", "0", "a1-b2-c3"] {
            assert!(name_ok(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a--b", "a_b", "a.b", &"a".repeat(33)] {
            assert!(!name_ok(bad), "{bad}");
        }
        assert!(name_ok(&"a".repeat(32)));
    }
}
