//! The path check of SPEC §6, applied before any route matching: a path that an upstream (or
//! anything between) could resolve or decode differently from us is refused, so that what we
//! match is what the upstream serves. The upstream URL is then built from the raw path.
//!
//! Refused: dot-segments (`.`, `..`, literal or percent-encoded, any case, also with `;params`
//! as servlet containers strip them: `..;`), encoded `/` `\` `;` `%` (double encoding), any
//! percent-encoded unreserved character (`%61` for `a`: a second spelling of the same path
//! that would slip past a more specific route), backslashes, NUL and control characters
//! (literal or encoded), malformed `%`, and a path that is not UTF-8 once decoded.

/// True if `path` (the raw request path, no query) is safe to match and forward.
pub fn is_safe(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.iter().any(|&c| c < 0x20 || c == 0x7f || c == b'\\') {
        return false;
    }
    let no_dot_segment = |p: &str| {
        p.split('/').all(|seg| {
            let name = seg.split(';').next().unwrap_or(seg);
            name != "." && name != ".."
        })
    };
    // Most paths have no `%`: nothing to decode.
    if !b.contains(&b'%') {
        return no_dot_segment(path);
    }
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            decoded.push(b[i]);
            i += 1;
            continue;
        }
        let hex =
            b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        let Some(v) = hex else { return false };
        let unreserved = v.is_ascii_alphanumeric() || b"-._~".contains(&v);
        // `.` is unreserved but its encoded forms are dot-segment spellings: refused by the
        // segment check below with every other spelling of them.
        if v == b'/' || v == b'\\' || v == b';' || v == b'%' || v < 0x20 || v == 0x7f || (unreserved && v != b'.') {
            return false;
        }
        decoded.push(v);
        i += 3;
    }
    let Ok(decoded) = std::str::from_utf8(&decoded) else { return false };
    if decoded.chars().any(char::is_control) {
        return false;
    }
    no_dot_segment(decoded)
}

#[cfg(test)]
mod tests {
    use super::is_safe;

    #[test]
    fn traversal_and_encoded_separators_are_refused() {
        for p in [
            "/api/../admin",
            "/api/./x",
            "/api/%2e%2e/admin",
            "/api/%2E%2e/admin",
            "/api/.%2e/admin",
            "/api/%2e/x",
            "/api/%2F..%2Fadmin",
            "/api/a%2fb",
            "/api\\..\\admin",
            "/api/%5C..%5Cadmin",
            "/api/%00",
            "/api/%0d%0a",
            "/api/\u{1}",
            "/api/%zz",
            "/api/%",
            "api/x",
            "/..",
            "/api/..;/admin",
            "/api/.;x/y",
            "/api/%2e%2e%3b/admin",
            "/api/%252e%252e/admin",
            "/api/%61dmin",
            "/api/%c0%ae%c0%ae/admin",
            "/api/%c2%85",
        ] {
            assert!(!is_safe(p), "{p:?} accepted");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/api",
            "/api/",
            "/api/x",
            "/api/a%20b",
            "/api/file.tar.gz",
            "/api/...",
            "/api/.well-known/x",
            "/api/caf%C3%A9",
            "/api/a;v=1",
        ] {
            assert!(is_safe(p), "{p:?} refused");
        }
    }
}
