//! The command line (SPEC §2) and start-up behaviour.

use crate::helpers::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
}

#[test]
fn generate_key_prints_base64_of_32_bytes() {
    let out = bin().arg("generate-key").output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &key).unwrap_or_default();
    assert_eq!(bytes.len(), 32);
}

#[test]
fn check_config_reports_every_problem_with_its_key_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("oidc-bff-cli-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[server]\npublic_url = \"ftp://x\"\n[oidc]\nclient_auth = \"magic\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("BFF_OIDC__CLIENT_ID", "x")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["server.public_url:", "oidc.issuer: required", "oidc.client_auth:", "session.keys: required"] {
        assert!(err.lines().any(|l| l.starts_with(key)), "{key} missing in:\n{err}");
    }
    assert!(!err.contains("oidc.client_id"), "the environment supplied client_id:\n{err}");

    let good = dir.join("good.toml");
    std::fs::copy(format!("{}/config/demo.toml", env!("CARGO_MANIFEST_DIR")), &good).unwrap_or_else(|e| panic!("{e}"));
    let ok = bin()
        .args(["check-config", "--config"])
        .arg(&good)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

/// Every subcommand's --help describes its flags; `--config` says what the file is and that
/// BFF_CONFIG may name it. A mistyped subcommand suggests the closest.
#[test]
fn help_describes_every_flag_and_a_typo_gets_a_suggestion() {
    for sub in ["serve", "check-config", "doctor", "migrate", "healthcheck"] {
        let out = bin().args([sub, "--help"]).output().unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub}: {text}");
        let flag = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("--config <FILE>"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(flag.contains("TOML configuration file") && flag.contains("BFF_CONFIG"), "{sub} --help:\n{text}");
    }
    let out = bin().arg("generate-key").arg("--help").output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("session key"));
    let out = bin().arg("serv").output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unrecognized subcommand 'serv'") && err.contains("'serve'"), "{err}");
}

/// SPEC §9: a cluster url of one node is accepted with a warning (exit 0); a sentinel without
/// its master's name is refused (exit 1), each naming the key.
#[test]
fn check_config_warns_about_a_one_node_cluster_and_refuses_a_nameless_sentinel() {
    let demo = format!("{}/config/demo.toml", env!("CARGO_MANIFEST_DIR"));
    let run = |vars: &[(&str, &str)]| {
        let out = bin()
            .args(["check-config", "--config", &demo])
            .envs(vars.iter().copied())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let redis = [("BFF_SESSION__STORE", "redis"), ("BFF_SESSION__URL", "redis://127.0.0.1:7000")];
    let (code, err) = run(&[redis[0], redis[1], ("BFF_SESSION__REDIS_MODE", "cluster")]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.lines().any(|l| l.starts_with("warning: session.url: lists one cluster node only")), "{err}");
    let (code, err) = run(&[redis[0], redis[1], ("BFF_SESSION__REDIS_MODE", "sentinel")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.lines().any(|l| l.starts_with("session.redis_sentinel_master: required")), "{err}");
    let (code, err) = run(&[("BFF_SESSION__REDIS_MODE", "cluster")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.lines().any(|l| l.starts_with("session.redis_mode: \"cluster\" needs session.url")), "{err}");
}

#[tokio::test]
async fn idp_down_at_boot_is_retried_and_readiness_waits_for_it() {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let idp_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        l.local_addr().map(|a| a.port()).unwrap_or_default()
    };
    let issuer = format!("http://127.0.0.1:{idp_port}/ENV_ID/as");
    let app =
        oidc_bff::startup::App::with_listener(settings(port, &issuer, &[]), listener).unwrap_or_else(|e| panic!("{e}"));
    let state = app.state().clone();
    let task = tokio::spawn(app.run_until(std::future::pending()));
    let probe = reqwest::Client::new();
    let ready = |p: reqwest::Client| async move {
        p.get(format!("http://127.0.0.1:{port}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ready(probe.clone()).await, 503);
    let mut b = Browser::new_for_origin(&format!("http://127.0.0.1:{port}"));
    let r = b.get(&format!("http://127.0.0.1:{port}/login")).await;
    assert_eq!(r.status, 502, "login before discovery is idp_unavailable");
    let _idp = Idp::start(port, json!({"port": idp_port})).await;
    for _ in 0..100 {
        if state.providers.default_provider().is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready(probe).await, 200);
    task.abort();
}

#[tokio::test]
async fn discovery_naming_another_issuer_stops_start_up() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    let issuer = format!("{}/ENV/as", server.uri());
    let doc = json!({"issuer": format!("{issuer}/"), "authorization_endpoint": format!("{issuer}/a"),
        "token_endpoint": format!("{issuer}/t"), "jwks_uri": format!("{issuer}/j")});
    Mock::given(method("GET"))
        .and(path("/ENV/as/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(doc))
        .mount(&server)
        .await;
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let app =
        oidc_bff::startup::App::with_listener(settings(port, &issuer, &[]), listener).unwrap_or_else(|e| panic!("{e}"));
    let result = tokio::time::timeout(Duration::from_secs(10), app.run_until(std::future::pending())).await;
    assert!(matches!(result, Ok(Err(oidc_bff::startup::StartupError::Discovery(_)))), "{result:?}");
}

/// RSA `private_key_jwt` signs with the `rsa` crate, which carries RUSTSEC-2023-0071 (accepted in
/// deny.toml for that reason only): `serve` says so once at start-up when it is configured, and
/// not for an EC key.
#[tokio::test]
async fn serve_warns_once_at_start_up_when_rsa_private_key_jwt_is_in_use() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    for (key, warned) in [("rsa.pem", true), ("ec.pem", false)] {
        let port = free_port();
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             [oidc]\nissuer = \"http://127.0.0.1:9/ENV/as\"\nclient_id = \"c\"\nclient_auth = \"private_key_jwt\"\n\
             private_key_file = \"{fixtures}/{key}\"\nprivate_key_id = \"k1\"\n\
             [session]\nkeys = [\"{KEY_A}\"]\n[logging]\nformat = \"json\"\n"
        );
        let bin = spawn_binary(port, &toml).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logs = bin.stderr();
        let n = logs.lines().filter(|l| l.contains("RUSTSEC-2023-0071")).count();
        assert_eq!(n, usize::from(warned), "{key}: {logs}");
        if warned {
            let line = logs.lines().find(|l| l.contains("RUSTSEC-2023-0071")).unwrap_or_default();
            assert!(line.contains("\"level\":\"WARN\""), "{line}");
        }
    }
}
