//! The path check of SPEC §6, applied before any route matching: a path that an upstream (or
//! anything between) could resolve differently from us is refused, so that what we match is
//! what the upstream serves. The upstream URL is then built from the raw path.

/// True if `path` (the raw request path, no query) is safe to match and forward.
pub fn is_safe(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.iter().any(|&c| c < 0x20 || c == 0x7f || c == b'\\') {
        return false;
    }
    // Percent-encoded slash, backslash, NUL or any other control character.
    let mut i = 0;
    while let Some(pos) = b[i..].iter().position(|&c| c == b'%') {
        let at = i + pos;
        let hex = b
            .get(at + 1..at + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) if v == b'/' || v == b'\\' || v < 0x20 || v == 0x7f => return false,
            Some(_) => {}
            // A lone or malformed `%` is ambiguous between decoders.
            None => return false,
        }
        i = at + 1;
    }
    path.split('/').all(|seg| !is_dot_segment(seg))
}

/// `.` or `..`, literally or with any of the dots percent-encoded, any case.
fn is_dot_segment(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    let decoded = lower.replace("%2e", ".");
    decoded == "." || decoded == ".."
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
        ] {
            assert!(!is_safe(p), "{p:?} accepted");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in
            ["/api", "/api/", "/api/x", "/api/a%20b", "/api/file.tar.gz", "/api/...", "/api/.well-known/x", "/api/%41"]
        {
            assert!(is_safe(p), "{p:?} refused");
        }
    }
}
