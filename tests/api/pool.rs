//! The proxy's own HTTP/1.1 connection pool (`proxy::pool`) against an upstream written on raw
//! TCP, so that every connection it accepts is counted and its lifetime is chosen per answer:
//! kept alive, closed with `Connection: close`, closed by the server while idle, or dropped
//! before answering.

use crate::helpers::{KEY_A, free_port, spawn_binary};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Every request head received, in order.
    heads: Mutex<Vec<String>>,
}

impl Seen {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
    fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// The upstream. Answers by the request path's last segment:
/// `ok` 200 with a body, kept alive; `empty` 204, kept alive; `close` 200 with
/// `Connection: close`; `idle-close` 200, kept alive, then the server closes the connection
/// 50 ms later; `hangup` closes without answering.
async fn raw_upstream() -> (String, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let seen = Arc::new(Seen::default());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request head (the tests send no bodies).
                    let head = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                            buf.drain(..end + 4);
                            break head;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let last = head.split_whitespace().nth(1).and_then(|p| p.rsplit('/').next()).unwrap_or("");
                    let last = last.to_owned();
                    if let Ok(mut h) = s.heads.lock() {
                        h.push(head);
                    }
                    let answer: &[u8] = match last.as_str() {
                        "empty" => b"HTTP/1.1 204 No Content\r\n\r\n",
                        "close" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        "hangup" => return,
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    };
                    if sock.write_all(answer).await.is_err() {
                        return;
                    }
                    match last.as_str() {
                        "close" => return,
                        "idle-close" => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// The raw upstream and an oidc-bff whose `/api` route (no session needed) forwards to it.
async fn stack() -> (String, Arc<Seen>, crate::helpers::Binary, reqwest::Client) {
    let (up, seen) = raw_upstream().await;
    let bin = bff_for(&up).await;
    (up, seen, bin, reqwest::Client::new())
}

async fn bff_for(upstream: &str) -> crate::helpers::Binary {
    let port = free_port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [oidc]\nissuer = \"http://127.0.0.1:9/ENV/as\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         [session]\nkeys = [\"{KEY_A}\"]\n[logging]\naccess_log = false\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}/base\"\nauth = \"none\"\ntimeout_secs = 5\n"
    );
    spawn_binary(port, &toml).await
}

async fn get(client: &reqwest::Client, url: String) -> (u16, String) {
    match client.get(url).header("x-csrf", "1").send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => panic!("{e}"),
    }
}

/// Sequential requests share one upstream connection, whether the answer has a body or none
/// (a 204 is never polled for a body: it must come back all the same); each request is sent in
/// origin form with `Host` naming the upstream.
#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection_with_or_without_a_body() {
    let (up, seen, bin, client) = stack().await;
    for i in 0..10 {
        let (status, body) = get(&client, format!("{}/api/x/ok?i={i}", bin.base)).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        let (status, _) = get(&client, format!("{}/api/x/empty", bin.base)).await;
        assert_eq!(status, 204);
    }
    assert_eq!(seen.connections(), 1, "one connection for 20 sequential requests: {:?}", seen.heads());
    let heads = seen.heads();
    assert_eq!(heads.len(), 20);
    let authority = up.trim_start_matches("http://");
    assert!(heads[0].starts_with("GET /base/api/x/ok?i=0 HTTP/1.1\r\n"), "{}", heads[0]);
    assert!(heads[0].to_ascii_lowercase().contains(&format!("\r\nhost: {authority}")), "{}", heads[0]);
}

/// A connection the upstream closes (`Connection: close`, or on its own while idle) is never
/// used again: the next request gets a new connection and its answer.
#[tokio::test]
async fn connections_the_upstream_closes_are_not_reused() {
    let (_up, seen, bin, client) = stack().await;
    for _ in 0..3 {
        assert_eq!(get(&client, format!("{}/api/x/close", bin.base)).await, (200, "ok".to_owned()));
    }
    assert_eq!(seen.connections(), 3);
    for _ in 0..3 {
        assert_eq!(get(&client, format!("{}/api/x/idle-close", bin.base)).await, (200, "ok".to_owned()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen.connections(), 6, "{:?}", seen.heads());
    assert_eq!(get(&client, format!("{}/api/x/ok", bin.base)).await, (200, "ok".to_owned()));
    assert_eq!(seen.connections(), 7);
}

/// An upstream that hangs up without answering is a 502 `upstream_unavailable` (never a 500),
/// and the pool recovers for the next request.
#[tokio::test]
async fn an_upstream_hanging_up_is_a_502_and_the_next_request_succeeds() {
    let (_up, _seen, bin, client) = stack().await;
    assert_eq!(get(&client, format!("{}/api/x/ok", bin.base)).await.0, 200);
    let (status, body) = get(&client, format!("{}/api/x/hangup", bin.base)).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_unavailable"), "{body}");
    assert_eq!(get(&client, format!("{}/api/x/ok", bin.base)).await, (200, "ok".to_owned()));
}

/// Concurrent requests each get a connection of their own, and all of them come back to the
/// pool: a second wave of the same size opens none.
#[tokio::test]
async fn concurrent_requests_open_connections_that_the_next_wave_reuses() {
    let (_up, seen, bin, _client) = stack().await;
    let wave = |n: usize| {
        let base = bin.base.clone();
        async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let url = format!("{base}/api/x/ok");
                // A client per request: each is a connection of its own to the BFF.
                tasks.push(tokio::spawn(async move { get(&reqwest::Client::new(), url).await }));
            }
            for t in tasks {
                assert_eq!(t.await.unwrap_or_else(|e| panic!("{e}")), (200, "ok".to_owned()));
            }
        }
    };
    wave(8).await;
    let first = seen.connections();
    assert!((1..=8).contains(&first), "{first}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    wave(first).await;
    // At most `first` connections are ever needed for a wave of `first` concurrent requests,
    // all idle again now: none is opened.
    assert_eq!(seen.connections(), first, "the second wave reused the pooled connections");
}
