//! The real binary's logs over a full login → session → back-channel logout → logout never
//! contain a token, the code, the client secret, a logout token or a cookie value.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn logs_of_a_full_login_contain_no_secret() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().map(|a| a.port()).unwrap_or_default()
    };
    let idp = Idp::start(port, json!({})).await;
    let dir = std::env::temp_dir().join(format!("oidc-bff-logs-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    let config = dir.join("bff.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [oidc]\nissuer = \"{}\"\nclient_id = \"bff-basic\"\nclient_secret = \"{SECRET_BASIC}\"\ndpop = true\n\
         [session]\nkeys = [\"{KEY_A}\"]\nurl = \"sqlite://{}/revocations.db?mode=rwc\"\n\
         [logging]\nformat = \"json\"\nlevel = \"trace\"\n",
        idp.issuer,
        dir.display()
    );
    std::fs::write(&config, toml).unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if probe.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "binary did not become ready");

    let fake = FakeBff { addr: format!("127.0.0.1:{port}") };
    let mut b = fake.browser();
    let start = b.get(&format!("{base}/login")).await;
    let callback = b.idp_login(&start.location(), "alice").await;
    let code = url::Url::parse(&callback)
        .ok()
        .and_then(|u| u.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()))
        .unwrap_or_default();
    assert_eq!(b.get(&callback).await.status, 302);
    let jar = b.jar();
    assert_eq!(b.fetch(Method::GET, &format!("{base}/session"), None).await.status, 200);
    let session = oidc_bff_open(&jar);
    // A back-channel logout (for another user): the logout token never reaches the logs.
    let logout_token = {
        let payload = json!({
            "iss": idp.issuer, "aud": "bff-basic", "iat": oidc_bff::clock::now(), "jti": "logs-test",
            "sub": "someone-else", "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        });
        idp.sign(json!({}), payload).await
    };
    let r = probe
        .post(format!("{base}/backchannel-logout"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("logout_token={logout_token}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 200);
    let out = b.fetch(Method::POST, &format!("{base}/logout"), None).await;
    assert_eq!(out.status, 200);

    // SIGTERM: the binary drains and exits 0.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut logs);
    }
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut logs);
    }
    assert!(logs.contains("login completed"), "logs were captured: {logs}");
    assert!(logs.contains("back-channel logout: revocation recorded"), "the back-channel logout was logged");
    let mut secrets = vec![code, SECRET_BASIC.to_owned(), logout_token.clone()];
    secrets.extend(logout_token.split('.').map(str::to_owned));
    secrets.extend(jar.values().cloned());
    {
        let s = session.unwrap_or_else(|| panic!("the session cookie did not open"));
        secrets.push(s.access_token.compact().expose().to_owned());
        secrets.push(s.id_token.compact().expose().to_owned());
        secrets.extend(s.refresh_token.map(|r| r.expose().to_owned()));
        secrets.push(s.logout_token.encoded());
        // The DPoP private key, in every form it could be written (SPEC §3.6).
        let key = s.dpop.unwrap_or_else(|| panic!("a dpop = true session has a key"));
        secrets.push(key.to_encoded());
        secrets.push(oidc_bff::secret::hex(key.scalar()));
        secrets.push(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.scalar()));
    }
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(!logs.contains(s.as_str()), "a secret reached the logs");
    }
    let _ = std::fs::remove_dir_all(dir);
}

struct FakeBff {
    addr: String,
}

impl FakeBff {
    fn browser(&self) -> Browser {
        oidc_bff::startup::install_crypto_providers();
        let mut b = Browser::new_for_origin(&format!("http://{}", self.addr));
        b.bff_bodies.clear();
        b
    }
}

fn oidc_bff_open(jar: &std::collections::BTreeMap<String, String>) -> Option<oidc_bff::session::model::Session> {
    let keys = oidc_bff::session::seal::Keyring::new(&[oidc_bff::settings::KeyMaterial(
        <[u8; 32]>::try_from(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, KEY_A).ok()?).ok()?,
    )]);
    let value = jar.get("__Host-bff")?;
    let plain = keys.open(oidc_bff::session::seal::Purpose::Session, "__Host-bff", value)?;
    oidc_bff::session::model::Session::from_bytes(&plain)
}

/// A configuration with the default access log (on), JSON lines, no IdP (the load is
/// `/healthz`, answered without one).
fn access_log_config(port: u16, extra_server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nshutdown_timeout_secs = 10\n{extra_server}\n\
         [oidc]\nissuer = \"http://127.0.0.1:9/ENV/as\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\
         [session]\nkeys = [\"{KEY_A}\"]\n[logging]\nformat = \"json\"\n"
    )
}

/// `clients` keep-alive clients each sending GET `url` until `limit` requests were answered in
/// all or the server goes away; returns how many were answered in full.
async fn load(url: &str, clients: usize, limit: u64) -> u64 {
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, answered) = (url.to_owned(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                if answered.load(std::sync::atomic::Ordering::Relaxed) >= limit {
                    break;
                }
                let Ok(r) = client.get(&url).send().await else { break };
                if r.bytes().await.is_err() {
                    break;
                }
                // Counted even past the limit (clients race for the last ones): answered is answered.
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    answered.load(std::sync::atomic::Ordering::Relaxed)
}

/// The access lines in `logs`, and the access lines dropped as the closing line reports them.
fn access_accounting(logs: &str) -> (u64, u64) {
    let lines = logs.lines().filter(|l| l.contains("\"target\":\"access\"")).count() as u64;
    let closing = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "log writer closing")
        .unwrap_or_else(|| panic!("no closing line in the logs"));
    (lines, closing["access_lines_dropped"].as_u64().unwrap_or(u64::MAX))
}

async fn exited(child: &mut std::process::Child) -> std::process::ExitStatus {
    for _ in 0..400 {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("did not exit within 20 s")
}

/// SPEC §7: a SIGTERM under load loses no access line of an answered request. The lines are
/// counted against the responses the clients received in full: one line each, none dropped.
#[tokio::test]
async fn a_sigterm_under_load_loses_no_access_line() {
    let port = free_port();
    // `spawn_binary` writes stderr to a file (a sink that keeps up) and has one probe answered.
    let mut bin = spawn_binary(port, &access_log_config(port, "")).await;
    let url = format!("{}/healthz", bin.base);
    let load = tokio::spawn(async move { load(&url, 32, u64::MAX).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = Command::new("kill").arg("-TERM").arg(bin.child.id().to_string()).status();
    let answered = tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .unwrap_or_else(|_| panic!("the clients did not stop"))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = exited(&mut bin.child).await;
    assert!(status.success(), "{status}");
    assert!(answered > 500, "not under load: {answered} requests answered");
    let logs = bin.stderr();
    let (lines, dropped) = access_accounting(&logs);
    assert_eq!(dropped, 0, "a writer that keeps up drops nothing");
    assert_eq!(lines, answered + 1, "one access line per answered request (and the start-up probe)");
}

/// A log output that stops reading (a full pipe) never blocks a request: every request is
/// answered, the lines that did not fit are dropped and counted
/// (`bff_access_log_dropped_total`), and written + dropped = answered, exactly.
#[tokio::test]
async fn a_stalled_log_output_never_blocks_requests_and_every_line_is_accounted_for() {
    oidc_bff::startup::install_crypto_providers();
    // `free_port` can hand out a port another test binds first: then this binary exits at once
    // and the probe reaches the other server. Such an attempt is detected (the child is gone)
    // and made again on other ports.
    let mut attempt = None;
    for _ in 0..3 {
        let (port, admin) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("oidc-bff-stalled-{port}"));
        let _ = std::fs::create_dir_all(&dir);
        let config = dir.join("bff.toml");
        std::fs::write(&config, access_log_config(port, &format!("admin_listen = \"127.0.0.1:{admin}\"")))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        let mut up = false;
        for _ in 0..400 {
            if probe.get(format!("{base}/healthz")).send().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if up && matches!(child.try_wait(), Ok(None)) {
            attempt = Some((child, admin, dir, base));
            break;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let (mut child, admin, dir, base) = attempt.unwrap_or_else(|| panic!("binary did not start"));
    // Nobody reads stderr until the load is over: the pipe (64 KiB) fills, then the writer's
    // buffer (1 MiB); 20,000 JSON access lines are about 4.5 MB.
    let stderr = child.stderr.take();
    const REQUESTS: u64 = 20_000;
    let answered = tokio::time::timeout(Duration::from_secs(60), load(&format!("{base}/healthz"), 32, REQUESTS))
        .await
        .unwrap_or_else(|_| panic!("requests blocked behind a stalled log output"));
    assert!(answered >= REQUESTS, "{answered} of {REQUESTS} answered");
    let metrics = scrape_metrics(admin).await;
    let dropped_metric = metrics
        .lines()
        .find(|l| l.starts_with("bff_access_log_dropped_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no bff_access_log_dropped_total: {metrics}"));
    assert!(dropped_metric > 0, "the stalled output dropped nothing?");
    // Now drain the pipe and stop the process: what was held is written.
    let reader = std::thread::spawn(move || {
        let mut logs = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut logs);
        }
        logs
    });
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = exited(&mut child).await;
    assert!(status.success(), "{status}");
    let logs = reader.join().unwrap_or_default();
    let (lines, dropped) = access_accounting(&logs);
    assert_eq!(dropped, dropped_metric, "the closing line and the metric agree");
    assert_eq!(lines + dropped, answered + 1, "written + dropped = answered (and the start-up probe)");
    let _ = std::fs::remove_dir_all(dir);
}
