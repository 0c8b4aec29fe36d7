//! SPEC §7 traces end to end: the real binary, the real test IdP, a real upstream, and an
//! OTLP/HTTP receiver here that decodes the protobuf the exporter sends.

use crate::helpers::*;
use crate::upstream;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The browser's trace: its id, and the id of the span its request came from.
const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT: &str = "b7ad6b7169203331";

struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let kept = kept.clone();
                async move {
                    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                        return (http::StatusCode::BAD_REQUEST, Vec::new());
                    };
                    let mut all = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for rs in req.resource_spans {
                        for ss in rs.scope_spans {
                            all.extend(ss.spans);
                        }
                    }
                    (http::StatusCode::OK, Vec::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Wait (at most 20 s) until a span named `name` has arrived.
    async fn wait_for(&self, names: &[&str]) -> Vec<Span> {
        for _ in 0..200 {
            let spans = self.spans();
            if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let got: Vec<String> = self.spans().iter().map(|s| s.name.clone()).collect();
        panic!("spans {names:?} did not arrive; got {got:?}")
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config(port: u16, issuer: &str, otlp: u16, upstream: &str, admin: Option<u16>) -> String {
    config_with(
        port,
        issuer,
        Some(otlp),
        upstream,
        &admin.map(|a| format!("admin_listen = \"127.0.0.1:{a}\"\n")).unwrap_or_default(),
    )
}

/// `otlp`: the receiver's port, or `None` for traces off; `server`: more `[server]` lines.
fn config_with(port: u16, issuer: &str, otlp: Option<u16>, upstream: &str, server: &str) -> String {
    let telemetry = otlp
        .map(|p| format!("[telemetry]\notlp_endpoint = \"http://127.0.0.1:{p}\"\nsample_ratio = 1.0\n"))
        .unwrap_or_default();
    let db = std::env::temp_dir().join(format!("oidc-bff-traces-{port}.db"));
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n{server}\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"bff-basic\"\nclient_secret = \"{SECRET_BASIC}\"\n\
         [session]\nkeys = [\"{KEY_A}\"]\nurl = \"sqlite://{}?mode=rwc\"\n[logging]\nformat = \"json\"\n\
         {telemetry}\
         [[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\n\
         [[routes]]\nprefix = \"/public\"\nupstream = \"{upstream}\"\nauth = \"none\"\n",
        db.display()
    )
}

/// A BFF port, the real IdP for it, an echoing upstream and a receiver.
async fn parts() -> (u16, Idp, upstream::Running, Receiver) {
    let port = free_port();
    let idp = Idp::start(port, json!({})).await;
    (port, idp, upstream::start().await, Receiver::start().await)
}

/// What the IdP recorded of the newest token request.
async fn last_token_request(idp: &Idp) -> Value {
    let requests = idp.control_method(Method::GET, "requests").await;
    requests.as_array().and_then(|r| r.iter().rev().find(|e| e["endpoint"] == "token")).cloned().unwrap_or_default()
}

/// The one span named `name` in the browser's trace.
fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name && hex(&s.trace_id) == TRACE).collect();
    assert_eq!(found.len(), 1, "one {name} span in the trace: {found:?}");
    found[0]
}

/// Span attribute keys come from this list only (SPEC §7).
const ALLOWED: &[&str] = &[
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "error.type",
    "url.scheme",
    "server.address",
    "server.port",
    "db.system.name",
    "db.operation.name",
];

/// One login and one proxied call, both carrying the browser's `traceparent`: every span is in
/// that trace, parented as the calls were made; the IdP and the upstream received a
/// `traceparent` of the trace naming the span that called them; the browser's `baggage` and
/// (from an untrusted peer) `tracestate` went nowhere; no span carries a token, the code, a
/// cookie value or a query string.
#[tokio::test]
async fn a_login_and_a_proxied_call_are_one_trace_from_the_browser_to_the_idp_and_the_upstream() {
    let (port, idp, up, receiver) = parts().await;
    let bin = spawn_binary(port, &config(port, &idp.issuer, receiver.port, &up.url(), None)).await;
    bin.wait_ready().await;
    let base = bin.base.clone();
    let incoming = format!("00-{TRACE}-{PARENT}-01");

    let mut b = Browser::new_for_origin(&base);
    let start = b.get(&format!("{base}/login?return_to=/")).await;
    assert_eq!(start.status, 302);
    let callback = b.idp_login(&start.location(), "alice").await;
    let code = url::Url::parse(&callback)
        .ok()
        .and_then(|u| u.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()))
        .unwrap_or_default();
    let done = b.request(Method::GET, &callback, &[("traceparent", &incoming)], None).await;
    assert_eq!(done.status, 302, "{}", done.body);
    let jar = b.jar();
    let origin = base.clone();
    let proxied = b
        .request(
            Method::GET,
            &format!("{base}/api/orders?q=private-query-text"),
            &[
                ("x-csrf", "1"),
                ("origin", &origin),
                ("traceparent", &incoming),
                ("tracestate", "browser=untrusted"),
                ("baggage", "user=alice"),
            ],
            None,
        )
        .await;
    assert_eq!(proxied.status, 200, "{}", proxied.body);
    let echo: Value = serde_json::from_str(&proxied.body).unwrap_or_default();

    let spans = receiver.wait_for(&["GET /callback", "idp token", "store first_use", "GET /api", "upstream"]).await;
    let callback_span = named(&spans, "GET /callback");
    let token = named(&spans, "idp token");
    let request = named(&spans, "GET /api");
    let upstream_span = named(&spans, "upstream");
    // Server spans continue the browser's span; client spans are their children.
    assert_eq!(hex(&callback_span.parent_span_id), PARENT);
    assert_eq!(hex(&request.parent_span_id), PARENT);
    assert_eq!(token.parent_span_id, callback_span.span_id);
    assert_eq!(upstream_span.parent_span_id, request.span_id);
    assert_eq!(callback_span.kind, 2, "server");
    assert_eq!(token.kind, 3, "client");
    // The login state the callback spent (SPEC §3.3): a store span under the callback's.
    assert_eq!(named(&spans, "store first_use").parent_span_id, callback_span.span_id);
    // The JSON log lines of the traced requests carry the trace (the access line of the
    // proxied call names its server span).
    let access_line = |logs: &str| {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["target"] == "access" && v["route"] == "proxy_or_static")
    };
    // Access lines are written within about a second.
    let mut logs = bin.stderr();
    for _ in 0..50 {
        if access_line(&logs).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        logs = bin.stderr();
    }
    let access = access_line(&logs).unwrap_or_else(|| panic!("no access line of the proxied call:\n{logs}"));
    assert_eq!(access["trace_id"], TRACE);
    assert_eq!(access["span_id"], hex(&request.span_id));
    assert!(
        logs.lines().any(|l| l.contains("login completed") && l.contains(&format!("\"trace_id\":\"{TRACE}\""))),
        "the callback's own log line carries the trace"
    );

    // The upstream got our span as its parent, and no browser baggage or untrusted tracestate.
    let sent = echo["headers"]["traceparent"].as_str().unwrap_or_default();
    assert_eq!(sent, format!("00-{TRACE}-{}-01", hex(&upstream_span.span_id)), "{echo}");
    assert!(echo["headers"].get("baggage").is_none(), "the browser's baggage was forwarded");
    assert!(echo["headers"].get("tracestate").is_none(), "an untrusted tracestate was forwarded");
    // The IdP's token request carried the token span's context, and no tracestate.
    let token_request = last_token_request(&idp).await;
    assert_eq!(token_request["traceparent"], format!("00-{TRACE}-{}-01", hex(&token.span_id)), "{token_request}");
    assert_eq!(token_request["tracestate"], Value::Null);

    // Nothing secret or request-specific in any span of the run.
    let mut secrets: Vec<String> = jar.values().cloned().collect();
    secrets.push(code);
    secrets.push(SECRET_BASIC.to_owned());
    secrets.push("private-query-text".to_owned());
    secrets.push("/api/orders".to_owned());
    if let Some(s) = open_session_with_key(&jar) {
        secrets.push(s.access_token.compact().expose().to_owned());
        secrets.push(s.id_token.compact().expose().to_owned());
        secrets.extend(s.refresh_token.map(|r| r.expose().to_owned()));
    } else {
        panic!("the session cookie did not open");
    }
    for span in &receiver.spans() {
        let mut texts = vec![span.name.clone()];
        for kv in &span.attributes {
            assert!(ALLOWED.contains(&kv.key.as_str()), "attribute {} is not on the allow-list", kv.key);
            if let Some(AnyValue::StringValue(v)) = kv.value.as_ref().and_then(|v| v.value.clone()) {
                texts.push(v);
            }
        }
        for text in &texts {
            assert!(!text.contains('?'), "a query string in span {}: {text}", span.name);
            for s in secrets.iter().filter(|s| s.len() >= 8) {
                assert!(!text.contains(s.as_str()), "span {} carries a secret or the request's path", span.name);
            }
        }
    }
}

/// The session in a jar, opened with the tests' key.
fn open_session_with_key(
    jar: &std::collections::BTreeMap<String, String>,
) -> Option<oidc_bff::session::model::Session> {
    let key =
        <[u8; 32]>::try_from(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, KEY_A).ok()?).ok()?;
    let keys = oidc_bff::session::seal::Keyring::new(&[oidc_bff::settings::KeyMaterial(key)]);
    let plain = keys.open(oidc_bff::session::seal::Purpose::Session, "__Host-bff", jar.get("__Host-bff")?)?;
    oidc_bff::session::model::Session::from_bytes(&plain)
}

/// A collector that is down costs spans, never requests: every request is answered, and the
/// spans that could not be sent are counted.
#[tokio::test]
async fn with_the_collector_down_requests_succeed_and_dropped_spans_are_counted() {
    let (port, admin, nobody) = (free_port(), free_port(), free_port());
    let idp = Idp::start(port, json!({})).await;
    let up = upstream::start().await;
    let bin = spawn_binary(port, &config(port, &idp.issuer, nobody, &up.url(), Some(admin))).await;
    bin.wait_ready().await;
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let r = client
            .get(format!("{}/session", bin.base))
            .header("x-csrf", "1")
            .header("traceparent", format!("00-{TRACE}-{PARENT}-01"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 401, "an anonymous /session is answered whatever the collector does");
    }
    let mut dropped = 0;
    for _ in 0..100 {
        let metrics = scrape_metrics(admin).await;
        dropped = metrics
            .lines()
            .find(|l| l.starts_with("bff_trace_spans_dropped_total{reason=\"export_failed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if dropped >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped >= 20, "20 requests' spans dropped and counted, got {dropped}:\n{}", bin.stderr());
    assert!(bin.stderr().contains("trace export failed"), "the failure is logged");
}

/// Behind a trusted proxy (SPEC §7), the incoming `tracestate` is continued to the upstream, and
/// still never sent to the IdP.
#[tokio::test]
async fn a_trusted_proxys_tracestate_reaches_the_upstream_and_never_the_idp() {
    let (port, idp, up, receiver) = parts().await;
    let trusted = "trusted_proxies = [\"127.0.0.1/32\"]\n";
    let bin = spawn_binary(port, &config_with(port, &idp.issuer, Some(receiver.port), &up.url(), trusted)).await;
    bin.wait_ready().await;
    let base = bin.base.clone();
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let context = [("traceparent", incoming.as_str()), ("tracestate", "vendor=trusted-1")];
    let mut b = Browser::new_for_origin(&base);
    let start = b.get(&format!("{base}/login?return_to=/")).await;
    let callback = b.idp_login(&start.location(), "alice").await;
    assert_eq!(b.request(Method::GET, &callback, &context, None).await.status, 302);
    let origin = base.clone();
    let headers = [context[0], context[1], ("x-csrf", "1"), ("origin", origin.as_str())];
    let proxied = b.request(Method::GET, &format!("{base}/api/x"), &headers, None).await;
    assert_eq!(proxied.status, 200, "{}", proxied.body);
    let echo: Value = serde_json::from_str(&proxied.body).unwrap_or_default();
    assert_eq!(echo["headers"]["tracestate"], "vendor=trusted-1", "{echo}");
    assert!(echo["headers"]["traceparent"].as_str().is_some_and(|t| t.starts_with(&format!("00-{TRACE}-"))));
    let token_request = last_token_request(&idp).await;
    assert!(token_request["traceparent"].as_str().is_some_and(|t| t.starts_with(&format!("00-{TRACE}-"))));
    assert_eq!(token_request["tracestate"], Value::Null, "a tracestate reached the IdP");
}

/// Traces off: the browser's `baggage` and an untrusted `tracestate` still stop at the BFF
/// (SPEC §7); its `traceparent` passes as it came (there is no span of ours to replace it).
#[tokio::test]
async fn with_traces_off_baggage_and_an_untrusted_tracestate_never_reach_the_upstream() {
    let port = free_port();
    let up = upstream::start().await;
    let bin = spawn_binary(port, &config_with(port, "http://127.0.0.1:9/ENV/as", None, &up.url(), "")).await;
    let incoming = format!("00-{TRACE}-{PARENT}-01");
    let r = reqwest::Client::new()
        .get(format!("{}/public/x", bin.base))
        .header("x-csrf", "1")
        .header("traceparent", &incoming)
        .header("tracestate", "browser=1")
        .header("baggage", "user=alice")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap_or_default();
    assert!(echo["headers"].get("baggage").is_none(), "{echo}");
    assert!(echo["headers"].get("tracestate").is_none(), "{echo}");
    assert_eq!(echo["headers"]["traceparent"], incoming);
}
