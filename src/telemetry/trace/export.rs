//! The way out for finished spans: a bounded queue that a request never waits on, and one task
//! on the server's runtime that sends them in batches with the OTLP/HTTP exporter (protobuf,
//! the async reqwest client).
//!
//! Why not the SDK's batch processor: it runs the exporter on a thread of its own with a
//! blocking executor, where the async reqwest client has no runtime to run on; and it drops
//! spans without counting them. Here every span that is not sent is counted in
//! `bff_trace_spans_dropped_total` (`reason`: `queue_full` or `export_failed`), and a failing
//! collector is logged at most once a minute.

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter as _, SpanProcessor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Spans waiting to be sent at most; past that, new ones are dropped (and counted).
const QUEUE: usize = 4096;
/// Spans per export request at most.
const BATCH: usize = 512;
/// A span waits at most this long before it is sent.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// One export request's bound (connect included): a collector that hangs costs spans, not time.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The SDK's span processor: hands finished spans to the queue.
#[derive(Debug)]
pub struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            metrics::counter!("bff_trace_spans_dropped_total", "reason" => "queue_full").increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Held by `main`: `finish` sends what is queued and stops the export task.
#[derive(Debug)]
pub struct TraceGuard {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl TraceGuard {
    /// Send the queued spans, waiting at most `within`.
    pub async fn finish(self, within: Duration) {
        self.stop.notify_one();
        let _ = tokio::time::timeout(within, self.task).await;
    }
}

/// Build the exporter for `url` (`…/v1/traces`) and start the export task.
pub fn start(url: &url::Url, resource: &opentelemetry_sdk::Resource) -> Result<(Queue, TraceGuard), String> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(crate::tls::alpn(crate::tls::client_config().map_err(|e| e.to_string())?))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(EXPORT_TIMEOUT)
        .connect_timeout(EXPORT_TIMEOUT)
        .user_agent(concat!("oidc-bff/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the OTLP client: {e}"))?;
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    exporter.set_resource(resource);
    let (tx, rx) = mpsc::channel(QUEUE);
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn(run(exporter, rx, stop.clone()));
    Ok((Queue { tx }, TraceGuard { stop, task }))
}

async fn run(exporter: opentelemetry_otlp::SpanExporter, mut rx: mpsc::Receiver<SpanData>, stop: Arc<Notify>) {
    let mut last_warning: Option<Instant> = None;
    let mut closing = false;
    while !closing {
        let deadline = Instant::now() + FLUSH_EVERY;
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            let room = BATCH - batch.len();
            tokio::select! {
                biased;
                () = stop.notified() => {
                    closing = true;
                    break;
                }
                n = rx.recv_many(&mut batch, room) => if n == 0 {
                    closing = true;
                    break;
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        if closing {
            // What is queued at exit goes out too, batch by batch.
            while let Ok(span) = rx.try_recv() {
                if batch.len() == BATCH {
                    send(&exporter, std::mem::take(&mut batch), &mut last_warning).await;
                }
                batch.push(span);
            }
        }
        if !batch.is_empty() {
            send(&exporter, batch, &mut last_warning).await;
        }
    }
}

async fn send(exporter: &opentelemetry_otlp::SpanExporter, batch: Vec<SpanData>, last_warning: &mut Option<Instant>) {
    let n = batch.len() as u64;
    let failed = match tokio::time::timeout(EXPORT_TIMEOUT + Duration::from_secs(1), exporter.export(batch)).await {
        Ok(Ok(())) => {
            metrics::counter!("bff_trace_spans_exported_total").increment(n);
            return;
        }
        Ok(Err(_)) => "the collector refused the spans or could not be reached",
        Err(_) => "the collector did not answer in time",
    };
    metrics::counter!("bff_trace_spans_dropped_total", "reason" => "export_failed").increment(n);
    // The exporter's error text may quote the collector's answer: not logged.
    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
        *last_warning = Some(Instant::now());
        tracing::warn!(
            spans = n,
            "trace export failed: {failed}; the spans are dropped (bff_trace_spans_dropped_total)"
        );
    }
}
