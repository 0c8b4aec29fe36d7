//! Resource limits (SPEC §7) on the real binary: idle connections and a slow-loris client do
//! not starve a normal client; oversize heads and bodies get 431/413, are logged, never a 500.

use crate::helpers::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn raw(port: u16, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn idle_connections_and_a_slow_loris_do_not_starve_a_normal_client_and_oversize_input_is_refused() {
    let port = free_port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nheader_read_timeout_secs = 5\n\
         [oidc]\nissuer = \"http://127.0.0.1:9/ENV/as\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         [session]\nkeys = [\"{KEY_A}\"]\n[logging]\nformat = \"json\"\n"
    );
    let bin = spawn_binary(port, &toml).await;

    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}")));
    }
    let loris = tokio::spawn(async move {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return };
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        for _ in 0..20 {
            if s.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let started = Instant::now();
    let r = reqwest::get(format!("{}/healthz", bin.base)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1), "/healthz took {:?}", started.elapsed());

    let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    let answer = raw(port, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "oversize head: {answer:.80}");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = raw(port, format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "too many headers: {answer:.80}");

    let body = "x".repeat(100_000);
    let r = reqwest::Client::new()
        .post(format!("{}/login/start", bin.base))
        .header("x-csrf", "1")
        .header("origin", &bin.base)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 413);
    let j: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(j["error"], "payload_too_large");

    drop(idle);
    loris.abort();
    // Long enough for the access lines too (written within a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = bin.stderr();
    assert!(logs.contains("request head refused by the HTTP parser"), "{logs}");
    assert_eq!(logs.matches("request body above max_body_bytes").count(), 1, "{logs}");
    assert!(!logs.contains("\"status\":500"), "{logs}");
}

fn config(port: u16, admin: Option<u16>) -> String {
    let admin = admin.map(|a| format!("admin_listen = \"127.0.0.1:{a}\"\n")).unwrap_or_default();
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nheader_read_timeout_secs = 2\n{admin}\
         [oidc]\nissuer = \"http://127.0.0.1:9/ENV/as\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         [session]\nkeys = [\"{KEY_A}\"]\n[logging]\nformat = \"json\"\n"
    )
}

/// Reads until the peer closes; `None` if it did not close within `limit`.
async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(limit, s.read_to_end(&mut out)).await.ok().map(|_| out)
}

/// SPEC §7: the admin listener has the public listener's header-read timeout and header limits,
/// a cap of 64 connections of its own, and speaks HTTP/1 only.
#[tokio::test]
async fn the_admin_listener_has_a_header_read_timeout_a_64_connection_cap_and_http1_only() {
    let (port, admin) = (free_port(), free_port());
    let bin = spawn_binary(port, &config(port, Some(admin))).await;
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    let r = reqwest::get(&metrics).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", admin));

    // A half-sent request head is cut off after header_read_timeout_secs (2 s).
    let mut half = connect().await.unwrap_or_else(|e| panic!("{e}"));
    let _ = half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
    let started = Instant::now();
    assert!(closed_within(&mut half, Duration::from_secs(8)).await.is_some(), "a half-sent request stays open");
    assert!(started.elapsed() < Duration::from_secs(6), "closed after {:?}", started.elapsed());

    // Oversized heads are refused as on the public listener.
    let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000));
    let answer = raw(admin, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "oversize head: {answer:.80}");

    // HTTP/2 (prior knowledge) is not spoken.
    let mut h2 = connect().await.unwrap_or_else(|e| panic!("{e}"));
    let _ = h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await;
    let answer = closed_within(&mut h2, Duration::from_secs(8)).await.unwrap_or_default();
    assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 4"), "HTTP/2 answered: {answer:?}");

    // 64 connections at once; the 65th is closed at once, and a slot frees up when one closes.
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(connect().await.unwrap_or_else(|e| panic!("{e}")));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = connect().await.unwrap_or_else(|e| panic!("{e}"));
    let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = closed_within(&mut extra, Duration::from_secs(1)).await;
    assert_eq!(answer.as_deref(), Some(&b""[..]), "the 65th connection was served");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reqwest::get(&metrics).await.map(|r| r.status().as_u16()).ok(), Some(200));
    drop(bin);
}

/// An idle HTTP/2 (h2c) connection whose client answers every ping is closed like an idle
/// HTTP/1.1 keep-alive connection, after header_read_timeout_secs without a request: it cannot
/// hold a `max_connections` slot forever.
#[tokio::test]
async fn idle_h2c_connections_are_closed_after_the_keep_alive_limit() {
    use http_body_util::BodyExt;
    let port = free_port();
    let bin = spawn_binary(port, &config(port, None)).await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap_or_else(|e| panic!("h2c handshake: {e}"));
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://127.0.0.1:{port}/healthz"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = send.send_request(req).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await;
    let idle_since = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "an idle h2c connection was still open after 10 s");
    assert!(idle_since.elapsed() >= Duration::from_millis(1500), "closed too early: {:?}", idle_since.elapsed());
    drop(bin);
}

/// A client that asks for a large answer and stops reading it is dropped once a write to it has
/// waited 6 × header_read_timeout_secs (nginx's send_timeout): it cannot hold its slot forever.
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("oidc-bff-slow-reader-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join("big.bin"), vec![b'x'; 64 << 20]).unwrap_or_else(|e| panic!("{e}"));
    let toml = config(port, None).replace("[oidc]", &format!("static_dir = \"{}\"\n[oidc]", dir.display()));
    let bin = spawn_binary(port, &toml).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    let _ = s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").await;
    // Read the head, then nothing for longer than the send timeout (2 s × 6).
    let mut head = [0u8; 256];
    let _ = s.read(&mut head).await;
    assert!(head.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&head));
    tokio::time::sleep(Duration::from_secs(16)).await;
    let rest = closed_within(&mut s, Duration::from_secs(20)).await.unwrap_or_else(|| panic!("never closed"));
    assert!(rest.len() + 256 < 64 << 20, "the whole answer arrived: the connection was not dropped");
    drop(bin);
    let _ = std::fs::remove_dir_all(&dir);
}
