//! How a request path may be read by whatever serves it (SPEC §6), kept apart from routing so
//! that configuration checks and the proxy read paths alike.
//!
//! Routes are matched on the raw path. An upstream (nginx, Tomcat, Spring, IIS…) may read the
//! same bytes more leniently: it percent-decodes (some twice), drops `;params`, strips trailing
//! dots and spaces, applies Unicode NFKC and ignores case, and collapses empty segments. The
//! *lenient reading* computed here is that reading, in this order: decode every `%XX` once
//! (malformed `%` refused) and what then reads as `%XX` a second time; drop `;…` from every
//! segment; refuse a segment of only dots, spaces and tabs; strip trailing dots, spaces and
//! tabs; NFKC and ASCII lower case — then the segment steps once more, since NFKC turns
//! fullwidth `．` into `.` and `／` into `/` (stricter than the SPEC's order, which would let
//! `／．．／` through); collapse empty segments. Refused outright: a path not starting with
//! `/`, a raw `\` or control character, decoding to `/`, `\`, `?`, `#`, a control character or
//! invalid UTF-8, a character that only case folding makes ASCII (`İ`, `ı`), an NTFS stream
//! name (`::$`). The proxy then refuses a path whose lenient reading selects another route or
//! endpoint than its raw reading (`proxy::path`).

use std::borrow::Cow;
use unicode_normalization::UnicodeNormalization;

/// The path cannot be read safely by an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// One percent-decoding pass. `strict`: a `%` not followed by two hex digits is refused (the
/// raw path); otherwise it stays as it is (what the first pass produced). A decoded `/` or `\`
/// is refused: it would split or join segments for an upstream that decodes before routing.
fn decode(input: &[u8], strict: bool) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            match (input.get(i + 1).copied().and_then(hex), input.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    let v = h << 4 | l;
                    // `/` and `\` split or join segments; `?` and `#` end the path for a server
                    // that decodes before it splits off the query (Apache's mod_rewrite did).
                    if matches!(v, b'/' | b'\\' | b'?' | b'#') {
                        return Err(Refused);
                    }
                    out.push(v);
                    i += 3;
                    continue;
                }
                _ if strict => return Err(Refused),
                _ => {}
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Ok(out)
}

fn is_blank_or_dot(c: char) -> bool {
    matches!(c, '.' | ' ' | '\t')
}

/// A non-ASCII character that a case-insensitive comparison may take for an ASCII one: `İ`
/// lower-cases to `i` + a combining dot, `ı` upper-cases to `I` (Java's `equalsIgnoreCase` and
/// Spring's case-insensitive matching equate them). NFKC has already read compatibility forms
/// such as `ſ` as their ASCII letter.
fn ascii_by_case(c: char) -> bool {
    !c.is_ascii() && c.to_lowercase().chain(c.to_uppercase()).any(|m| m.is_ascii_alphanumeric())
}

/// `;params` dropped, a segment of only dots/blanks refused, trailing dots/blanks stripped.
fn segment(seg: &str) -> Result<&str, Refused> {
    let seg = seg.split(';').next().unwrap_or_default();
    if !seg.is_empty() && seg.chars().all(is_blank_or_dot) {
        return Err(Refused);
    }
    Ok(seg.trim_end_matches(is_blank_or_dot))
}

/// True when the lenient reading of `raw` is its ASCII lower case (no `%`, `;`, blank, control
/// or non-ASCII byte, no empty segment, no segment ending in or made of dots, no `::$`): the
/// common case, read without allocating.
fn plain(raw: &str) -> bool {
    let b = raw.as_bytes();
    b.first() == Some(&b'/')
        && b.iter().all(|c| c.is_ascii_graphic() && !matches!(c, b'%' | b';' | b'\\'))
        && raw[1..].split('/').all(|seg| !seg.is_empty() && !seg.ends_with('.'))
        && !raw.contains("::$")
}

/// The lenient reading of the raw path `raw` (no query), lower case. Borrowed when it is the
/// path itself up to ASCII case (compare it with `eq_ignore_ascii_case`).
pub fn lenient(raw: &str) -> Result<Cow<'_, str>, Refused> {
    if raw == "/" || plain(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') || b.iter().any(|&c| c < 0x20 || c == 0x7f || c == b'\\') {
        return Err(Refused);
    }
    let once = decode(b, true)?;
    let twice = if once.contains(&b'%') { decode(&once, false)? } else { once };
    let text = String::from_utf8(twice).map_err(|_| Refused)?;
    if text.chars().any(char::is_control) {
        return Err(Refused);
    }
    let mut out = String::with_capacity(text.len() + 1);
    for seg in text.split('/') {
        let seg = segment(seg)?;
        let folded: String = seg.nfkc().map(|c| c.to_ascii_lowercase()).collect();
        if folded.chars().any(|c| c == '\\' || c.is_control() || ascii_by_case(c)) || folded.contains("::$") {
            return Err(Refused);
        }
        // NFKC may have made new separators (`／`), parameters (`；`) or dots (`．`).
        for part in folded.split('/') {
            let part = segment(part)?;
            if !part.is_empty() {
                out.push('/');
                out.push_str(part);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Does `path` (a lenient reading, or a plain raw path) fall under the lenient `prefix` at a
/// segment boundary, ignoring ASCII case?
pub fn under(path: &str, prefix: &str) -> bool {
    let (p, x) = (path.as_bytes(), prefix.as_bytes());
    p.len() >= x.len()
        && p[..x.len()].eq_ignore_ascii_case(x)
        && (p.len() == x.len() || p[x.len()] == b'/' || prefix == "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &str) -> Option<String> {
        lenient(p).ok().map(|c| c.to_ascii_lowercase())
    }

    #[test]
    fn second_spellings_read_as_the_path_they_spell() {
        for (raw, reading) in [
            ("/api/Admin/x", "/api/admin/x"),
            ("/api//admin/x", "/api/admin/x"),
            ("/api/admin;x/y", "/api/admin/y"),
            ("/api/%61dmin", "/api/admin"),
            ("/api/%2561dmin", "/api/admin"),
            ("/api/admin%20/x", "/api/admin/x"),
            ("/api/admin./x", "/api/admin/x"),
            ("/api/admin.%20./x", "/api/admin/x"),
            ("/api/%EF%BD%81dmin", "/api/admin"),
            ("/api/%C5%BFecret", "/api/secret"),
            ("/api/a%20b;v=1", "/api/a b"),
            ("/api/caf%C3%A9", "/api/café"),
            ("/api/", "/api"),
            ("/", "/"),
            ("/api/file.tar.gz", "/api/file.tar.gz"),
            ("/api/.well-known/x", "/api/.well-known/x"),
        ] {
            assert_eq!(read(raw).as_deref(), Some(reading), "{raw}");
        }
    }

    #[test]
    fn traversal_encoded_separators_and_bad_encodings_are_refused() {
        for p in [
            "/api/../admin",
            "/api/./x",
            "/..",
            "/api/...",
            "/api/%2e%2e/admin",
            "/api/%2E%2e/admin",
            "/api/.%2e/admin",
            "/api/%2e/x",
            "/api/..;/admin",
            "/api/.;x/y",
            "/api/..%20/admin",
            "/api/%20/x",
            "/api/%2e%2e%3b/admin",
            "/api/%252e%252e/admin",
            "/api/%EF%BC%8E%EF%BC%8E/admin",
            "/api/a%EF%BC%8F..%EF%BC%8Fadmin",
            "/api/%EF%BC%BC",
            "/api/%2F..%2Fadmin",
            "/api/a%2fb",
            "/api/a%252fb",
            "/api\\..\\admin",
            "/api/%5C..%5Cadmin",
            "/api/%00",
            "/api/%0d%0a",
            "/api/\u{1}",
            "/api/%zz",
            "/api/%",
            "api/x",
            "",
            "/api/%c0%ae%c0%ae/admin",
            "/api/%c2%85",
            "/api/%ff",
            "/api/admin%3F/x",
            "/api/admin%23/x",
            "/api/adm%C4%B0n",
            "/api/adm%C4%B1n",
            "/api/admin::$INDEX_ALLOCATION/x",
            "/api/admin%3A%3A$DATA",
        ] {
            assert_eq!(lenient(p), Err(Refused), "{p:?} accepted");
        }
    }

    #[test]
    fn plain_paths_are_read_without_allocating() {
        for p in ["/api", "/api/Orders/ABC-1", "/a/b.c/d~e"] {
            assert!(matches!(lenient(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn prefixes_match_at_segment_boundaries_ignoring_case() {
        assert!(under("/api/admin/x", "/api/admin"));
        assert!(under("/API/Admin", "/api/admin"));
        assert!(!under("/api/administrator", "/api/admin"));
        assert!(under("/anything", "/"));
    }
}
