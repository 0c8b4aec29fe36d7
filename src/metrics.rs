//! The metrics facade the code records through (the `metrics` crate's macros, plus the few
//! helpers below). Without an admin listener (`server.admin_listen`, served by `admin`) no
//! recorder is installed and every record is a no-op; hot paths ask [`enabled`] before doing
//! any work for a metric.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// The process collector (`process_*`, Prometheus' standard names), read at every scrape.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

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
                    describe();
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

/// Every family's `# HELP` (SPEC §7: Prometheus conventions); docs/operations.md lists the same.
fn describe() {
    let process = PROCESS.get_or_init(metrics_process::Collector::default);
    process.describe();
    describe_counter!("bff_http_requests_total", "HTTP requests by route class and status code");
    describe_histogram!(
        "bff_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency to the response head"
    );
    describe_gauge!("bff_http_requests_in_flight", "HTTP requests being handled (to their response head)");
    describe_counter!("bff_logins_total", "logins started, completed and failed (by SPEC error code)");
    describe_histogram!("bff_idp_token_duration_seconds", Unit::Seconds, "IdP token-endpoint latency by grant");
    describe_counter!("bff_idp_token_errors_total", "IdP token-endpoint errors by grant and kind");
    describe_histogram!("bff_idp_par_duration_seconds", Unit::Seconds, "pushed-authorization-request latency");
    describe_counter!("bff_idp_par_errors_total", "pushed-authorization-request errors by kind");
    describe_gauge!("bff_provider_ready", "1 once the provider's discovery and keys are loaded, else 0");
    describe_counter!("bff_refresh_total", "refresh grants by result");
    describe_counter!("bff_refresh_cache_hits_total", "pre-refresh cookies served from the refresh cache");
    describe_counter!("bff_refresh_cache_evictions_total", "in-memory cache entries evicted before they expired");
    describe_gauge!("bff_refresh_cache_bytes", Unit::Bytes, "bytes held by the in-memory refresh and exchange caches");
    describe_counter!("bff_token_exchanges_total", "route token exchanges at the IdP by outcome");
    describe_counter!("bff_exchange_cache_hits_total", "proxied requests served an exchanged token from the cache");
    describe_histogram!("bff_upstream_duration_seconds", Unit::Seconds, "time to the upstream's response head");
    describe_counter!("bff_upstream_errors_total", "upstream failures by kind");
    describe_counter!("bff_access_log_dropped_total", "access-log lines dropped because the output did not keep up");
    describe_counter!("bff_log_dropped_total", "other log lines dropped because the output did not keep up");
    describe_counter!("bff_trace_spans_exported_total", "spans sent to the OTLP collector");
    describe_counter!(
        "bff_trace_spans_dropped_total",
        "spans not sent: the export queue was full, or the collector failed or did not answer"
    );
    describe_counter!("bff_sessions_ended_total", "sessions ended by reason");
    describe_histogram!("bff_session_cookie_bytes", Unit::Bytes, "sealed session cookie size");
    describe_counter!("bff_backchannel_logouts_total", "back-channel logout tokens by result");
    describe_counter!("bff_store_errors_total", "session store operations that failed or timed out");
    describe_counter!(
        "bff_store_unreplicated_writes_total",
        "Redis writes (cluster, sentinel) that no replica acknowledged within 500 ms"
    );
    describe_gauge!("bff_event_streams", "open /session/events streams");
    describe_gauge!("bff_websockets", "open proxied WebSockets");
    describe_counter!("bff_events_publish_errors_total", "session events not sent to the other instances");
    describe_counter!("bff_event_streams_refused_total", "streams and WebSockets refused at a cap");
    describe_gauge!("bff_build_info", "1, labelled with the version");
}

/// Bring the process collector's values up to date (before each `/metrics` render).
pub fn collect_process() {
    if let Some(p) = PROCESS.get() {
        p.collect();
    }
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
