//! The API proxy (SPEC §6), without its HTTP handler (`routes::proxy`): the upstream client,
//! the route a path selects, the upstream URI, header rewriting both ways (`headers`) and the
//! idle timeout of streamed bodies (`idle`).

pub mod headers;
pub mod idle;
pub mod path;

use crate::settings::Settings;
use crate::settings::routes::Route;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A request body on its way upstream: the browser's body, streamed, behind its idle timeout.
pub type UpstreamBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The shared upstream client and the values every forwarded request carries.
///
/// hyper-util's pooled client (the one reqwest wraps), used directly: requests keep the
/// browser's body stream and an `http::Uri` built from the raw path, with no URL re-parsing
/// (which could re-normalise the path) and no per-request conversions. Measured in
/// docs/benchmarks.md.
pub struct Proxy {
    client: Client<Connector, UpstreamBody>,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`: the public URL's.
    pub proto: HeaderValue,
    pub host: HeaderValue,
    paths: path::PathRules,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proxy")
    }
}

impl Proxy {
    pub fn new(settings: &Settings) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = crate::tls::client_config()?;
        // HTTP/2 when an https upstream offers it (ALPN), else HTTP/1.1.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let url = &settings.server.public_url;
        let host = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let endpoints = crate::settings::reserved_paths(&settings.server.base_path);
        Ok(Self {
            paths: path::PathRules::new(&settings.routes, &endpoints),
            client,
            proto: HeaderValue::from_str(url.scheme()).unwrap_or(HeaderValue::from_static("https")),
            host: HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("")),
        })
    }
}

impl Proxy {
    /// The route `path` selects (`None`: no route claims it), or `Err` when the path is refused
    /// before routing (SPEC §6).
    pub fn select<'r>(
        &self,
        routes: &'r [Route],
        path: &str,
    ) -> Result<Option<&'r Route>, crate::path_reading::Refused> {
        self.paths.select(routes, path)
    }

    /// Is `path` literally one of the BFF's own endpoints (as the router matches them)?
    pub fn is_endpoint(&self, path: &str) -> bool {
        self.paths.is_endpoint(path)
    }

    /// Send one request upstream (pooled connections, HTTP/2 where an https upstream offers it).
    pub async fn send(
        &self,
        req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(req).await
    }
}

/// The upstream URI: the upstream base plus the raw path (minus the prefix when
/// `strip_prefix`) and query, byte for byte — `http::Uri` does not normalise paths.
pub fn upstream_uri(route: &Route, path: &str, query: Option<&str>) -> Option<Uri> {
    let forwarded = if route.strip_prefix {
        match &path[route.prefix.len()..] {
            "" => "/",
            rest => rest,
        }
    } else {
        path
    };
    let mut s = String::with_capacity(route.upstream.len() + forwarded.len() + query.map_or(0, |q| q.len() + 1));
    s.push_str(&route.upstream);
    s.push_str(forwarded);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    let uri = Uri::try_from(s).ok()?;
    // `http::Uri` keeps the path as given; should it ever differ, refuse rather than forward
    // something other than what was matched.
    uri.path().ends_with(forwarded).then_some(uri)
}
