//! The admin listener (`server.admin_listen`, SPEC §7): Prometheus `/metrics`, never on the
//! public listener. What it renders is recorded through `crate::metrics`.

use metrics_exporter_prometheus::PrometheusHandle;

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
                async move {
                    crate::metrics::collect_process();
                    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
                }
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
