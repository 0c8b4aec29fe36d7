//! A real upstream API for proxy tests: echoes what it received, and a few misbehaviours.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Upstream {
    pub hits: Arc<AtomicUsize>,
}

pub struct Running {
    pub addr: SocketAddr,
    pub upstream: Upstream,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn hits(&self) -> usize {
        self.upstream.hits.load(Ordering::SeqCst)
    }
}

pub async fn start() -> Running {
    let upstream = Upstream::default();
    let app = Router::new().fallback(handle).with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Running { addr, upstream }
}

async fn handle(State(u): State<Upstream>, req: Request) -> Response {
    u.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segment = path.split('/').nth(2).unwrap_or("");
    match segment {
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late".into_response()
        }
        "set-cookie" => Response::builder()
            .header("set-cookie", "__Host-bff=evil; Path=/; Secure")
            .header("set-cookie", "pref=1; Path=/")
            .header("access-control-allow-origin", "*")
            .body(Body::from("cookies"))
            .unwrap_or_default(),
        "stall" => {
            // Headers and a first chunk, then nothing for 30 s.
            let first =
                futures_util::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"first")) });
            let stall = futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"late"))
            });
            Response::builder().body(Body::from_stream(first.chain(stall))).unwrap_or_default()
        }
        "redirect" => Response::builder()
            .status(302)
            .header("location", "http://127.0.0.1:1/elsewhere")
            .body(Body::empty())
            .unwrap_or_default(),
        "upload" => {
            let mut n: u64 = 0;
            let mut stream = req.into_body().into_data_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => n += c.len() as u64,
                    Err(_) => {
                        return (axum::http::StatusCode::BAD_REQUEST, "broken body").into_response();
                    }
                }
            }
            axum::Json(json!({"bytes": n})).into_response()
        }
        "download" => {
            let total: usize = query.strip_prefix("bytes=").and_then(|n| n.parse().ok()).unwrap_or(0);
            let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
            let count = total / chunk.len();
            let stream = futures_util::stream::iter((0..count).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            Response::builder()
                .header("content-length", (count * 64 * 1024).to_string())
                .body(Body::from_stream(stream))
                .unwrap_or_default()
        }
        _ => echo(req, path, query).await,
    }
}

async fn echo(req: Request, path: String, query: String) -> Response {
    let method = req.method().to_string();
    let mut headers = Map::new();
    for (k, v) in req.headers() {
        // Bytes as sent (a cookie need not be ASCII).
        let v = Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match headers.get_mut(k.as_str()) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => *prev = Value::Array(vec![prev.clone(), v]),
            None => {
                headers.insert(k.as_str().to_owned(), v);
            }
        }
    }
    let status = req
        .headers()
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    let cache_control = req.headers().get("x-echo-cache-control").cloned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let out = json!({
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-upstream", "echo")
        .body(Body::from(out.to_string()))
        .unwrap_or_default();
    if let Some(cc) = cache_control {
        r.headers_mut().insert("cache-control", cc);
    }
    r
}
