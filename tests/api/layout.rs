//! The shape of `src/` (docs/architecture.md), read from the sources: every `use crate::…`,
//! `super::…`, `self::…`, child-module and inline `crate::` path between files. No import
//! circle, no import from a lower layer to a higher one, protocol and feature code free of
//! axum and `AppState`, no file over 400 lines. Each failure names the files concerned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, highest first: a file may import files of its own layer (without a circle) or of
/// any layer below. The first matching prefix decides.
const LAYERS: &[(&str, u32)] = &[
    ("main.rs", 90),
    ("startup.rs", 80),
    ("routes/", 70),
    ("middleware.rs", 60),
    ("state.rs", 50),
    // `oidc-bff doctor`: the configuration against the IdP, the cookie budget from login's and
    // session's constants; it serves nothing.
    ("doctor/", 45),
    ("login/", 40),
    ("proxy/", 40),
    ("session/", 30),
    // The one place where protocol and storage errors become the SPEC's codes.
    ("error.rs", 25),
    // Live session events: the bus and its channel through the store, no session knowledge.
    ("events/", 22),
    ("oidc/", 20),
    ("store/", 20),
    ("settings/", 10),
    ("admin.rs", 10),
    ("telemetry/", 10),
    ("", 0),
];

/// Folders whose code knows nothing of HTTP frameworks or of the application state.
const FRAMEWORK_FREE: &[&str] = &["oidc/", "session/", "login/", "store/", "proxy/", "events/", "doctor/"];

const MAX_LINES: usize = 400;

/// This checkout's `src/`, or another's named by `BFF_LAYOUT_SRC` (to see the check fail on an
/// older tree: `BFF_LAYOUT_SRC=/tmp/old/src cargo test --test api layout`).
fn src() -> PathBuf {
    match std::env::var_os("BFF_LAYOUT_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

/// Every `.rs` file under `src/`, as a path relative to it with `/` separators.
fn files(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            && let Ok(rel) = p.strip_prefix(src())
        {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// Test code is not part of the shape: `tests.rs` files and `#[cfg(test)] mod … {` blocks.
fn is_test_file(f: &str) -> bool {
    f.ends_with("/tests.rs") || f == "tests.rs"
}

fn layer(f: &str) -> u32 {
    LAYERS.iter().find(|(p, _)| f.starts_with(p)).map_or(0, |(_, l)| *l)
}

/// The module path of a file: `session/refresh/mod.rs` → `["session", "refresh"]`.
fn module_of(f: &str) -> Vec<String> {
    let f = f.trim_end_matches(".rs");
    let mut parts: Vec<String> = f.split('/').map(str::to_owned).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The file that defines a module path, if any.
fn file_of(module: &[String], all: &BTreeSet<String>) -> Option<String> {
    if module.is_empty() {
        return Some("lib.rs".to_owned());
    }
    let base = module.join("/");
    [format!("{base}.rs"), format!("{base}/mod.rs")].into_iter().find(|f| all.contains(f))
}

/// The source without comments, string literals and test modules.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") && lines.peek().is_some_and(|n| n.trim_start().starts_with("mod ")) {
            let next = lines.peek().map(|n| n.trim_end().to_owned()).unwrap_or_default();
            if next.ends_with('{') {
                break; // test modules close the file in this code base
            }
            continue;
        }
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && !(prev == '\'' && chars.get(i + 1) == Some(&'\'')) {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = if prev == '\\' && c == '\\' { ' ' } else { c };
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Expand a `use` tree (`a::{b, c::{d, self}}`) into whole paths.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::").trim();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &base, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &base, out);
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        let path = path.strip_suffix("::self").unwrap_or(path);
        if path != "self" {
            out.push(join(prefix, path));
        } else {
            out.push(prefix.to_owned());
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}::{b}"),
    }
}

/// Every path this code names that may lead to another file of the crate.
fn paths_in(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let flat = code.replace('\n', " ");
    // `use` declarations, groups included.
    let mut rest = flat.as_str();
    while let Some(i) = find_word(rest, "use") {
        let after = &rest[i + 3..];
        let end = after.find(';').unwrap_or(after.len());
        expand(&after[..end], "", &mut out);
        rest = &after[end..];
    }
    // Inline paths: `crate::a::b`, `super::a`, `oidc_bff::a` (the binary).
    for root in ["crate::", "super::", "oidc_bff::"] {
        let mut rest = flat.as_str();
        while let Some(i) = rest.find(root) {
            let boundary = i == 0 || !rest[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            if boundary {
                out.push(tail[..end].trim_end_matches(':').to_owned());
            }
            rest = &tail[end.max(1)..];
        }
    }
    out
}

fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find(word) {
        let at = from + i;
        let before = s[..at].chars().next_back();
        let after = s[at + word.len()..].chars().next();
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The files `f` imports.
fn imports_of(f: &str, code: &str, all: &BTreeSet<String>) -> BTreeSet<String> {
    let here = module_of(f);
    let children: BTreeSet<String> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").or_else(|| l.strip_prefix("pub(crate) ")).unwrap_or(l);
            l.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')).map(str::to_owned)
        })
        .collect();
    let mut found = BTreeSet::new();
    for path in paths_in(code) {
        let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        let Some(first) = segs.first() else { continue };
        let (mut module, skip) = match *first {
            "crate" | "oidc_bff" => (Vec::new(), 1),
            "self" => (here.clone(), 1),
            // `super` of `a/b.rs` (module `a::b`) is `a`; of `a/mod.rs` (module `a`), the root.
            "super" => (here[..here.len().saturating_sub(1)].to_vec(), 1),
            c if children.contains(c) => (here.clone(), 0),
            _ => continue,
        };
        let mut target = file_of(&module, all);
        for seg in &segs[skip..] {
            if *seg == "super" {
                module.pop();
                target = file_of(&module, all);
                continue;
            }
            module.push((*seg).to_owned());
            match file_of(&module, all) {
                Some(t) => target = Some(t),
                None => break,
            }
        }
        if let Some(t) = target
            && t != f
            && !is_test_file(&t)
            && t != "lib.rs"
        {
            found.insert(t);
        }
    }
    found
}

struct House {
    imports: BTreeMap<String, BTreeSet<String>>,
    code: BTreeMap<String, String>,
    lines: BTreeMap<String, usize>,
}

fn house() -> House {
    let mut list = Vec::new();
    files(&src(), &mut list);
    let all: BTreeSet<String> = list.iter().cloned().collect();
    let mut house = House { imports: BTreeMap::new(), code: BTreeMap::new(), lines: BTreeMap::new() };
    for f in &list {
        let text = std::fs::read_to_string(src().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        house.lines.insert(f.clone(), text.lines().count());
        if is_test_file(f) {
            continue;
        }
        let code = code_of(&text);
        house.imports.insert(f.clone(), imports_of(f, &code, &all));
        house.code.insert(f.clone(), code);
    }
    house
}

/// A circle through `start`, if there is one.
fn circle_from(start: &str, imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((f, path)) = stack.pop() {
        for next in imports.get(&f).into_iter().flatten() {
            if next == start {
                let mut p = path.clone();
                p.push(start.to_owned());
                return Some(p);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_reader_sees_the_imports_it_must() {
    // The check is only as good as its reading: these arrows exist in any shape of this code.
    let h = house();
    for (from, to) in [("main.rs", "startup.rs"), ("startup.rs", "routes/mod.rs"), ("routes/mod.rs", "state.rs")] {
        assert!(
            h.imports.get(from).is_some_and(|i| i.contains(to)),
            "{from} -> {to} not seen: {:?}",
            h.imports.get(from)
        );
    }
    let mut out = Vec::new();
    expand("crate::a::{b, c::{self, d as e}}", "", &mut out);
    assert_eq!(out, ["crate::a::b", "crate::a::c", "crate::a::c::d"]);
}

#[test]
fn no_import_circle() {
    let h = house();
    for f in h.imports.keys() {
        if let Some(circle) = circle_from(f, &h.imports) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn no_import_runs_up_a_layer() {
    let h = house();
    let up: Vec<String> = h
        .imports
        .iter()
        .flat_map(|(f, to)| to.iter().filter(|t| layer(t) > layer(f)).map(move |t| format!("{f} -> {t}")))
        .collect();
    assert!(
        up.is_empty(),
        "imports from a lower layer to a higher one (tests/api/layout.rs LAYERS):\n{}",
        up.join("\n")
    );
}

#[test]
fn protocol_and_feature_code_do_not_know_axum_or_app_state() {
    let h = house();
    let offenders: Vec<String> = h
        .code
        .iter()
        .filter(|(f, _)| FRAMEWORK_FREE.iter().any(|d| f.starts_with(d)))
        .filter_map(|(f, code)| {
            let words: Vec<&str> = ["axum", "AppState"].into_iter().filter(|w| find_ident(code, w)).collect();
            (!words.is_empty()).then(|| format!("{f}: {}", words.join(", ")))
        })
        .collect();
    assert!(offenders.is_empty(), "framework names in protocol or feature code:\n{}", offenders.join("\n"));
}

fn find_ident(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            && after.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

#[test]
fn no_file_over_400_lines() {
    let h = house();
    let long: Vec<String> =
        h.lines.iter().filter(|(_, n)| **n > MAX_LINES).map(|(f, n)| format!("src/{f}: {n} lines")).collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines:\n{}", long.join("\n"));
}
