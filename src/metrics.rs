//! The metrics facade the code records through (the `metrics` crate's macros, plus the few
//! helpers below). Without an admin listener (`server.admin_listen`, served by `admin`) no
//! recorder is installed and every record is a no-op; hot paths ask [`enabled`] before doing
//! any work for a metric.

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
