//! Header rewriting for proxied requests and responses (SPEC §6).

use crate::session::cookie::CookieNames;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// RFC 9110 §7.6.1 hop-by-hop fields, plus the obsolete ones proxies still see.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Does the `Connection` field list `name` (compared without building a `HeaderName` per token)?
fn connection_names(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case(name))
}

/// Remove every field for which `drop` is true. Requests and responses have a handful of
/// fields and usually none to drop: one scan per removal, no list built.
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderMap, &str) -> bool) {
    while let Some(name) = headers.keys().find(|n| drop(headers, n.as_str())).cloned() {
        headers.remove(name);
    }
}

/// Remove hop-by-hop fields — those `Connection` names (first, while it is there to be read),
/// then the RFC 9110 §7.6.1 ones — and any field for which `also` is true.
fn remove_hop_by_hop_and(headers: &mut HeaderMap, also: impl Fn(&str) -> bool) {
    remove_where(headers, |h, n| n != "connection" && connection_names(h, n));
    remove_where(headers, |_, n| HOP_BY_HOP.contains(&n) || also(n));
}

/// Is the cookie in `pair` (`name=value…`, a Cookie pair or a Set-Cookie line) one of this
/// app's cookies (session, chunks, login transactions), or nameless? The name is the text
/// before the first `=`, trimmed (RFC 6265bis); compared case-insensitively, since some
/// browsers treat a nameless `=__Host-bff=…` as `__Host-bff`.
pub fn is_own_cookie(names: &CookieNames, pair: &str) -> bool {
    is_own_piece(names, pair.as_bytes())
}

/// [`is_own_cookie`] on the bytes of a `Cookie` piece, which need not be ASCII.
fn is_own_piece(names: &CookieNames, piece: &[u8]) -> bool {
    let name = crate::cookie_header::name_of(piece);
    let starts = |p: &str| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes());
    name.is_empty() || starts(&names.session) || starts("__Host-bff")
}

/// Client-IP and URL-override headers some upstream frameworks trust; the browser must not
/// be able to set them.
const SPOOFABLE: &[&str] = &[
    "true-client-ip",
    "x-client-ip",
    "cf-connecting-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-method-override",
];

/// What the proxy adds on behalf of the client.
pub struct Forwarding<'a> {
    pub names: &'a CookieNames,
    pub peer: IpAddr,
    pub peer_trusted: bool,
    /// The client: `peer`, or behind a trusted proxy the first address of its chain, read from
    /// the right, that is not a trusted proxy. `X-Real-IP` and `Forwarded` name it.
    pub client: IpAddr,
    /// "https" or "http", from `public_url`.
    pub proto: &'a HeaderValue,
    /// host[:port] from `public_url`.
    pub host: &'a HeaderValue,
    pub bearer: Option<HeaderValue>,
    pub request_id: Option<&'a HeaderValue>,
}

/// Turn the browser's headers into the headers to send upstream, in place: hop-by-hop and
/// `Connection`-named fields, `Host`, the browser's `Authorization`, client-supplied
/// `Forwarded`/`X-Forwarded-*`/`X-Real-IP` and our own cookies removed; `Authorization:
/// Bearer`, `X-Forwarded-For/Proto/Host` and `X-Request-Id` set.
pub fn upstream_request(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    // The chain a trusted proxy reported, read before the fields are dropped.
    let client_chain = if f.peer_trusted {
        let mut chain = String::new();
        for v in headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()) {
            if !chain.is_empty() {
                chain.push_str(", ");
            }
            chain.push_str(v);
        }
        (!chain.is_empty()).then_some(chain)
    } else {
        None
    };
    // A scan of the few fields a request has, rather than one lookup per name it might have;
    // `remove` drops every field of a name.
    // SPEC §7: a `tracestate` is continued only from a trusted proxy (with traces on, the
    // upstream call's span sets both trace fields afresh). Removed in the same scan.
    remove_hop_by_hop_and(headers, |n| browser_may_not_set(n) || (!f.peer_trusted && n == "tracestate"));
    if headers.contains_key(header::COOKIE) {
        rewrite_cookie(headers, f.names);
    }
    let client = PeerFields::of(f);
    let xff = match client_chain {
        Some(chain) => HeaderValue::from_str(&format!("{chain}, {}", f.peer)).ok(),
        None if f.client == f.peer => Some(client.address.clone()),
        None => HeaderValue::from_str(&f.peer.to_string()).ok(),
    };
    if let Some(v) = xff {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), f.proto.clone());
    headers.insert(HeaderName::from_static("x-forwarded-host"), f.host.clone());
    // The browser's Forwarded and X-Real-IP were removed above; these are ours (RFC 7239),
    // naming the same client as X-Forwarded-For's first trusted hop.
    headers.insert(HeaderName::from_static("x-real-ip"), client.address);
    if let Some(v) = client.forwarded {
        headers.insert(header::FORWARDED, v);
    }
    if let Some(id) = f.request_id {
        headers.insert(HeaderName::from_static("x-request-id"), id.clone());
    }
    if let Some(b) = &f.bearer {
        headers.insert(header::AUTHORIZATION, b.clone());
    }
}

/// Fields the browser may not send upstream, besides hop-by-hop ones: what the BFF sets itself
/// (`Host`, `Authorization`, `DPoP`, `Forwarded`, `X-Forwarded-*`, `X-Real-IP`), `SPOOFABLE`,
/// and `baggage` (SPEC §7: the browser's baggage is dropped, traces on or off).
fn browser_may_not_set(name: &str) -> bool {
    matches!(name, "host" | "authorization" | "dpop" | "forwarded" | "x-real-ip" | "baggage")
        || name.starts_with("x-forwarded-")
        || SPOOFABLE.contains(&name)
}

/// The fields that name the client: its address, and `Forwarded` for it. The same client sends
/// many requests (keep-alive), so the last client's values are kept per thread instead of
/// formatted and allocated on every request.
#[derive(Clone)]
struct PeerFields {
    client: IpAddr,
    proto: HeaderValue,
    host: HeaderValue,
    address: HeaderValue,
    forwarded: Option<HeaderValue>,
}

impl PeerFields {
    fn of(f: &Forwarding<'_>) -> Self {
        thread_local! {
            static LAST: std::cell::RefCell<Option<PeerFields>> = const { std::cell::RefCell::new(None) };
        }
        LAST.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some(p) if p.client == f.client && p.proto == f.proto && p.host == f.host => p.clone(),
                _ => {
                    let fresh = Self::new(f);
                    *last = Some(fresh.clone());
                    fresh
                }
            }
        })
    }

    fn new(f: &Forwarding<'_>) -> Self {
        let peer = f.client.to_string();
        let node = if f.client.is_ipv6() { format!("\"[{peer}]\"") } else { peer.clone() };
        let forwarded = format!(
            "for={node};proto={};host=\"{}\"",
            f.proto.to_str().unwrap_or("https"),
            f.host.to_str().unwrap_or_default()
        );
        Self {
            client: f.client,
            proto: f.proto.clone(),
            host: f.host.clone(),
            // An IP address's text is always a valid field value.
            address: HeaderValue::from_str(&peer).unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_str(&forwarded).ok(),
        }
    }
}

/// The browser's cookies without this app's, as one `Cookie` field: HTTP/2 crumbs joined with
/// `; ` (RFC 9113 §8.2.3: an HTTP/1.1 upstream expects one field). Every other piece passes as
/// the browser sent it, ASCII or not. A single field with nothing of ours is kept as it is.
fn rewrite_cookie(headers: &mut HeaderMap, names: &CookieNames) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    let single = fields.next().filter(|_| fields.next().is_none());
    if single.is_some_and(|v| !crate::cookie_header::split(v.as_bytes()).any(|p| is_own_piece(names, p))) {
        return;
    }
    let mut joined: Vec<u8> = Vec::new();
    for piece in crate::cookie_header::pieces(headers).filter(|p| !is_own_piece(names, p)) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(piece);
    }
    headers.remove(header::COOKIE);
    // Pieces of valid field values joined with "; " are a valid field value.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined))
        && !v.is_empty()
    {
        headers.insert(header::COOKIE, v);
    }
}

/// Clean an upstream response's headers in place: hop-by-hop fields, `Access-Control-*`, and
/// `Set-Cookie` (all of it unless `forward_set_cookie`, and never one of our names).
pub fn downstream_response(headers: &mut HeaderMap, names: &CookieNames, forward_set_cookie: bool) {
    remove_hop_by_hop_and(headers, |n| n.starts_with("access-control-"));
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let cookies: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
    headers.remove(header::SET_COOKIE);
    if forward_set_cookie {
        for c in cookies {
            let own = c.to_str().map(|s| is_own_cookie(names, s.trim_start())).unwrap_or(true);
            if !own {
                headers.append(header::SET_COOKIE, c);
            }
        }
    }
}

/// `Cache-Control` directives, split on commas outside quoted strings (`private="a, b"`).
fn directives(value: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    value
        .split(move |c| {
            if c == '"' {
                quoted = !quoted;
            }
            c == ',' && !quoted
        })
        .map(str::trim)
        .filter(|d| !d.is_empty())
}

/// The answer to a request that carried a session (SPEC §6): a shared cache in front of the BFF
/// sees only a cookie, not the `Authorization` that RFC 9111 §3.5 protects, so the answer gets
/// `Cache-Control: private` and `Vary: Cookie` — unless the upstream already said an unqualified
/// `private` or `no-store`. `public`, `s-maxage` and a qualified `private="…"` (which lets a
/// shared cache store the rest) are removed; other directives (`max-age`…) stay. Fields that
/// speak to a CDN over `Cache-Control` (RFC 9213 `CDN-Cache-Control` and its vendor forms,
/// `Surrogate-Control`, `Edge-Control`) are removed in every case.
pub fn private_to_shared_caches(headers: &mut HeaderMap) {
    let targets_a_cdn = |n: &str| {
        (n.ends_with("cache-control") && n != "cache-control") || n == "surrogate-control" || n == "edge-control"
    };
    // One look at the names present: most API answers carry neither field, and then nothing is
    // parsed or allocated.
    let (mut cache_control, mut vary, mut cdn) = (false, false, false);
    for name in headers.keys() {
        if name == header::CACHE_CONTROL {
            cache_control = true;
        } else if name == header::VARY {
            vary = true;
        } else {
            cdn |= targets_a_cdn(name.as_str());
        }
    }
    if cdn {
        remove_where(headers, |_, n| targets_a_cdn(n));
    }
    if !cache_control && !vary {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        headers.insert(header::VARY, HeaderValue::from_static("Cookie"));
        return;
    }
    let mut kept = String::new();
    let mut any = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        any = true;
        let Ok(value) = value.to_str() else { continue };
        for d in directives(value) {
            let name = d.split('=').next().unwrap_or(d).trim();
            let unqualified = !d.contains('=');
            if name.eq_ignore_ascii_case("no-store") || (name.eq_ignore_ascii_case("private") && unqualified) {
                return;
            }
            if name.eq_ignore_ascii_case("public")
                || name.eq_ignore_ascii_case("s-maxage")
                || name.eq_ignore_ascii_case("private")
            {
                continue;
            }
            kept.push_str(", ");
            kept.push_str(d);
        }
    }
    let value = if !any || kept.is_empty() {
        HeaderValue::from_static("private")
    } else {
        HeaderValue::from_str(&format!("private{kept}")).unwrap_or(HeaderValue::from_static("private"))
    };
    headers.insert(header::CACHE_CONTROL, value);
    let varies = headers.get_all(header::VARY).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
    if !varies.map(str::trim).any(|v| v == "*" || v.eq_ignore_ascii_case("cookie")) {
        headers.append(header::VARY, HeaderValue::from_static("Cookie"));
    }
}

#[cfg(test)]
mod tests;
