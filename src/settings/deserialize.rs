//! Raw configuration values → the `raw` shapes, reporting every bad key at once.

use super::raw::SCHEMA;

/// serde stops at the first error; to report every bad key at once, record the failing key,
/// drop it (its default then applies) and deserialize again.
/// `prefix` names where `value` sits (`providers.partners.`; "" for the whole file).
pub(super) fn reporting_all<T: serde::de::DeserializeOwned + Default>(
    mut value: serde_json::Value,
    prefix: &str,
    problems: &mut Vec<String>,
) -> T {
    if prefix.is_empty() {
        remove_unknown_keys(&mut value, problems);
    }
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(raw) => return raw,
            Err(e) => {
                let path = e.path().to_string();
                // serde quotes the offending value; never for a secret.
                let secret = path.contains("client_secret")
                    || ["session.keys", "session.url"].iter().any(|k| path.starts_with(k));
                if secret {
                    problems.push(format!("{prefix}{path}: wrong type (value not shown: it is a secret)"));
                } else {
                    problems.push(format!("{prefix}{path}: {}", e.inner()));
                }
                if !remove_path(&mut value, &path) {
                    break;
                }
            }
        }
    }
    T::default()
}

fn remove_unknown_keys(value: &mut serde_json::Value, problems: &mut Vec<String>) {
    let Some(top) = value.as_object_mut() else {
        return;
    };
    top.retain(|section, v| {
        // Arrays of tables: `routes` are checked by serde, `providers` by `providers::read`.
        if section == "routes" || section == "providers" {
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
