//! `oidc-bff doctor` (SPEC §7): the real binary against the real test IdP, and against a
//! wiremock IdP where a fault is needed (an IdP without revocation or end-session endpoints).

use crate::helpers::*;
use oidc_bff::login::tx::{TxShape, cookie_header_bytes};
use oidc_bff::session::cookie::CookieNames;
use serde_json::json;
use std::path::PathBuf;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// What one run printed, and its exit code.
struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

impl Run {
    /// The lines of `check`, each `status check detail`.
    fn lines(&self, check: &str) -> Vec<&str> {
        self.out.lines().filter(|l| l.split_whitespace().nth(1) == Some(check)).collect()
    }

    fn statuses(&self, check: &str) -> Vec<&str> {
        self.lines(check).iter().filter_map(|l| l.split_whitespace().next()).collect()
    }

    fn has_fail(&self) -> bool {
        self.out.lines().any(|l| l.starts_with("fail"))
    }
}

/// A directory of its own for each test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("oidc-bff-doctor-{name}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

/// `oidc-bff doctor --config <toml written to dir>`, with no `BFF_…` from our environment.
async fn doctor(dir: &std::path::Path, toml: &str) -> Run {
    let file = dir.join("bff.toml");
    std::fs::write(&file, toml).unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
        .args(["doctor", "--config"])
        .arg(&file)
        .env_remove("BFF_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let run = Run {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.err.contains("panicked"), "doctor panicked:\n{}", run.err);
    run
}

/// Extra keys of a test configuration, per section.
#[derive(Default)]
struct Extra<'a> {
    server: &'a str,
    /// `[oidc]` keys, then possibly `[[providers]]` entries.
    oidc: &'a str,
    session: &'a str,
}

/// `[server]` on a port nothing listens on (doctor never serves), `[oidc]` as client
/// `bff-basic` with `secret`, `[session]` with a key.
fn config(port: u16, issuer: &str, secret: &str, extra: Extra<'_>) -> String {
    let Extra { server, oidc, session } = extra;
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
{server}
[oidc]
issuer = "{issuer}"
client_id = "bff-basic"
client_secret = "{secret}"
http_timeout_secs = 5
{oidc}
[session]
keys = ["{KEY_A}"]
{session}
"#
    )
}

/// The P-256 public key of RFC 7517 Appendix A.1.
fn jwks() -> serde_json::Value {
    json!({"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "k1",
        "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4", "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]})
}

/// An IdP that lists neither a revocation nor an end-session endpoint, publishes one signing
/// key and refuses every code with invalid_grant (and a description doctor must not repeat).
async fn bare_idp() -> (MockServer, String) {
    let server = MockServer::start().await;
    let issuer = format!("{}/ENV/as", server.uri());
    let doc = json!({"issuer": issuer, "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks")});
    Mock::given(method("GET"))
        .and(path("/ENV/as/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(doc))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/ENV/as/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(jwks()))
        .mount(&server)
        .await;
    let refused = json!({"error": "invalid_grant", "error_description": "IDP-DESCRIPTION-NEVER-SHOWN"});
    Mock::given(method("POST"))
        .and(path("/ENV/as/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(refused))
        .mount(&server)
        .await;
    (server, issuer)
}

const PROVIDER_CHECKS: [&str; 9] = [
    "discovery",
    "jwks",
    "revocation",
    "end-session",
    "par",
    "backchannel-logout",
    "client-credentials",
    "clock",
    "redirect-uris",
];

#[tokio::test]
async fn doctor_against_the_test_idp_passes_every_check() {
    let port = free_port();
    // The default IdP wants a DPoP nonce: the probe's proof is sent again with it.
    let (default, partners) =
        tokio::join!(Idp::start(port, json!({"dpopNonce": true})), Idp::start(port, json!({"envId": "PARTNERS"})));
    let d = dir("all-ok");
    // Both client authentications, PAR and DPoP required of the default IdP, a store (so that
    // back-channel logout is checked).
    let providers = format!(
        "par = \"required\"\ndpop = true\n\n[[providers]]\nname = \"partners\"\nissuer = \"{}\"\n\
         client_id = \"bff-post\"\nclient_secret = \"{SECRET_POST}\"\nclient_auth = \"client_secret_post\"\n",
        partners.issuer
    );
    let store = format!("store = \"sqlite\"\nurl = \"sqlite://{}/sessions.db?mode=rwc\"\n", d.display());
    let extra = Extra { oidc: &providers, session: &store, ..Extra::default() };
    let toml = config(port, &default.issuer, SECRET_BASIC, extra);
    let run = doctor(&d, &toml).await;
    assert_eq!(run.code, Some(0), "{}{}", run.out, run.err);
    assert!(!run.has_fail(), "{}", run.out);
    for check in PROVIDER_CHECKS {
        assert_eq!(run.lines(check).len(), 2, "{check}, once per provider:\n{}", run.out);
    }
    assert_eq!(run.statuses("dpop"), ["ok"], "{}", run.out);
    assert_eq!(run.statuses("client-credentials"), ["ok", "ok"], "{}", run.out);
    assert!(run.lines("client-credentials")[0].contains("invalid_grant"), "{}", run.out);
    assert_eq!(run.lines("cookie-budget").len(), 1, "{}", run.out);
    for secret in [SECRET_BASIC, SECRET_POST, KEY_A] {
        assert!(!run.out.contains(secret) && !run.err.contains(secret), "a secret was printed:\n{}", run.out);
    }
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test]
async fn doctor_with_a_wrong_client_secret_fails_client_credentials() {
    let port = free_port();
    let idp = Idp::start(port, json!({})).await;
    let d = dir("wrong-secret");
    let wrong = "wrong-secret-never-printed-4711";
    let toml = config(port, &idp.issuer, wrong, Extra::default());
    let run = doctor(&d, &toml).await;
    assert_eq!(run.code, Some(1), "{}{}", run.out, run.err);
    let line = run.lines("client-credentials");
    assert_eq!(line.len(), 1, "{}", run.out);
    assert!(line[0].starts_with("fail") && line[0].contains("invalid_client"), "{}", run.out);
    assert!(line[0].contains("client authentication failed"), "{}", run.out);
    assert!(!run.out.contains(wrong) && !run.err.contains(wrong), "the secret was printed:\n{}", run.out);
    // Only that check fails: discovery and the rest passed.
    assert_eq!(run.out.lines().filter(|l| l.starts_with("fail")).count(), 1, "{}", run.out);
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test]
async fn doctor_warns_when_the_idp_lists_no_revocation_or_end_session() {
    let (_server, issuer) = bare_idp().await;
    let d = dir("bare-idp");
    let toml = config(free_port(), &issuer, SECRET_BASIC, Extra::default());
    let run = doctor(&d, &toml).await;
    assert_eq!(run.code, Some(0), "{}{}", run.out, run.err);
    assert!(!run.has_fail(), "{}", run.out);
    assert_eq!(run.statuses("revocation"), ["warn"], "{}", run.out);
    assert_eq!(run.statuses("end-session"), ["warn"], "{}", run.out);
    assert!(run.lines("revocation")[0].contains("refresh token"), "{}", run.out);
    assert_eq!(run.statuses("client-credentials"), ["ok"], "{}", run.out);
    assert_eq!(run.statuses("jwks"), ["ok"], "{}", run.out);
    // The IdP's own words never reach the output, only its error code.
    assert!(!run.out.contains("IDP-DESCRIPTION-NEVER-SHOWN"), "{}", run.out);
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test]
async fn doctor_warns_about_a_cookie_header_over_8_kib_with_its_size_and_the_store_advice() {
    let (_server, issuer) = bare_idp().await;
    let d = dir("budget");
    let toml = config(free_port(), &issuer, SECRET_BASIC, Extra::default());
    let run = doctor(&d, &toml).await;
    assert_eq!(run.code, Some(0), "{}{}", run.out, run.err);
    // The size as the cookie code computes it for this configuration (cookie mode, Secure names,
    // no DPoP, one provider).
    let settings = oidc_bff::settings::Settings::from_toml_str(&toml, vec![]).unwrap_or_else(|e| panic!("{e}"));
    let names = CookieNames::new(&settings.session);
    let bytes = cookie_header_bytes(&names, TxShape { server_side: false, dpop: false, provider_len: 0 });
    let with_store = cookie_header_bytes(&names, TxShape { server_side: true, dpop: false, provider_len: 0 });
    assert!(bytes > 8192 && with_store < bytes, "{bytes} {with_store}");
    let line = run.lines("cookie-budget");
    assert_eq!(line.len(), 1, "{}", run.out);
    assert!(line[0].starts_with("warn"), "{}", run.out);
    assert!(line[0].contains(&format!("{bytes} bytes")), "{bytes} not in {}", line[0]);
    assert!(line[0].contains("server-side store") && line[0].contains(&format!("{with_store} bytes")), "{}", line[0]);
    let _ = std::fs::remove_dir_all(d);
}

/// A `max_header_bytes` below the largest Cookie header never reaches the IdP checks: the
/// configuration is refused (the smallest accepted value holds SPEC §4's worst case), reported as
/// a `fail config` line naming the key, exit 1, without a request to the IdP. (The cookie-budget
/// line's own `fail` verdict is unit-tested in src/doctor/local.rs.)
#[tokio::test]
async fn doctor_fails_a_max_header_bytes_below_the_largest_cookie_header() {
    let (server, issuer) = bare_idp().await;
    let d = dir("max-header");
    let extra = Extra { server: "max_header_bytes = 40960", ..Extra::default() };
    let toml = config(free_port(), &issuer, SECRET_BASIC, extra);
    let run = doctor(&d, &toml).await;
    assert_eq!(run.code, Some(1), "{}{}", run.out, run.err);
    let line = run.lines("config");
    assert!(line.iter().any(|l| l.starts_with("fail") && l.contains("server.max_header_bytes")), "{}", run.out);
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(0));
    let _ = std::fs::remove_dir_all(d);
}

#[tokio::test]
async fn doctor_reports_an_unreachable_idp_as_a_fail_line() {
    let idp_port = free_port();
    let d = dir("unreachable");
    let issuer = format!("http://127.0.0.1:{idp_port}/ENV_ID/as");
    let toml = config(free_port(), &issuer, SECRET_BASIC, Extra::default());
    let run = doctor(&d, &toml).await;
    assert_eq!(run.code, Some(1), "{}{}", run.out, run.err);
    let line = run.lines("discovery");
    assert!(line.len() == 1 && line[0].starts_with("fail") && line[0].contains("cannot connect"), "{}", run.out);
    // The checks that need no IdP still ran.
    assert_eq!(run.lines("redirect-uris").len(), 1, "{}", run.out);
    assert_eq!(run.lines("cookie-budget").len(), 1, "{}", run.out);
    let _ = std::fs::remove_dir_all(d);
}

/// SPEC §3.4: the discovery document's issuer must equal the configured one exactly (start-up
/// stops otherwise); a trailing slash is another issuer.
#[tokio::test]
async fn doctor_fails_a_discovery_that_names_another_issuer() {
    let server = MockServer::start().await;
    let issuer = format!("{}/ENV/as", server.uri());
    let doc = json!({"issuer": format!("{issuer}/"), "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks")});
    Mock::given(method("GET"))
        .and(path("/ENV/as/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(doc))
        .mount(&server)
        .await;
    let d = dir("issuer");
    let run = doctor(&d, &config(free_port(), &issuer, SECRET_BASIC, Extra::default())).await;
    assert_eq!(run.code, Some(1), "{}{}", run.out, run.err);
    let line = run.lines("discovery");
    assert!(line.len() == 1 && line[0].starts_with("fail"), "{}", run.out);
    assert!(line[0].contains(&format!("{issuer}/")) && line[0].contains("not the configured"), "{}", run.out);
    // Nothing else of this provider was asked of the IdP.
    assert!(run.lines("client-credentials").is_empty() && run.lines("jwks").is_empty(), "{}", run.out);
    let _ = std::fs::remove_dir_all(d);
}

/// docs/operations.md states doctor's thresholds as the code has them.
#[test]
fn operations_doc_states_the_doctor_thresholds() {
    let ops = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    let section = ops.split("## Checking a deployment: doctor").nth(1).unwrap_or_else(|| panic!("no doctor section"));
    let section = section.split("\n## ").next().unwrap_or_default();
    let proxy = oidc_bff::doctor::PROXY_LINE_BYTES;
    let stated = format!("{},{:03} bytes", proxy / 1000, proxy % 1000);
    assert!(section.contains(&stated), "the doctor section does not say {stated}");
    let clock = format!("{} s", oidc_bff::doctor::CLOCK_WARN_SECS);
    assert!(section.contains(&clock), "the doctor section does not say {clock}");
}
