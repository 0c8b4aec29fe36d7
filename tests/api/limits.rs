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
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = bin.stderr();
    assert!(logs.contains("request head refused by the HTTP parser"), "{logs}");
    assert_eq!(logs.matches("request body above max_body_bytes").count(), 1, "{logs}");
    assert!(!logs.contains("\"status\":500"), "{logs}");
}
