//! `[session] url`: which store it names, and whether its syntax is one that store's driver
//! accepts. check-config never connects. Messages never quote the URL (it may hold a password).

use super::checks::{Problems, read_secret_file};
use super::model::{RedisMode, StoreKind, StoreUrl};
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
    let redis_mode = redis_mode(raw, backend, p)?;
    let checked = match (&redis_mode, backend) {
        (RedisMode::Single, StoreKind::Redis) if text.contains(',') => {
            Err("lists several nodes: set session.redis_mode to \"cluster\" or \"sentinel\"")
        }
        (RedisMode::Single, _) => check(backend, &text),
        // Braces would make a hash tag of the prefix: every key in one slot.
        (RedisMode::Cluster, _) => redis_nodes(&text).and_then(|(_, prefix)| {
            if prefix.contains(['{', '}']) {
                Err("the prefix parameter may not contain { or } in a cluster")
            } else {
                Ok(())
            }
        }),
        _ => redis_nodes(&text).map(|_| ()),
    };
    if let Err(why) = checked {
        p.push("session.url", why);
        return None;
    }
    Some(StoreUrl { backend, url: crate::secret::Secret::new(text), redis_mode })
}

/// `redis_mode` and `redis_sentinel_master`, given the URL's backend. `None` after a problem.
fn redis_mode(raw: &RawSession, backend: StoreKind, p: &mut Problems) -> Option<RedisMode> {
    let master = raw.redis_sentinel_master.trim();
    let mode = match raw.redis_mode.as_str() {
        "single" => RedisMode::Single,
        "cluster" => RedisMode::Cluster,
        "sentinel" if master.is_empty() => {
            p.push(
                "session.redis_sentinel_master",
                "required with redis_mode = \"sentinel\" (the name the sentinels monitor)",
            );
            return None;
        }
        "sentinel" => RedisMode::Sentinel { master: master.to_owned() },
        _ => {
            p.push("session.redis_mode", "must be single, cluster or sentinel");
            return None;
        }
    };
    if !master.is_empty() && !matches!(mode, RedisMode::Sentinel { .. }) {
        p.push("session.redis_sentinel_master", "set only with redis_mode = \"sentinel\"");
        return None;
    }
    if mode != RedisMode::Single && backend != StoreKind::Redis {
        p.push("session.redis_mode", format_args!("\"{}\" needs a redis:// or rediss:// session.url", raw.redis_mode));
        return None;
    }
    Some(mode)
}

/// `redis_mode` without any store URL: refused, naming what is missing.
pub(super) fn redis_mode_without_url(raw: &RawSession, p: &mut Problems) {
    if raw.redis_mode != "single" && raw.url.is_empty() && raw.url_file.is_empty() {
        p.push(
            "session.redis_mode",
            format_args!("\"{}\" needs session.url (or url_file) naming the Redis nodes", raw.redis_mode),
        );
    }
}

/// What check-config and start-up warn about without refusing (SPEC §9).
pub fn warnings(url: &StoreUrl) -> Vec<String> {
    let mut w = Vec::new();
    if url.redis_mode == RedisMode::Cluster && redis_nodes(url.url.expose()).is_ok_and(|(n, _)| n.len() == 1) {
        w.push(
            "session.url: lists one cluster node only: the client learns the others from it, but cannot \
             start while that node is down; list several seed nodes"
                .to_owned(),
        );
    }
    w
}

/// The nodes of a cluster or sentinel URL (`redis://[user:pass@]h1:p1,h2:p2[/db][?query]`), each
/// as a URL of its own with the shared credentials, database and parameters (our `prefix`
/// removed), and the key prefix.
pub fn redis_nodes(url: &str) -> Result<(Vec<String>, String), &'static str> {
    const BAD: &str = "not a valid store URL";
    let (scheme, rest) = url.split_once("://").ok_or(BAD)?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    // The password may hold an encoded '@' only: the last '@' ends the credentials.
    let (userinfo, hosts) = authority.rfind('@').map_or(("", authority), |i| authority.split_at(i + 1));
    let mut nodes = Vec::new();
    let mut prefix = String::new();
    for host in hosts.split(',') {
        if host.trim().is_empty() {
            return Err("lists an empty node");
        }
        let (node, p) = redis_parts(&format!("{scheme}://{userinfo}{}{tail}", host.trim()))?;
        redis::Client::open(node.as_str()).map_err(|_| BAD)?;
        nodes.push(node);
        prefix = p;
    }
    Ok((nodes, prefix))
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
