//! `[session] url`: which store it names, and whether its syntax is one that store's driver
//! accepts. check-config never connects. Messages never quote the URL (it may hold a password).

use super::checks::{Problems, read_secret_file};
use super::model::{StoreKind, StoreUrl};
use super::raw::RawSession;
use std::str::FromStr;

/// `[session] url` (or `url_file`): required by the server-side stores, optional in cookie
/// mode (shared refresh cache and revocation list). Checked for syntax only: check-config
/// never connects. Messages never quote the URL (it may hold a password).
pub(super) fn store_url(raw: &RawSession, store: Option<StoreKind>, p: &mut Problems) -> Option<StoreUrl> {
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
    if let Err(why) = check(backend, &text) {
        p.push("session.url", why);
        return None;
    }
    Some(StoreUrl { backend, url: crate::secret::Secret::new(text) })
}

/// Syntax check of a store URL: the driver's own parser, nothing dialled.
pub fn check(backend: StoreKind, url: &str) -> Result<(), &'static str> {
    // The drivers' messages may quote the URL, which may hold a password.
    const BAD: &str = "not a valid store URL";
    match backend {
        StoreKind::Redis => redis_parts(url).and_then(|(url, _)| redis::Client::open(url).map(|_| ()).map_err(|_| BAD)),
        StoreKind::Postgres => sqlx::postgres::PgConnectOptions::from_str(url).map(|_| ()).map_err(|_| BAD),
        StoreKind::Sqlite => sqlx::sqlite::SqliteConnectOptions::from_str(url).map(|_| ()).map_err(|_| BAD),
        StoreKind::Cookie => Err("not a store"),
    }
}

/// A Redis URL without our own `prefix` parameter (the driver would refuse it), and that
/// prefix (`bff:` by default, 1 to 64 characters).
pub fn redis_parts(url: &str) -> Result<(String, String), &'static str> {
    let mut parsed = url::Url::parse(url).map_err(|_| "not a valid store URL")?;
    let mut prefix = "bff:".to_owned();
    let rest: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "prefix" {
                prefix = v.into_owned();
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    if rest.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(rest);
    }
    if prefix.is_empty() || prefix.len() > 64 {
        return Err("the prefix parameter must be 1 to 64 characters");
    }
    Ok((parsed.into(), prefix))
}
