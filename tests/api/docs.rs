//! What the operator documentation states about the code, checked against the code: numbers and
//! names an operator acts on must not drift from what the binary does.

use std::time::Duration;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The tables `migrations/` creates, for every backend.
fn tables() -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for backend in ["postgres", "sqlite"] {
        let dir = format!("{}/migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        for f in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")).flatten() {
            let sql = std::fs::read_to_string(f.path()).unwrap_or_default();
            for part in sql.split("CREATE TABLE ").skip(1) {
                let name: String = part.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn operations_doc_states_the_refresh_lock_lifetime_and_the_tables_the_code_uses() {
    let ops = read("docs/operations.md");
    // The lock's lifetime as the code computes it, for two IdP timeouts: 3 × t + a constant.
    let (a, b) = (
        oidc_bff::session::refresh::lock_ttl(Duration::from_secs(2)),
        oidc_bff::session::refresh::lock_ttl(Duration::from_secs(12)),
    );
    let per_second = (b - a).as_secs() / 10;
    let constant = a.as_secs() - 2 * per_second;
    let stated = format!("{per_second} × `http_timeout_secs` + {constant} s");
    assert!(ops.contains(&stated), "docs/operations.md does not say the refresh lock lives {stated}");
    // Every table is named, and every `bff_…` name the schema paragraph gives is a table.
    let tables = tables();
    assert!(tables.len() >= 5, "{tables:?}");
    let schema = ops.split("**Schema.**").nth(1).and_then(|s| s.split("\n\n").next()).unwrap_or_default();
    for t in &tables {
        assert!(schema.contains(&format!("`{t}`")), "docs/operations.md's schema paragraph does not name {t}");
    }
    for named in schema.split('`').filter(|w| w.starts_with("bff_")) {
        assert!(tables.contains(named), "docs/operations.md names a table {named} that migrations/ does not create");
    }
}
