//! Small checks the sections of the configuration share. Each problem is pushed as one line
//! naming its key; nothing stops early.

use std::fmt;
use std::net::IpAddr;
use url::Url;

pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn push(&mut self, key: &str, msg: impl fmt::Display) {
        self.0.push(format!("{key}: {msg}"));
    }
}

/// An OAuth scope token (RFC 6749 §3.3), kept to what survives every IdP's parser: no spaces,
/// quotes, backslashes or control characters.
pub(super) fn scope_token_ok(s: &str) -> bool {
    !s.is_empty() && !s.contains(|c: char| c == ' ' || c.is_control() || c == '"' || c == '\\')
}

/// An RFC 8707 resource indicator: an absolute URI (`https://…`, `urn:…`) without a fragment,
/// sent as written.
pub(super) fn resource_ok(s: &str) -> bool {
    !s.contains(|c: char| c.is_whitespace() || c.is_control()) && Url::parse(s).is_ok_and(|u| u.fragment().is_none())
}

pub(super) fn secs(key: &str, v: u64, min: u64, max: u64, p: &mut Problems) -> u64 {
    if !(min..=max).contains(&v) {
        p.push(key, format_args!("must be between {min} and {max}"));
    }
    v
}

pub(super) fn read_secret_file(key: &str, path: &str, p: &mut Problems) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s.trim_end_matches(['\n', '\r']).to_owned()),
        Err(e) => {
            p.push(key, format_args!("cannot read {path:?}: {}", e.kind()));
            None
        }
    }
}

pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An origin: http(s), a host, no path/query/fragment/userinfo.
pub(super) fn parse_origin(s: &str) -> Result<(Url, String), &'static str> {
    let url = Url::parse(s).map_err(|_| "not an absolute URL")?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err("must be an http(s) URL with a host");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must be an origin (scheme, host, port) without path, query or credentials");
    }
    let origin = url.origin().ascii_serialization();
    Ok((url, origin))
}

/// Same site, approximated without a public-suffix list: same scheme and either the same
/// host or hosts sharing a parent domain of at least two labels. Stricter than browsers for
/// most names; documented in docs/security.md.
pub(super) fn same_site(a: &Url, b: &Url) -> bool {
    if a.scheme() != b.scheme() {
        return false;
    }
    let (Some(ha), Some(hb)) = (a.host_str(), b.host_str()) else {
        return false;
    };
    if ha == hb {
        return true;
    }
    let site = |h: &str| -> Option<String> {
        if h.parse::<IpAddr>().is_ok() || h.starts_with('[') {
            return None;
        }
        let labels: Vec<&str> = h.split('.').collect();
        (labels.len() >= 2).then(|| labels[labels.len() - 2..].join("."))
    };
    matches!((site(ha), site(hb)), (Some(x), Some(y)) if x == y)
}

pub(super) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip.parse::<IpAddr>().ok()?, bits.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}
