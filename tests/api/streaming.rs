//! Bodies stream through the proxy in constant memory: 256 MiB up and 256 MiB down through the
//! real binary, whose peak RSS (VmHWM) is read from /proc.

use crate::upstream;
use futures_util::StreamExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const MIB: usize = 1024 * 1024;
const TOTAL: usize = 256 * MIB;

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_256_mib_upload_and_download_stream_in_constant_memory() {
    oidc_bff::startup::install_crypto_providers();
    let up = upstream::start().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().map(|a| a.port()).unwrap_or_default()
    };
    let dir = std::env::temp_dir().join(format!("oidc-bff-stream-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    let config = dir.join("bff.toml");
    // The IdP is never reached: auth = "none" routes need no session, and discovery retries
    // quietly in the background.
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [oidc]\nissuer = \"http://127.0.0.1:9/ENV/as\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         [session]\nkeys = [\"{}\"]\n[logging]\naccess_log = false\nlevel = \"error\"\n\
         [[routes]]\nprefix = \"/big\"\nupstream = \"{}\"\nauth = \"none\"\ntimeout_secs = 60\n",
        crate::helpers::KEY_A,
        up.url()
    );
    std::fs::write(&config, toml).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let idle = peak_rss_kib(child.id());

    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let body =
        futures_util::stream::iter((0..TOTAL / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let r = client
        .post(format!("{base}/big/upload"))
        .header("x-csrf", "1")
        .header("origin", &base)
        .header("content-length", TOTAL.to_string())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload: {e}"));
    assert_eq!(r.status(), 200);
    let echoed: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(echoed["bytes"].as_u64(), Some(TOTAL as u64));

    let r = client
        .get(format!("{base}/big/download?bytes={TOTAL}"))
        .header("x-csrf", "1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(r.status(), 200);
    let mut received = 0usize;
    let mut stream = r.bytes_stream();
    while let Some(c) = stream.next().await {
        received += c.unwrap_or_else(|e| panic!("download body: {e}")).len();
    }
    assert_eq!(received, TOTAL);

    let peak = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    println!("oidc-bff RSS: idle {} KiB, peak after 256 MiB up + 256 MiB down {} KiB", idle, peak);
    assert!(peak > 0, "VmHWM read");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB is not under 64 MiB");
}
