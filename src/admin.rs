//! The admin listener (`server.admin_listen`, SPEC §7): Prometheus `/metrics`, never on the
//! public listener. The code records through the `metrics` facade everywhere; without an admin
//! listener no recorder is installed and every record is a no-op.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Seconds, for request, token-endpoint and upstream latencies.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Bytes, for the sealed session cookie.
const SIZE_BUCKETS: &[f64] = &[512.0, 1024.0, 2048.0, 3072.0, 3800.0, 7600.0, 15200.0, 30400.0];

/// Install the process-wide recorder (once) and return the handle that renders it.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS));
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => {
                    metrics::gauge!("bff_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .clone()
}

/// Is a recorder installed (an admin listener configured)? Hot paths skip metric work if not.
pub fn enabled() -> bool {
    HANDLE.get().is_some_and(Option::is_some)
}

/// A bounded label for an HTTP status.
pub fn status_label(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        303 => "303",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        413 => "413",
        429 => "429",
        431 => "431",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// Login failures by SPEC error code.
pub fn login_failed(code: &'static str) {
    metrics::counter!("bff_logins_total", "result" => "failed", "reason" => code).increment(1);
}

/// Serve `/metrics` (and `/healthz`) on `listener` until `shutdown`, with the public listener's
/// header limits and timeout, HTTP/1 only, at most 64 connections (`listener::Limits`, SPEC §7).
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    limits: crate::listener::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let serve_one = move |req: http::Request<axum::body::Body>, _peer| {
        let app = app.clone();
        async move {
            match tower::ServiceExt::oneshot(app, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    crate::listener::serve(listener, limits, serve_one, shutdown, drain).await;
}
