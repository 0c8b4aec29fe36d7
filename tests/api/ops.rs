//! Operations (SPEC §7): metrics on the admin listener only, JSON logs with request ids,
//! graceful SIGTERM drain. All against the real binary.

use crate::helpers::*;
use crate::upstream;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

fn config(port: u16, issuer: &str, upstream: &str, extra_server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\nshutdown_timeout_secs = 10\n{extra_server}\n\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"bff-basic\"\nclient_secret = \"{SECRET_BASIC}\"\n\
         [session]\nkeys = [\"{KEY_A}\"]\n[logging]\nformat = \"json\"\nlevel = \"info\"\n\
         [[routes]]\nprefix = \"/api\"\nupstream = \"{upstream}\"\ntimeout_secs = 10\n"
    )
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// SPEC §7: every family has `# HELP`, the `bff_` prefix (or the process collector's
/// `process_`), counters end in `_total`, the status label is `code`, no label value is empty;
/// the in-flight gauge and the process collector are there.
fn conventions(text: &str) {
    let helped: std::collections::HashSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# HELP ")).filter_map(|l| l.split(' ').next()).collect();
    let mut families = 0;
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut words = line.split(' ');
        let (name, kind) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        families += 1;
        assert!(helped.contains(name), "{name} has no # HELP");
        assert!(name.starts_with("bff_") || name.starts_with("process_"), "{name}: not bff_ or process_");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counter {name} does not end in _total");
        }
    }
    assert!(families >= 15, "{families} families:\n{text}");
    for sample in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!sample.contains("=\"\""), "an empty label value: {sample}");
        assert!(!sample.contains("status=\""), "the status label must be `code`: {sample}");
    }
    for name in ["bff_http_requests_in_flight", "process_resident_memory_bytes", "process_cpu_seconds_total"] {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing:\n{text}");
    }
}

#[tokio::test]
async fn metrics_count_logins_refreshes_proxied_calls_and_logouts_on_the_admin_listener_only() {
    let up = upstream::start().await;
    let (port, admin) = (free_port(), free_port());
    let idp = Idp::start(port, json!({"accessTokenTtl": 35})).await;
    let bin =
        spawn_binary(port, &config(port, &idp.issuer, &up.url(), &format!("admin_listen = \"127.0.0.1:{admin}\"")))
            .await;
    bin.wait_ready().await;
    let mut b = Browser::new_for_origin(&bin.base);
    let start = b.get(&format!("{}/login", bin.base)).await;
    let cb = b.idp_login(&start.location(), "alice").await;
    assert_eq!(b.get(&cb).await.status, 302);
    assert_eq!(b.fetch(Method::GET, &format!("{}/api/one", bin.base), None).await.status, 200);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = b.fetch(Method::GET, &format!("{}/api/two", bin.base), None).await;
    assert_eq!(r.status, 200);
    b.absorb_set_cookies(&r);
    assert_eq!(b.fetch(Method::POST, &format!("{}/logout", bin.base), None).await.status, 200);

    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    for (name, labels) in [
        ("bff_logins_total", vec!["result=\"started\""]),
        ("bff_logins_total", vec!["result=\"completed\""]),
        ("bff_refresh_total", vec!["result=\"ok\""]),
        ("bff_idp_token_duration_seconds_count", vec!["grant=\"authorization_code\""]),
        ("bff_idp_token_duration_seconds_count", vec!["grant=\"refresh_token\""]),
        ("bff_upstream_duration_seconds_count", vec![]),
        ("bff_sessions_ended_total", vec!["reason=\"logout\""]),
        ("bff_http_requests_total", vec!["route=\"callback\"", "code=\"302\""]),
        ("bff_http_requests_total", vec!["route=\"proxy_or_static\"", "code=\"200\""]),
        ("bff_http_request_duration_seconds_count", vec!["route=\"logout\""]),
        ("bff_session_cookie_bytes_count", vec![]),
        ("bff_build_info", vec!["version=\""]),
    ] {
        assert!(metric(&text, name, &labels) >= 1.0, "{name}{labels:?} missing in:\n{text}");
    }
    conventions(&text);
    // A failed login is counted by reason.
    let r = b.get(&format!("{}/callback?state=nope&code=x", bin.base)).await;
    assert_eq!(r.status, 400);
    let text = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(metric(&text, "bff_logins_total", &["result=\"failed\"", "reason=\"invalid_state\""]) >= 1.0, "{text}");
    // Never on the main listener.
    let main = reqwest::get(format!("{}/metrics", bin.base)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(main.status(), 404);
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_carry_the_clients_request_id_upstream() {
    let up = upstream::start().await;
    let port = free_port();
    let idp = Idp::start(port, json!({})).await;
    let bin = spawn_binary(port, &config(port, &idp.issuer, &up.url(), "")).await;
    bin.wait_ready().await;
    let mut b = Browser::new_for_origin(&bin.base);
    let start = b.get(&format!("{}/login", bin.base)).await;
    let cb = b.idp_login(&start.location(), "alice").await;
    assert_eq!(b.get(&cb).await.status, 302);
    let origin = bin.base.clone();
    let r = b
        .request(
            Method::GET,
            &format!("{}/api/echo", bin.base),
            &[("x-csrf", "1"), ("origin", &origin), ("x-request-id", "req-abc.123")],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-request-id"], "req-abc.123", "the upstream saw the client's request id");
    assert_eq!(r.header("x-request-id"), "req-abc.123");
    // A hostile id is replaced.
    let r = b
        .request(Method::GET, &format!("{}/api/echo", bin.base), &[("x-csrf", "1"), ("x-request-id", "<script>")], None)
        .await;
    assert_ne!(r.header("x-request-id"), "<script>");
    // A refused request logs an application line of its own: it carries the request's id too.
    let r = b.request(Method::GET, &format!("{}/api/echo", bin.base), &[("x-request-id", "req-warn.7")], None).await;
    assert_eq!(r.status, 403);
    // Access lines are written within a second (SPEC §7: buffered).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = bin.stderr();
    let mut lines = 0;
    let mut with_id = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(v.is_object());
        lines += 1;
        if line.contains("req-abc.123") {
            with_id += 1;
            // At the top level of every line of the request, access line or not.
            assert_eq!(v["request_id"], "req-abc.123", "{line}");
        }
    }
    assert!(lines > 5, "{logs}");
    let refused = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] != "access" && v["request_id"] == "req-warn.7");
    assert!(
        refused.is_some_and(|v| v["level"] == "WARN" && v["message"].as_str().is_some_and(|m| m.contains("X-CSRF"))),
        "the CSRF refusal's own line carries the request id: {logs}"
    );
    assert!(with_id >= 1, "the access log line carries the request id: {logs}");
    assert!(logs.contains("\"target\":\"access\""), "{logs}");
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_request_refuses_new_connections_and_exits_0() {
    let up = upstream::start().await;
    let port = free_port();
    // No IdP: the route needs no session.
    let toml = config(port, "http://127.0.0.1:9/ENV/as", &up.url(), "").replace(
        "[[routes]]\nprefix = \"/api\"",
        "[[routes]]\nprefix = \"/slowapi\"\nupstream = \"UP\"\nauth = \"none\"\nstrip_prefix = true\n\n[[routes]]\nprefix = \"/api\"",
    );
    let toml = toml.replace("\"UP\"", &format!("\"{}\"", up.url()));
    let mut bin = spawn_binary(port, &toml).await;
    let url = format!("{}/slowapi/api/slow", bin.base);
    let in_flight = tokio::spawn(async move { reqwest::Client::new().get(url).header("x-csrf", "1").send().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(bin.child.id().to_string()).status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "a new connection was accepted during the drain");
    let r =
        in_flight.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("in-flight request failed: {e}"));
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap_or_default(), "late");
    let mut status = None;
    for _ in 0..200 {
        if let Ok(Some(s)) = bin.child.try_wait() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = status.unwrap_or_else(|| panic!("did not exit"));
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10), "exited within the drain timeout");
}
