//! Which route a request path selects (SPEC §6), decided so that what we match is what the
//! upstream serves.
//!
//! Routes match the raw path at segment boundaries, longest prefix first. The path is refused
//! (400 `invalid_path`) when it cannot be read safely at all (`path_reading`), or when its
//! lenient reading — how an upstream that decodes, drops `;params`, strips trailing dots,
//! normalises Unicode or ignores case would read it — selects another route, or one of the
//! BFF's own endpoints, than the raw path does: `DELETE /api//admin`, `/api/%61dmin` or
//! `/api/ADMIN` cannot dodge a GET-only `/api/admin` route through `/api`. The upstream URL is
//! still built from the raw path, never re-normalised.

use crate::path_reading::{self, Refused, under};
use crate::settings::routes::Route;

/// Route prefixes and the BFF's own paths, each with its lenient reading.
#[derive(Debug)]
pub struct PathRules {
    /// Lenient readings of the route prefixes, in the routes' order (longest raw prefix first).
    routes: Vec<String>,
    /// Lenient readings of the BFF's own endpoints (`/login`, `/session`, `/healthz`…).
    endpoints: Vec<String>,
    /// The endpoints as the router matches them: exactly.
    literal: Vec<String>,
}

/// What a path selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selected {
    Endpoint,
    Route(usize),
    Nothing,
}

/// The lenient reading of a route prefix or endpoint path; configuration validation refuses
/// prefixes that cannot be read (`settings::routes`), so this never fails for them.
fn read(path: &str) -> String {
    path_reading::lenient(path).map(|p| p.to_ascii_lowercase()).unwrap_or_else(|_| path.to_owned())
}

impl PathRules {
    /// `routes` in matching order (as `Settings::routes`); `endpoints` the BFF's own paths.
    pub fn new(routes: &[Route], endpoints: &[String]) -> Self {
        Self {
            routes: routes.iter().map(|r| read(&r.prefix)).collect(),
            endpoints: endpoints.iter().map(|e| read(e)).collect(),
            literal: endpoints.to_vec(),
        }
    }

    /// Is `path` exactly one of the BFF's own endpoints?
    pub fn is_endpoint(&self, path: &str) -> bool {
        self.literal.iter().any(|e| e == path)
    }

    fn select_lenient(&self, reading: &str) -> Selected {
        if self.endpoints.iter().any(|e| e.eq_ignore_ascii_case(reading)) {
            return Selected::Endpoint;
        }
        // Lenient prefixes are not necessarily in longest-first order: take the longest.
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, p)| under(reading, p))
            .max_by_key(|(_, p)| p.len())
            .map_or(Selected::Nothing, |(i, _)| Selected::Route(i))
    }

    /// The route `path` (raw, no query) selects among `routes` (the ones given to `new`), or
    /// none (static files, 404). `Err` when the path must be refused with `invalid_path`. Only
    /// paths that no BFF endpoint matched literally reach this.
    pub fn select<'r>(&self, routes: &'r [Route], path: &str) -> Result<Option<&'r Route>, Refused> {
        let reading = path_reading::lenient(path)?;
        let raw = routes.iter().position(|r| r.matches(path));
        let literal = raw.map_or(Selected::Nothing, Selected::Route);
        let lenient = self.select_lenient(&reading);
        if literal != lenient {
            tracing::warn!(?literal, ?lenient, "a path whose lenient reading selects another route was refused");
            return Err(Refused);
        }
        Ok(raw.map(|i| &routes[i]))
    }
}

/// True if `path` (the raw request path, no query) can be read safely at all, whatever the
/// routes (see `path_reading`).
pub fn is_safe(path: &str) -> bool {
    path_reading::lenient(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::routes::RouteAuth;

    fn route(prefix: &str) -> Route {
        Route {
            prefix: prefix.into(),
            upstream: "http://u".into(),
            auth: RouteAuth::Required,
            strip_prefix: false,
            timeout: std::time::Duration::from_secs(1),
            csrf: true,
            methods: vec![],
            forward_set_cookie: false,
            token: crate::settings::routes::RouteToken::Session,
            providers: vec![],
            websocket: false,
        }
    }

    #[test]
    fn a_reading_that_selects_another_route_or_an_endpoint_is_refused() {
        let routes = vec![route("/api/admin"), route("/api"), route("/public")];
        let rules = PathRules::new(&routes, &["/session".into(), "/login".into()]);
        let pick = |p: &str| rules.select(&routes, p).map(|r| r.map(|r| r.prefix.clone()));
        assert_eq!(pick("/api/x"), Ok(Some("/api".into())));
        assert_eq!(pick("/api/admin/x"), Ok(Some("/api/admin".into())));
        assert_eq!(pick("/api/%61bc"), Ok(Some("/api".into())), "another spelling of the same route");
        assert_eq!(pick("/api/a;v=1"), Ok(Some("/api".into())));
        assert_eq!(pick("/assets/App.JS"), Ok(None));
        for p in [
            "/api/%61dmin",
            "/api//admin",
            "/api/ADMIN/x",
            "/api/admin;x/y",
            "/API/x",
            "/Session",
            "/login/",
            "/public/..%20/api",
        ] {
            assert_eq!(pick(p), Err(Refused), "{p}");
        }
    }
}
