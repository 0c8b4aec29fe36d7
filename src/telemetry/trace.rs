//! OpenTelemetry traces over OTLP/HTTP (SPEC §7, `[telemetry]`).
//!
//! Spans are built with the OpenTelemetry API here, in one module, rather than from `tracing`
//! spans through `tracing-opentelemetry`: that bridge exports every enabled span of every crate
//! with all its fields, and SPEC §7 wants span attributes from an allow-list (method, route
//! template, status, provider, error code, the peer's scheme, host and port) — never a URL with
//! its path or query, a header value, a token or an IdP's message. Every attribute set anywhere
//! is set by a function of this module, and each takes only those values.
//!
//! Off, the cost is one `OnceLock` read per request: no span, no context, no header parsed.
//! On, a request is a server span (continuing an incoming `traceparent`), each IdP call and
//! upstream call a client span whose context is sent as `traceparent`, each store operation
//! under a request a client span. Spans go to a bounded queue; the export never slows or fails
//! a request (`export`).

mod export;

use crate::settings::{FollowSampled, TelemetrySettings};
use http::{HeaderMap, HeaderValue, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use export::TraceGuard;

static TRACING: OnceLock<Tracing> = OnceLock::new();

struct Tracing {
    tracer: SdkTracer,
    /// `sample_ratio`, for incoming traces (new ones are decided by the provider's sampler).
    ratio: f64,
    follow: FollowSampled,
    forced: Budget,
    propagator: TraceContextPropagator,
    /// Kept so that the provider (and its processor) live as long as the process.
    _provider: SdkTracerProvider,
}

/// Whether spans are being made (an endpoint is configured and `init` ran).
#[inline]
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// Start exporting to `settings.traces_url`; `None` (and nothing started) when it is unset.
/// Must run inside the Tokio runtime: the export task runs on it.
pub fn init(settings: &TelemetrySettings) -> Result<Option<TraceGuard>, String> {
    let Some(url) = &settings.traces_url else { return Ok(None) };
    // `builder_empty`: the default builder would add OTEL_RESOURCE_ATTRIBUTES, outside the allow-list.
    let resource =
        opentelemetry_sdk::Resource::builder_empty().with_service_name(settings.service_name.clone()).build();
    let (processor, guard) = export::start(url, &resource)?;
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio))))
        .with_span_processor(processor)
        .build();
    let tracing = Tracing {
        tracer: provider.tracer("oidc-bff"),
        ratio: settings.sample_ratio,
        follow: settings.follow_incoming_sampled,
        forced: Budget::new(settings.max_forced_samples_per_sec),
        propagator: TraceContextPropagator::new(),
        _provider: provider,
    };
    TRACING.set(tracing).map_err(|_| "traces were already started".to_owned())?;
    Ok(Some(guard))
}

/// The trace and span id of a span, for log lines.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    pub trace_id: opentelemetry::TraceId,
    pub span_id: opentelemetry::SpanId,
}

impl Ids {
    fn of(cx: &Context) -> Option<Self> {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| Self { trace_id: sc.trace_id(), span_id: sc.span_id() })
    }
}

/// The ids of the span the polled task runs in, when traces are on.
pub fn current_ids() -> Option<Ids> {
    if !enabled() {
        return None;
    }
    Ids::of(&Context::current())
}

/// A request's server span, from `begin_request` to `end_request`.
pub struct RequestSpan {
    cx: Context,
}

impl RequestSpan {
    pub fn ids(&self) -> Option<Ids> {
        Ids::of(&self.cx)
    }

    /// Run `fut` inside the span: what it logs and the calls it makes belong to it.
    pub fn run<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        opentelemetry::context::FutureExt::with_context(fut, self.cx.clone())
    }

    /// End the span with the response's status and, for an error answer, its SPEC code.
    pub fn end(self, status: u16, error: Option<&'static str>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if let Some(code) = error {
            span.set_attribute(KeyValue::new("error.type", code));
        }
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// The server span of a request named `{method} {route}` (`route` a template: an endpoint's
/// path or a proxy route's prefix, never the request's path). An incoming `traceparent` is
/// continued; its sampled flag is followed as `follow_incoming_sampled` says (at most
/// `max_forced_samples_per_sec` requests a second sampled only because of it); its `tracestate`
/// only from a trusted proxy. `None` when traces are off.
pub fn begin_request(method: &Method, route: &str, headers: &HeaderMap, peer_trusted: bool) -> Option<RequestSpan> {
    let t = TRACING.get()?;
    let parent = t.parent_of(headers, peer_trusted);
    let span = t
        .tracer
        .span_builder(format!("{} {route}", method_label(method)))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method_label(method)),
            KeyValue::new("http.route", route.to_owned()),
        ])
        .start_with_context(&t.tracer, &parent);
    Some(RequestSpan { cx: parent.with_span(span) })
}

/// Methods as span attributes: the known ones, else `_OTHER` (OpenTelemetry's convention;
/// a bounded set either way).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

impl Tracing {
    fn parent_of(&self, headers: &HeaderMap, peer_trusted: bool) -> Context {
        if !headers.contains_key("traceparent") {
            return Context::new();
        }
        let incoming = self.propagator.extract(&HeaderExtractor(headers));
        let sc = incoming.span().span_context().clone();
        if !sc.is_valid() {
            return Context::new();
        }
        let follow = match self.follow {
            FollowSampled::Always => true,
            FollowSampled::TrustedProxies => peer_trusted,
            FollowSampled::Never => false,
        };
        // A fresh draw, not the sampler's reading of the trace id: the browser chose that id, and
        // one chosen to read as "sample" would bypass the ratio and the forced-sample budget.
        let by_ratio = self.draw();
        let sampled = match (follow, sc.is_sampled()) {
            (true, true) => by_ratio || self.forced.take(),
            (true, false) => false,
            (false, _) => by_ratio,
        };
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let state = if peer_trusted { sc.trace_state().clone() } else { TraceState::default() };
        Context::new().with_remote_span_context(SpanContext::new(sc.trace_id(), sc.span_id(), flags, true, state))
    }

    fn draw(&self) -> bool {
        match self.ratio {
            r if r >= 1.0 => true,
            r if r <= 0.0 => false,
            r => {
                // 53 random bits as a uniform number in [0, 1).
                let unit = (u64::from_le_bytes(crate::secret::random_bytes::<8>()) >> 11) as f64 / (1u64 << 53) as f64;
                unit < r
            }
        }
    }
}

/// At most `per_sec` grants a second, without a lock: the second and the count share one word.
struct Budget {
    per_sec: u32,
    window: AtomicU64,
    epoch: Instant,
}

impl Budget {
    fn new(per_sec: u32) -> Self {
        Self { per_sec, window: AtomicU64::new(0), epoch: Instant::now() }
    }

    fn take(&self) -> bool {
        if self.per_sec == 0 {
            return false;
        }
        let now = self.epoch.elapsed().as_secs() + 1;
        let mut cur = self.window.load(Ordering::Relaxed);
        loop {
            let (sec, used) = (cur >> 32, (cur & u64::from(u32::MAX)) as u32);
            let next = if sec < now {
                (now << 32) | 1
            } else if sec == now && used < self.per_sec {
                cur + 1
            } else {
                // Spent, or another thread already moved on to the next second.
                return false;
            };
            match self.window.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// Which kind of peer a client span calls.
#[derive(Clone, Copy)]
pub enum Peer {
    /// The IdP: `traceparent` only (SPEC §7: no `tracestate` to an IdP).
    Idp,
    /// A proxied route's upstream: `traceparent` and the trusted `tracestate`.
    Upstream,
}

/// A call to an IdP or an upstream, child of the current span (for an IdP call outside a request,
/// e.g. discovery at start-up, a trace of its own).
pub struct CallSpan {
    cx: Context,
    peer: Peer,
}

/// Where a call goes, as spans record it: scheme, host and port — never the path or query.
pub struct Target<'a> {
    pub scheme: &'a str,
    pub host: Option<&'a str>,
    pub port: Option<u16>,
}

impl<'a> Target<'a> {
    pub fn of_url(url: &'a url::Url) -> Self {
        Self { scheme: url.scheme(), host: url.host_str(), port: url.port_or_known_default() }
    }

    pub fn of_uri(uri: &'a http::Uri) -> Self {
        let scheme = uri.scheme_str().unwrap_or("http");
        let default = match scheme {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        };
        Self { scheme, host: uri.host(), port: uri.port_u16().or(default) }
    }
}

/// Begin a client span `name` for a call to `to`.
pub fn begin_call(name: &'static str, peer: Peer, method: &Method, to: &Target<'_>) -> Option<CallSpan> {
    let t = TRACING.get()?;
    let parent = Context::current();
    if matches!(peer, Peer::Upstream) && !parent.has_active_span() {
        return None;
    }
    let mut attributes = Vec::with_capacity(4);
    attributes.push(KeyValue::new("http.request.method", method_label(method)));
    attributes.push(KeyValue::new("url.scheme", to.scheme.to_owned()));
    if let Some(host) = to.host {
        attributes.push(KeyValue::new("server.address", host.to_owned()));
    }
    if let Some(port) = to.port {
        attributes.push(KeyValue::new("server.port", i64::from(port)));
    }
    let span = t
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(&t.tracer, &parent);
    Some(CallSpan { cx: parent.with_span(span), peer })
}

impl CallSpan {
    /// Set `traceparent` (and for an upstream, a trusted `tracestate`) on the outgoing request,
    /// replacing whatever the browser sent.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.remove("traceparent");
        headers.remove("tracestate");
        let Some(t) = TRACING.get() else { return };
        match self.peer {
            Peer::Upstream => {
                t.propagator.inject_context(&self.cx, &mut HeaderInjector(headers));
                // The propagator writes an empty `tracestate` when there is none.
                if headers.get("tracestate").is_some_and(|v| v.is_empty()) {
                    headers.remove("tracestate");
                }
            }
            Peer::Idp => {
                let span = self.cx.span();
                let sc = span.span_context();
                let value = format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8());
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert("traceparent", v);
                }
            }
        }
    }

    /// The `traceparent` to send (IdP calls, whose requests are built field by field).
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let mut h = HeaderMap::new();
        self.inject(&mut h);
        h.remove("traceparent")
    }

    /// End with the peer's status, or with a failure of ours (`error`: a fixed word, never the
    /// error's text).
    pub fn end(self, status: Option<u16>, error: Option<&'static str>) {
        let span = self.cx.span();
        if let Some(s) = status {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        if let Some(e) = error {
            span.set_attribute(KeyValue::new("error.type", e));
            span.set_status(Status::error(""));
        } else if status.is_some_and(|s| s >= 500) {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// Run a store operation in a client span `store {op}` when it belongs to a traced request;
/// outside one (the background polls) no span is made.
pub async fn store_op<T, E, F>(op: &'static str, system: &'static str, fut: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let Some(t) = TRACING.get() else { return fut.await };
    let parent = Context::current();
    if !parent.has_active_span() {
        return fut.await;
    }
    let span = t
        .tracer
        .span_builder(op)
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("db.system.name", system), KeyValue::new("db.operation.name", op)])
        .start_with_context(&t.tracer, &parent);
    let cx = parent.with_span(span);
    let result = opentelemetry::context::FutureExt::with_context(fut, cx.clone()).await;
    let span = cx.span();
    if result.is_err() {
        span.set_attribute(KeyValue::new("error.type", "store_error"));
        span.set_status(Status::error(""));
    }
    span.end();
    result
}

/// How long the exit waits for the last spans to be sent.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests;
