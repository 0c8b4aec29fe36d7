//! `[[routes]]` (SPEC §2, §6): path prefixes mapped to upstreams, validated at start-up.

use super::checks::{resource_ok, scope_token_ok};
use super::raw::RawRoute;
use http::Method;
use std::time::Duration;
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// No session: 401 `unauthenticated`.
    Required,
    /// Forward anonymous requests without a token; with a session, add it.
    Optional,
    /// Never a token, even with a session.
    None,
}

/// Which token a route's upstream receives (SPEC §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteToken {
    /// The login's access token.
    Session,
    /// A token exchanged (RFC 8693) for this route alone.
    Exchange(ExchangeSpec),
    /// No `Authorization` header; `auth` still decides whether a session is needed.
    None,
}

/// What a route's exchanged token is asked for: each value as configured, sent when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// RFC 8707 `resource`.
    pub resource: Option<String>,
    /// RFC 8693 `audience`.
    pub audience: Option<String>,
    /// `scope`, space-separated.
    pub scope: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// "/api" (no trailing slash), matched at segment boundaries.
    pub prefix: String,
    /// The upstream base without a trailing slash, e.g. "http://orders:8080" or ".../v1".
    pub upstream: String,
    pub auth: RouteAuth,
    pub strip_prefix: bool,
    pub timeout: Duration,
    pub csrf: bool,
    /// Empty: every method.
    pub methods: Vec<Method>,
    pub forward_set_cookie: bool,
    pub token: RouteToken,
    /// Only sessions of these providers may use the route (SPEC §3.7); empty = every one.
    pub providers: Vec<String>,
    /// `Upgrade: websocket` is relayed (SPEC §6.3).
    pub websocket: bool,
}

impl Route {
    /// Does `path` fall under this route (at a segment boundary)?
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
            None => false,
        }
    }
}

/// `token` and the exchange keys that only it may use (SPEC §2, §6.2).
fn route_token(r: &RawRoute, auth: RouteAuth, bad: &mut impl FnMut(&str, &str)) -> RouteToken {
    let set = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let (resource, audience) = (set(&r.resource), set(&r.audience));
    let scopes = r.scopes.as_deref().unwrap_or_default();
    match r.token.as_deref().unwrap_or("session") {
        "exchange" => {
            if auth == RouteAuth::None {
                bad("token", "\"exchange\" needs a session: not allowed with auth = \"none\"");
            }
            if resource.as_deref().is_some_and(|v| !resource_ok(v)) {
                bad("resource", "must be an absolute URI without a fragment (RFC 8707)");
            }
            if audience.as_deref().is_some_and(|v| v.contains(|c: char| c.is_control() || c == ' ')) {
                bad("audience", "may not contain spaces or control characters");
            }
            if !scopes.iter().all(|s| scope_token_ok(s)) {
                bad("scopes", "scope tokens may not contain spaces, quotes or control characters");
            }
            let scope = (!scopes.is_empty()).then(|| scopes.join(" "));
            RouteToken::Exchange(ExchangeSpec { resource, audience, scope })
        }
        other => {
            for (key, is_set) in
                [("resource", resource.is_some()), ("audience", audience.is_some()), ("scopes", !scopes.is_empty())]
            {
                if is_set {
                    bad(key, "only with token = \"exchange\"");
                }
            }
            match other {
                "session" => RouteToken::Session,
                "none" => RouteToken::None,
                _ => {
                    bad("token", "must be session, exchange or none");
                    RouteToken::Session
                }
            }
        }
    }
}

fn valid_prefix(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && !p.contains("//")
        && p.split('/').skip(1).all(|seg| seg != "." && seg != "..")
        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        && crate::path_reading::lenient(p).is_ok()
}

/// Validate the routes; `reserved` are the BFF's own paths, which routes may not overlap.
pub fn validate(raw: Vec<RawRoute>, reserved: &[String], problems: &mut Vec<String>) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        let mut bad = |field: &str, msg: &str| problems.push(format!("{key}.{field}: {msg}"));
        if !valid_prefix(&r.prefix) {
            bad(
                "prefix",
                "must look like \"/api\": starts with /, no trailing slash, no dot segments, letters digits - _ . ~ /",
            );
        }
        // Compared in their lenient readings (SPEC §6): a route `/Session` would be refused on
        // every request that spells the BFF's own `/session`, so it is refused here.
        let reading = crate::path_reading::lenient(&r.prefix).map(|p| p.to_ascii_lowercase()).unwrap_or_default();
        let overlaps = reserved.iter().any(|res| {
            let res = res.to_ascii_lowercase();
            res == reading || res.starts_with(&format!("{reading}/")) || reading.starts_with(&format!("{res}/"))
        });
        if overlaps {
            bad("prefix", "overlaps an endpoint of the BFF itself");
        }
        let upstream = match Url::parse(&r.upstream) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() =>
            {
                // The parsed (normalised) form, checked to be an `http::Uri` too: what is
                // validated here is exactly what requests are built from.
                let base = u.as_str().trim_end_matches('/').to_owned();
                match http::Uri::try_from(format!("{base}/")) {
                    Ok(_) => Some(base),
                    Err(_) => {
                        bad("upstream", "is not a valid request URI");
                        None
                    }
                }
            }
            _ => {
                bad("upstream", "must be an http(s) URL without query, fragment or credentials");
                None
            }
        };
        let auth = match r.auth.as_deref().unwrap_or("required") {
            "required" => RouteAuth::Required,
            "optional" => RouteAuth::Optional,
            "none" => RouteAuth::None,
            _ => {
                bad("auth", "must be required, optional or none");
                RouteAuth::Required
            }
        };
        let timeout = r.timeout_secs.unwrap_or(30);
        if !(1..=3600).contains(&timeout) {
            bad("timeout_secs", "must be between 1 and 3600");
        }
        let mut methods = Vec::new();
        for m in &r.methods {
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(method),
                _ => bad("methods", &format!("{m:?} is not an upper-case HTTP method")),
            }
        }
        let csrf = r.csrf.unwrap_or(true);
        let read_only = !methods.is_empty() && methods.iter().all(|m| *m == Method::GET || *m == Method::HEAD);
        if !csrf && !read_only {
            bad("csrf", "false is allowed only on routes whose methods are limited to GET and HEAD");
        }
        if r.websocket && !methods.is_empty() && !methods.contains(&Method::GET) {
            bad("websocket", "a WebSocket opens with GET: methods must include it");
        }
        let token = route_token(&r, auth, &mut bad);
        if !r.providers.is_empty() && auth == RouteAuth::None {
            bad("providers", "limits sessions: not allowed with auth = \"none\"");
        }
        if let Some(upstream) = upstream {
            routes.push(Route {
                prefix: r.prefix,
                upstream,
                auth,
                strip_prefix: r.strip_prefix,
                timeout: Duration::from_secs(timeout),
                csrf,
                methods,
                forward_set_cookie: r.forward_set_cookie,
                token,
                providers: r.providers,
                websocket: r.websocket,
            });
        }
    }
    for (i, a) in routes.iter().enumerate() {
        let reading = |p: &str| crate::path_reading::lenient(p).map(|r| r.to_ascii_lowercase()).ok();
        if routes[..i].iter().any(|b| b.prefix == a.prefix) {
            problems.push(format!("routes: prefix {:?} is declared twice", a.prefix));
        } else if let Some(b) = routes[..i].iter().find(|b| reading(&b.prefix) == reading(&a.prefix)) {
            problems.push(format!(
                "routes: prefixes {:?} and {:?} read the same to a lenient upstream (case, trailing dots)",
                b.prefix, a.prefix
            ));
        }
    }
    // Longest prefix first, so the first match wins.
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    routes
}
