//! The API proxy (SPEC §6), without its HTTP handler (`routes::proxy`): the upstream clients
//! (this process's own HTTP/1.1 pools for plain-http upstreams, `pool`), the route a path
//! selects, the upstream URI, header rewriting both ways (`headers`) and the idle timeout of
//! streamed bodies (`idle`).

pub mod dpop;
pub mod headers;
pub mod idle;
pub mod path;
pub mod pool;
pub mod websocket;

use crate::settings::Settings;
use crate::settings::routes::Route;
use http::{HeaderValue, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
pub use pool::{PooledBody, SendError, UpstreamBody};
use std::time::Duration;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The shared upstream clients and the values every forwarded request carries.
///
/// hyper's own connections (`pool`) for plain-http upstreams, hyper-util's pooled client (the
/// one reqwest wraps) for https ones: either way requests keep the browser's body stream and an
/// `http::Uri` built from the raw path, with no URL re-parsing (which could re-normalise the
/// path) and no per-request conversions. Measured in docs/benchmarks.md.
pub struct Proxy {
    client: Client<Connector, UpstreamBody>,
    /// Plain-http upstream origins, one pool each (`pool`); https ones use `client`.
    pools: Vec<pool::Pool>,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host`: the public URL's.
    pub proto: HeaderValue,
    pub host: HeaderValue,
    paths: path::PathRules,
    /// `{base}/callback/`: the providers' own callback paths live below it (SPEC §3.7).
    callback_prefix: String,
    /// DPoP nonces the upstreams asked for (SPEC §3.6).
    pub nonces: crate::oidc::dpop::Nonces,
    /// WebSocket upstreams (SPEC §6.3): a connection of their own each, HTTP/1.1 only.
    pub websockets: websocket::Connector,
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
            .wrap_connector(http.clone());
        let websockets = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http.clone());
        let mut pools: Vec<pool::Pool> = Vec::new();
        for route in &settings.routes {
            if let Some(p) = pool::Pool::for_upstream(&route.upstream, &http)
                && !pools.iter().any(|q| q.same_origin(&p))
            {
                pools.push(p);
            }
        }
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
        let endpoints = crate::settings::endpoint_paths(settings);
        let callback_prefix = format!("{}/callback/", settings.server.base_path);
        Ok(Self {
            callback_prefix,
            paths: path::PathRules::new(&settings.routes, &endpoints),
            client,
            pools,
            proto: HeaderValue::from_str(url.scheme()).unwrap_or(HeaderValue::from_static("https")),
            host: HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("")),
            nonces: Default::default(),
            websockets,
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

    /// Is `path` literally one of the BFF's own endpoints (as the router matches them)? Every
    /// path below `{base}/callback/` is the router's (it answers unknown provider names 404).
    pub fn is_endpoint(&self, path: &str) -> bool {
        self.paths.is_endpoint(path) || path.starts_with(self.callback_prefix.as_str())
    }

    /// Send one request upstream: plain http on this process's own pools (`pool`), https
    /// through hyper-util's client (HTTP/2 where the upstream offers it).
    pub async fn send(&self, req: http::Request<UpstreamBody>) -> Result<http::Response<PooledBody>, SendError> {
        if let Some(pool) = self.pools.iter().find(|p| p.serves(req.uri())) {
            return pool.send(req).await;
        }
        // Boxed: this future is large, and inline it would size every request's future.
        match Box::pin(self.client.request(req)).await {
            Ok(r) => Ok(r.map(PooledBody::unpooled)),
            Err(e) => Err(SendError::Client(e)),
        }
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
