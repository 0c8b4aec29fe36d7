//! Docs and code that must not drift apart (issue 21): every key `config/default.toml`
//! documents is one the settings structs read, and every key they read is documented; every
//! file in `migrations/` is applied by the migration code. (The SPEC's error codes against
//! `ErrorCode`: src/error/tests.rs.)

use oidc_bff::settings::raw::{RawLogging, RawOidc, RawRoute, RawServer, RawSession, RawTelemetry, SCHEMA};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};

/// The field names serde asks for when deserializing `T`: what the struct reads, from the
/// struct itself (a deserializer that only records them).
fn fields<T: for<'de> Deserialize<'de>>() -> BTreeSet<String> {
    struct Recorder<'a>(&'a mut Vec<&'static str>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for Recorder<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut names = Vec::new();
    let _ = T::deserialize(Recorder(&mut names));
    names.into_iter().map(String::from).collect()
}

/// `config/default.toml`'s keys per section, set or shown commented out (`# key = …`, as
/// required keys and the `[[routes]]`/`[[providers]]` examples are): a line that starts with
/// a key name and ` = `.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(format!("{}/config/default.toml", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let bare = line.strip_prefix("# ").unwrap_or(line);
        if let Some(name) = bare.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
            section = name.to_owned();
        } else if let Some(name) = line.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, _)) = bare.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            out.entry(section.clone()).or_default().insert(key.to_owned());
        }
    }
    out
}

#[test]
fn default_toml_documents_exactly_the_keys_the_settings_read() {
    let documented = documented();
    let read: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("server", fields::<RawServer>()),
        ("oidc", fields::<RawOidc>()),
        ("session", fields::<RawSession>()),
        ("logging", fields::<RawLogging>()),
        ("telemetry", fields::<RawTelemetry>()),
        ("routes", fields::<RawRoute>()),
    ]);
    for (section, keys) in &read {
        assert!(!keys.is_empty(), "no fields recorded for {section}");
        let doc = documented.get(*section).cloned().unwrap_or_default();
        let missing: Vec<_> = keys.difference(&doc).collect();
        let unknown: Vec<_> = doc.difference(keys).collect();
        assert!(missing.is_empty(), "[{section}] keys the settings read but config/default.toml omits: {missing:?}");
        assert!(unknown.is_empty(), "[{section}] keys config/default.toml documents but nothing reads: {unknown:?}");
    }
    // A provider is read as `[oidc]` (documented there) plus its name (settings/providers.rs):
    // its example may show any of those keys, and no other.
    let provider_keys: BTreeSet<String> = fields::<RawOidc>().into_iter().chain(["name".to_owned()]).collect();
    let shown = documented.get("providers").cloned().unwrap_or_default();
    assert!(shown.contains("name") && shown.is_subset(&provider_keys), "[[providers]] example: {shown:?}");
    let sections: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    let mut expected: BTreeSet<&str> = read.keys().copied().collect();
    expected.insert("providers");
    assert_eq!(sections, expected, "sections of config/default.toml");
    // The environment-override table types every key the file may hold outside [[…]].
    for (section, keys) in SCHEMA {
        let typed: BTreeSet<String> = keys.iter().map(|(k, _)| (*k).to_owned()).collect();
        assert_eq!(Some(&typed), read.get(section), "SCHEMA's [{section}]");
    }
}

/// Every file under `migrations/{sqlite,postgres}/` is a migration the code applies: a fresh
/// SQLite store migrated by oidc-bff records one `_sqlx_migrations` row per file.
#[tokio::test]
async fn every_migration_file_is_applied() {
    let dir = |backend: &str| -> BTreeSet<i64> {
        std::fs::read_dir(format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR")))
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .map(|name| name.split('_').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name}")))
            .collect()
    };
    let (sqlite, postgres) = (dir("sqlite"), dir("postgres"));
    assert_eq!(sqlite, postgres, "both backends have the same migrations");
    let path = std::env::temp_dir().join(format!("bff-drift-{}.db", std::process::id()));
    let url = oidc_bff::settings::StoreUrl {
        backend: oidc_bff::settings::StoreKind::Sqlite,
        url: oidc_bff::secret::Secret::new(format!("sqlite://{}?mode=rwc", path.display())),
        redis_mode: oidc_bff::settings::RedisMode::Single,
    };
    let store = oidc_bff::store::Store::open(&url).unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let pool = sqlx::SqlitePool::connect(url.url.expose()).await.unwrap_or_else(|e| panic!("{e}"));
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
    assert_eq!(applied.into_iter().collect::<BTreeSet<_>>(), sqlite, "applied migrations");
}
