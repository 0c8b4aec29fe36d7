//! Test harness: the real IdP (node tests/idp/server.js), the real app on a random port, and a
//! tiny browser (a cookie jar that does not drop Secure cookies over http and never follows
//! redirects by itself).

#![allow(dead_code)]

use oidc_bff::settings::Settings;
use oidc_bff::startup::App;
use oidc_bff::state::AppState;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
pub const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
pub const SECRET_BASIC: &str = "basic-secret-0123456789";
pub const SECRET_POST: &str = "post-secret-0123456789";

pub fn idp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// The real OpenID Provider, killed when dropped.
pub struct Idp {
    child: tokio::process::Child,
    pub issuer: String,
    pub port: u16,
}

impl Idp {
    /// Start the IdP with clients registered for a BFF on `bff_port`, plus `extra` config.
    pub async fn start(bff_port: u16, extra: Value) -> Idp {
        oidc_bff::startup::install_crypto_providers();
        let dir = idp_dir();
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "tests/idp/node_modules is missing: run `npm ci --prefix tests/idp` (scripts/test.sh does)"
        );
        let origin = format!("http://127.0.0.1:{bff_port}");
        let client = |id: &str, secret: &str, method: &str| {
            json!({
                "client_id": id,
                "client_secret": secret,
                "token_endpoint_auth_method": method,
                "redirect_uris": [
                    format!("{origin}/callback"),
                    format!("{origin}/bff/callback"),
                    format!("{origin}/spa/callback"),
                    format!("{origin}/callback/partners"),
                ],
                "post_logout_redirect_uris": [format!("{origin}/")],
            })
        };
        let mut cfg = json!({
            "clients": [
                client("bff-basic", SECRET_BASIC, "client_secret_basic"),
                client("bff-post", SECRET_POST, "client_secret_post"),
            ],
        });
        if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(dir.join("server.js")).env("IDP_CONFIG", cfg.to_string()).stdin(Stdio::piped());
        let (child, line) = spawn_until_ready_line(cmd, "IdP").await;
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("IdP ready line {line:?}: {e}"));
        Idp {
            child,
            issuer: ready["issuer"].as_str().unwrap_or_default().to_owned(),
            port: ready["port"].as_u64().unwrap_or_default() as u16,
        }
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `state` of the login `authorization_url` starts: in its query, or, when the login
    /// went through PAR (only `client_id` and `request_uri` there), in the pushed request the
    /// IdP recorded.
    pub async fn state_of(&self, authorization_url: &str) -> String {
        let url = url::Url::parse(authorization_url).unwrap_or_else(|e| panic!("{e}"));
        if let Some((_, s)) = url.query_pairs().find(|(k, _)| k == "state") {
            return s.into_owned();
        }
        let requests = self.control_method(reqwest::Method::GET, "requests").await;
        let pushed = requests.as_array().and_then(|r| r.iter().rev().find(|e| e["endpoint"] == "par"));
        pushed.and_then(|e| e["state"].as_str()).unwrap_or_else(|| panic!("no pushed state: {requests}")).to_owned()
    }

    pub async fn events(&self) -> Value {
        reqwest::get(format!("{}/__test/events", self.origin()))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default()
    }

    pub async fn grants(&self, kind: &str) -> u64 {
        self.events().await["grants"][kind].as_u64().unwrap_or(0)
    }

    /// A JWT signed with the IdP's current key (`/__test/sign`): crafted logout tokens.
    pub async fn sign(&self, header: Value, payload: Value) -> String {
        let r: Value = reqwest::Client::new()
            .post(format!("{}/__test/sign", self.origin()))
            .json(&json!({ "header": header, "payload": payload }))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default();
        r["jwt"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn control(&self, path: &str) -> Value {
        self.control_method(reqwest::Method::POST, path).await
    }

    pub async fn control_method(&self, method: reqwest::Method, path: &str) -> Value {
        reqwest::Client::new()
            .request(method, format!("{}/__test/{path}", self.origin()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default()
    }
}

/// Start `cmd` (stdout piped, stderr dropped, killed on drop) and wait at most 30 s for the
/// first line it writes to stdout: its ready line.
pub async fn spawn_until_ready_line(mut cmd: tokio::process::Command, what: &str) -> (tokio::process::Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the {what}: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("{what} did not become ready in 30 s"))
        .unwrap_or_else(|e| panic!("{what} stdout: {e}"))
        .unwrap_or_else(|| panic!("{what} exited before it was ready"));
    (child, line)
}

/// Settings for a BFF on `port` talking to `issuer` as client `bff-basic`, with `vars`
/// (`BFF_…` names) applied on top, exactly as the environment would.
pub fn settings(port: u16, issuer: &str, vars: &[(&str, &str)]) -> Settings {
    settings_with(port, issuer, vars, "")
}

/// As [`settings`], with `extra` TOML appended (`[[routes]]` come from the file only).
pub fn settings_with(port: u16, issuer: &str, vars: &[(&str, &str)], extra: &str) -> Settings {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
[oidc]
issuer = "{issuer}"
client_id = "bff-basic"
client_secret = "{SECRET_BASIC}"
http_timeout_secs = 2
[session]
keys = ["{KEY_A}"]
[logging]
access_log = false
{extra}
"#
    );
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings::from_toml_str(&toml, vars).unwrap_or_else(|e| panic!("test settings invalid: {e}"))
}

/// A running oidc-bff; stopped when dropped.
pub struct Bff {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Bff {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Bff {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Bind a random loopback port (so the IdP can register redirect URIs before the app exists).
pub async fn reserve() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"))
}

pub async fn spawn_bff(listener: tokio::net::TcpListener, settings: Settings) -> Bff {
    let app = App::with_listener(settings, listener).unwrap_or_else(|e| panic!("build: {e}"));
    let addr = app.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let state = app.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = rx.await;
            })
            .await;
    });
    let bff = Bff { addr, state, stop: Some(tx), task: Some(task) };
    for _ in 0..1200 {
        if bff.state.providers.default_provider().is_ready() && bff.state.is_store_ready() {
            return bff;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("oidc-bff did not become ready in 30 s");
}

/// The usual arrangement: the real IdP and a BFF wired to it.
pub async fn stack(idp_extra: Value, vars: &[(&str, &str)]) -> (Idp, Bff) {
    stack_with(idp_extra, vars, "").await
}

/// SPA mode (SPEC §3.2): `redirect_uri` is the SPA page `/spa/callback` (returned too).
pub async fn spa_stack_with(idp_extra: Value, vars: &[(&str, &str)]) -> (Idp, Bff, String) {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let idp = Idp::start(port, idp_extra).await;
    let redirect = format!("http://127.0.0.1:{port}/spa/callback");
    let mut all = vec![("BFF_OIDC__REDIRECT_URI", redirect.as_str())];
    all.extend_from_slice(vars);
    let bff = spawn_bff(listener, settings(port, &idp.issuer, &all)).await;
    (idp, bff, redirect)
}

pub async fn stack_with(idp_extra: Value, vars: &[(&str, &str)], extra_toml: &str) -> (Idp, Bff) {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let idp = Idp::start(port, idp_extra).await;
    let bff = spawn_bff(listener, settings_with(port, &idp.issuer, vars, extra_toml)).await;
    (idp, bff)
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    pub fn location(&self) -> String {
        self.header("location")
    }
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_else(|e| panic!("{e}"))
}

/// One browser profile: a cookie jar per origin, manual redirects, everything recorded.
#[derive(Clone)]
pub struct Browser {
    http: reqwest::Client,
    pub jars: BTreeMap<String, BTreeMap<String, String>>,
    /// Every response body this browser received from the BFF.
    pub bff_bodies: Vec<String>,
    pub bff_origin: String,
}

impl Browser {
    pub fn new(bff: &Bff) -> Self {
        Self::new_for_origin(&bff.url(""))
    }

    pub fn new_for_origin(origin: &str) -> Self {
        oidc_bff::startup::install_crypto_providers();
        Self { http: client(), jars: BTreeMap::new(), bff_bodies: vec![], bff_origin: origin.to_owned() }
    }

    fn origin_of(url: &str) -> String {
        url::Url::parse(url).map(|u| u.origin().ascii_serialization()).unwrap_or_default()
    }

    pub fn jar(&self) -> BTreeMap<String, String> {
        self.jars.get(&self.bff_origin).cloned().unwrap_or_default()
    }

    pub fn set_jar(&mut self, jar: BTreeMap<String, String>) {
        self.jars.insert(self.bff_origin.clone(), jar);
    }

    /// Store the BFF's Set-Cookie lines of a response received by a clone of this browser.
    pub fn absorb_set_cookies(&mut self, resp: &Resp) {
        let origin = self.bff_origin.clone();
        self.absorb(&origin, resp);
    }

    fn absorb(&mut self, origin: &str, resp: &Resp) {
        let jar = self.jars.entry(origin.to_owned()).or_default();
        for line in resp.set_cookies() {
            let Ok(c) = cookie::Cookie::parse(line.clone()) else {
                continue;
            };
            let expired = c.max_age().is_some_and(|a| a.is_zero() || a.is_negative()) || c.value().is_empty();
            if expired {
                jar.remove(c.name());
            } else {
                jar.insert(c.name().to_owned(), c.value().to_owned());
            }
        }
    }

    pub async fn request(
        &mut self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Resp {
        let origin = Self::origin_of(url);
        let mut req = self.http.request(method, url);
        let jar = self.jars.get(&origin).cloned().unwrap_or_default();
        if !jar.is_empty() {
            let cookie: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", cookie.join("; "));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let resp = Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap_or_default(),
        };
        self.absorb(&origin, &resp);
        if origin == self.bff_origin {
            self.bff_bodies.push(resp.body.clone());
        }
        resp
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        self.request(reqwest::Method::GET, url, &[], None).await
    }

    /// A fetch() from the SPA: `X-CSRF: 1` and the public origin.
    pub async fn fetch(&mut self, method: reqwest::Method, url: &str, json: Option<Value>) -> Resp {
        let origin = self.bff_origin.clone();
        let headers = [("x-csrf", "1"), ("origin", origin.as_str()), ("content-type", "application/json")];
        self.request(method, url, &headers, json.map(|j| j.to_string())).await
    }

    /// Drive the IdP from its authorization URL to the redirect back to the client: log in as
    /// `user`, consent automatically. Returns the URL the IdP redirected to.
    pub async fn idp_login(&mut self, authorization_url: &str, user: &str) -> String {
        let mut url = authorization_url.to_owned();
        for _ in 0..12 {
            let r = self.get(&url).await;
            match r.status {
                301..=308 => {
                    let next = url::Url::parse(&url).and_then(|base| base.join(&r.location())).map(|u| u.to_string());
                    let next = next.unwrap_or_else(|e| panic!("bad Location: {e}"));
                    if next.starts_with(&self.bff_origin) {
                        return next;
                    }
                    url = next;
                }
                200 if r.body.contains("name=\"login\"") => {
                    let action = r.body.split("action=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
                    let action = action.replace("&amp;", "&");
                    let target =
                        url::Url::parse(&url).and_then(|b| b.join(&action)).map(|u| u.to_string()).unwrap_or_default();
                    let form = format!("login={user}");
                    let r = self
                        .request(
                            reqwest::Method::POST,
                            &target,
                            &[("content-type", "application/x-www-form-urlencoded")],
                            Some(form),
                        )
                        .await;
                    assert!((301..=308).contains(&r.status), "login form answered {}: {}", r.status, r.body);
                    url = url::Url::parse(&target)
                        .and_then(|b| b.join(&r.location()))
                        .map(|u| u.to_string())
                        .unwrap_or_default();
                }
                s => panic!("IdP answered {s} at {url}: {}", r.body),
            }
        }
        panic!("IdP redirect loop")
    }

    /// Redirect-mode login: /login → IdP → /callback. Returns the callback response.
    pub async fn login(&mut self, bff: &Bff, user: &str, return_to: &str) -> Resp {
        let start = self.get(&bff.url(&format!("/login?return_to={}", urlencode(return_to)))).await;
        assert_eq!(start.status, 302, "GET /login: {}", start.body);
        let callback = self.idp_login(&start.location(), user).await;
        self.get(&callback).await
    }

    pub async fn session(&mut self, bff: &Bff) -> Resp {
        self.fetch(reqwest::Method::GET, &bff.url("/session"), None).await
    }
}

/// `n` concurrent `GET path` fetches from the SPA with the cookies `jar`, spread over `insts` in
/// turn (replicas behind a load balancer); the responses, in the order the requests were made.
pub async fn fan_out(insts: &[&Bff], jar: &BTreeMap<String, String>, path: &str, n: usize) -> Vec<Resp> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let inst = insts[i % insts.len()];
            let (target, origin, jar) = (inst.url(path), inst.url(""), jar.clone());
            tokio::spawn(async move {
                let mut c = Browser::new_for_origin(&origin);
                c.set_jar(jar);
                c.fetch(reqwest::Method::GET, &target, None).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    out
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Open the session cookie in a jar with the test key, to learn the real tokens.
pub fn open_session(bff: &Bff, jar: &BTreeMap<String, String>) -> Option<oidc_bff::session::model::Session> {
    let cookie: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, http::HeaderValue::from_str(&cookie.join("; ")).ok()?);
    oidc_bff::session::cookie::SessionCookie::from_headers(bff.state.sessions.cookies(), &h)
        .open_uncached(bff.state.sessions.cookies(), bff.state.sessions.keys())
}

/// The real binary, started with `toml` written to a temporary file; killed when dropped.
pub struct Binary {
    pub child: std::process::Child,
    pub base: String,
    dir: PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The text of the admin listener's `/metrics` on `port`.
pub async fn scrape_metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default()
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    l.local_addr().map(|a| a.port()).unwrap_or_default()
}

/// Start `oidc-bff serve` listening on `port`, wait for `/healthz`, capture stderr to a file.
pub async fn spawn_binary(port: u16, toml: &str) -> Binary {
    oidc_bff::startup::install_crypto_providers();
    let dir = std::env::temp_dir().join(format!("oidc-bff-bin-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    let config = dir.join("bff.toml");
    std::fs::write(&config, toml).unwrap_or_else(|e| panic!("{e}"));
    let log = std::fs::File::create(dir.join("stderr.log")).unwrap_or_else(|e| panic!("{e}"));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // From here the Drop of `Binary` kills and reaps the child, whatever happens.
    let bin = Binary { child, base: format!("http://127.0.0.1:{port}"), dir };
    let probe = reqwest::Client::new();
    for _ in 0..400 {
        if probe.get(format!("{}/healthz", bin.base)).send().await.is_ok() {
            return bin;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("binary did not start")
}

impl Binary {
    /// Wait for `/readyz` (discovery and JWKS loaded).
    pub async fn wait_ready(&self) {
        // Generous: the whole suite runs in parallel on 2 cores, and discovery retries with
        // backoff if its first attempt is starved.
        let probe = reqwest::Client::new();
        for _ in 0..1200 {
            if probe.get(format!("{}/readyz", self.base)).send().await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("binary did not become ready in 30 s:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}
