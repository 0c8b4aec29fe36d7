//! Reading the request's `Cookie` fields (SPEC §4 "Reading cookies", RFC 6265bis §5.7).
//!
//! Every `Cookie` field — an HTTP/1.1 request has one, an HTTP/2 request may split it into
//! several "crumbs" (RFC 9113 §8.2.3) — is split on `;` as bytes. A pair that is not ASCII, or
//! has no `=`, is skipped by itself and never hides its neighbours: a sibling subdomain, an
//! injected plain-http response or a third-party script can set `z=é` for the whole site, and
//! `HeaderValue::to_str()` on the whole line would then lose the session cookie beside it.
//!
//! Written here rather than with the `cookie` crate: its parser takes a `&str`, so it cannot
//! read a field that is not UTF-8 at all, and reading leniently pair by pair is the rule itself.
//! Nothing here allocates: this runs on every request.

use http::HeaderMap;
use http::header::COOKIE;

/// Optional whitespace around names and values (RFC 6265bis: SP and HTAB).
fn trim(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

/// The `;`-separated pieces of one field, found with `memchr` (a session cookie is kilobytes
/// long: a byte-by-byte split was most of a request's cost).
pub fn split(field: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(field);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b';', r) {
            Some(at) => {
                rest = Some(&r[at + 1..]);
                Some(&r[..at])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Every non-empty `;`-separated piece of every `Cookie` field, trimmed, as sent (it may not
/// be ASCII). What the proxy forwards is built from these, so the upstream keeps the browser's
/// other cookies, whatever bytes they hold.
pub fn pieces(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers.get_all(COOKIE).iter().flat_map(|v| split(v.as_bytes())).map(trim).filter(|p| !p.is_empty())
}

/// Every readable cookie: ASCII pairs with an `=`, name and value trimmed, in order.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    pieces(headers).filter_map(pair)
}

/// One piece as `(name, value)`, or `None` when it is not ASCII or has no `=`.
pub fn pair(piece: &[u8]) -> Option<(&str, &str)> {
    if !piece.is_ascii() {
        return None;
    }
    let eq = memchr::memchr(b'=', piece)?;
    let name = std::str::from_utf8(trim(&piece[..eq])).ok()?;
    let value = std::str::from_utf8(trim(&piece[eq + 1..])).ok()?;
    Some((name, value))
}

/// The name of a piece as an upstream might read it: the bytes before the first `=` (the whole
/// piece when it has none), trimmed. Bytes, because a piece need not be ASCII.
pub fn name_of(piece: &[u8]) -> &[u8] {
    trim(memchr::memchr(b'=', piece).map_or(piece, |eq| &piece[..eq]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(fields: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for f in fields {
            h.append(COOKIE, HeaderValue::from_bytes(f).unwrap_or(HeaderValue::from_static("")));
        }
        h
    }

    #[test]
    fn a_non_ascii_pair_is_skipped_by_itself() {
        let h = headers(&["z=é; __Host-bff=v1; a=b".as_bytes()]);
        assert_eq!(pairs(&h).collect::<Vec<_>>(), [("__Host-bff", "v1"), ("a", "b")]);
        // Bytes that are not UTF-8 at all.
        let h = headers(&[b"x=\xff\xfe; __Host-bff=v2"]);
        assert_eq!(pairs(&h).collect::<Vec<_>>(), [("__Host-bff", "v2")]);
        assert_eq!(pieces(&h).count(), 2, "the proxy still sees both pieces");
    }

    #[test]
    fn pairs_without_equals_and_empty_pieces_are_skipped_and_whitespace_trimmed() {
        let h = headers(&[b";;  lonely ; a = 1 ;\tb=2\t;=nameless"]);
        assert_eq!(pairs(&h).collect::<Vec<_>>(), [("a", "1"), ("b", "2"), ("", "nameless")]);
    }

    #[test]
    fn http2_crumbs_are_read_as_one_header() {
        let h = headers(&[b"a=1", b"__Host-bff.0=2.x", b"c=3; d=4"]);
        assert_eq!(pairs(&h).map(|p| p.0).collect::<Vec<_>>(), ["a", "__Host-bff.0", "c", "d"]);
    }

    #[test]
    fn names_of_pieces_as_bytes() {
        assert_eq!(name_of(b" __Host-bff =x"), b"__Host-bff");
        assert_eq!(name_of(b"__Host-bff"), b"__Host-bff");
        assert_eq!(name_of("é=1".as_bytes()), "é".as_bytes());
    }
}
