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
         [oidc]\nissuer = \"{}\"\nclient_id = \"bff-basic\"\nclient_secret = \"{SECRET_BASIC}\"\n\
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
    if let Some(s) = session {
        secrets.push(s.access_token.compact().expose().to_owned());
        secrets.push(s.id_token.compact().expose().to_owned());
        secrets.extend(s.refresh_token.map(|r| r.expose().to_owned()));
        secrets.push(s.logout_token.encoded());
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
