//! Server-side sessions (SQLite, PostgreSQL, Redis), back-channel logout, the cookie-mode
//! revocation list, refresh coordination across two instances, store outages and `migrate`
//! (SPEC §4–§6, issue 6). PostgreSQL (127.0.0.1:5432, trust auth, database `test`) and Redis
//! (127.0.0.1:6379) tests run where those answer and print why they are skipped where they do
//! not; each test works in its own schema or key prefix and drops it afterwards.

use crate::helpers::*;
use crate::upstream;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
    Redis,
    /// A cluster of this test's own (tests/api/topology.rs).
    RedisCluster,
    /// A primary behind sentinels, of this test's own.
    RedisSentinel,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One test's private store: a SQLite file, a PostgreSQL schema or a Redis key prefix.
pub(crate) struct TestStore {
    kind: Kind,
    pub(crate) name: String,
    /// The address the BFF dials (the real server, or a relay in front of it).
    port: u16,
    pub(crate) topology: Option<crate::topology::Topology>,
}

fn unique(label: &str) -> String {
    format!(
        "bff_t_{label}_{}_{}",
        std::process::id(),
        oidc_bff::secret::random_urlsafe(6).to_lowercase().replace('-', "_")
    )
}

async fn answers(port: u16) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(("127.0.0.1", port))).await,
        Ok(Ok(_))
    )
}

impl TestStore {
    /// `None` (with the reason printed) where the server does not answer on loopback.
    pub(crate) async fn new(kind: Kind, label: &str) -> Option<Self> {
        let name = unique(label);
        match kind {
            Kind::Sqlite => Some(Self {
                kind,
                name: std::env::temp_dir().join(format!("{name}.db")).display().to_string(),
                port: 0,
                topology: None,
            }),
            Kind::Postgres => {
                if !answers(5432).await {
                    eprintln!("SKIPPED ({label}): PostgreSQL does not answer on 127.0.0.1:5432");
                    return None;
                }
                let pool = sqlx::PgPool::connect(PG_ADMIN).await.unwrap_or_else(|e| panic!("{PG_ADMIN}: {e}"));
                sqlx::query(&format!("CREATE SCHEMA {name}")).execute(&pool).await.unwrap_or_else(|e| panic!("{e}"));
                pool.close().await;
                Some(Self { kind, name, port: 5432, topology: None })
            }
            Kind::Redis => {
                if !answers(6379).await {
                    eprintln!("SKIPPED ({label}): Redis does not answer on 127.0.0.1:6379");
                    return None;
                }
                Some(Self { kind, name: format!("{name}:"), port: 6379, topology: None })
            }
            Kind::RedisCluster | Kind::RedisSentinel => Self::topology(kind, label, false),
        }
    }

    /// A cluster or sentinel topology of this test's own; with `acl`, reachable only as an ACL
    /// user whose name and password the url carries.
    pub(crate) fn topology(kind: Kind, label: &str, acl: bool) -> Option<Self> {
        let topology = match kind {
            Kind::RedisCluster => crate::topology::Topology::cluster(label, acl)?,
            _ => crate::topology::Topology::sentinel(label, acl)?,
        };
        Some(Self { kind, name: format!("{}:", unique(label)), port: 0, topology: Some(topology) })
    }

    /// The settings naming this store's topology (none for one node).
    pub(crate) fn topology_vars(&self) -> Vec<(&'static str, &'static str)> {
        self.topology.as_ref().map(|t| t.vars()).unwrap_or_default()
    }

    /// `store_vars` with this store's topology settings.
    pub(crate) fn vars<'a>(&self, mode: &'a str, url: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut v = store_vars(mode, url);
        v.extend(self.topology_vars());
        v
    }

    pub(crate) fn url(&self) -> String {
        self.url_via(self.port)
    }

    fn url_via(&self, port: u16) -> String {
        match self.kind {
            Kind::Sqlite => format!("sqlite://{}?mode=rwc", self.name),
            Kind::Postgres => {
                format!("postgres://postgres@127.0.0.1:{port}/test?options=-c%20search_path%3D{}", self.name)
            }
            Kind::Redis => format!("redis://127.0.0.1:{port}/?prefix={}", self.name),
            Kind::RedisCluster | Kind::RedisSentinel => {
                self.topology.as_ref().map(|t| t.url(&self.name)).unwrap_or_default()
            }
        }
    }

    pub(crate) fn store_name(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::Redis | Kind::RedisCluster | Kind::RedisSentinel => "redis",
        }
    }

    pub(crate) async fn drop_all(&self) {
        match self.kind {
            Kind::Sqlite => {
                for ext in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{ext}", self.name));
                }
            }
            Kind::Postgres => {
                if let Ok(pool) = sqlx::PgPool::connect(PG_ADMIN).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.name)).execute(&pool).await;
                    pool.close().await;
                }
            }
            Kind::Redis => {
                if let Ok(client) = redis::Client::open("redis://127.0.0.1:6379/")
                    && let Ok(mut c) = client.get_multiplexed_async_connection().await
                {
                    let keys: Vec<String> =
                        redis::cmd("KEYS").arg(format!("{}*", self.name)).query_async(&mut c).await.unwrap_or_default();
                    if !keys.is_empty() {
                        let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query_async(&mut c).await;
                    }
                }
            }
            // The topology goes with the store.
            Kind::RedisCluster | Kind::RedisSentinel => {}
        }
    }

    /// Every Redis key name under this store's prefix (empty for the SQL stores).
    pub(crate) async fn redis_keys(&self) -> Vec<String> {
        if let Some(t) = &self.topology {
            return t.keys(&format!("{}*", self.name)).into_iter().collect();
        }
        if self.kind != Kind::Redis {
            return vec![];
        }
        let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap_or_else(|e| panic!("{e}"));
        let mut c = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("{e}"));
        redis::cmd("KEYS").arg(format!("{}*", self.name)).query_async(&mut c).await.unwrap_or_default()
    }

    /// How many server-side sessions the store holds.
    async fn session_count(&self) -> i64 {
        match self.kind {
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap_or_else(|e| panic!("{e}"));
                let n: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM bff_sessions").fetch_one(&pool).await.unwrap_or(-1);
                pool.close().await;
                n
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url()).await.unwrap_or_else(|e| panic!("{e}"));
                let n: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM bff_sessions").fetch_one(&pool).await.unwrap_or(-1);
                pool.close().await;
                n
            }
            Kind::Redis => {
                let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap_or_else(|e| panic!("{e}"));
                let mut c = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("{e}"));
                let keys: Vec<String> =
                    redis::cmd("KEYS").arg(format!("{}s:*", self.name)).query_async(&mut c).await.unwrap_or_default();
                keys.len() as i64
            }
            Kind::RedisCluster | Kind::RedisSentinel => {
                self.topology.as_ref().map_or(-1, |t| t.keys(&format!("{}s:*", self.name)).len() as i64)
            }
        }
    }
}

/// A TCP relay in front of a store, to stop and restart "the store" as its clients see it
/// without touching the shared server (fault injection only).
struct Relay {
    port: u16,
    target: u16,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let relay = Self { port, target, tasks: Arc::default() };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let target = self.target;
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                tasks.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            }
        });
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(accept);
    }

    /// The store is gone: listener closed, every connection dropped.
    fn stop(&self) {
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }

    /// The store is back, on the same address.
    async fn restart(&self) {
        let mut listener = None;
        for _ in 0..100 {
            if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                listener = Some(l);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.serve(listener.unwrap_or_else(|| panic!("relay port {} not re-bindable", self.port)));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// With a generous IdP timeout: the suite runs in parallel on two cores, and a refresh that
/// timed out would hide what these tests count.
pub(crate) fn store_vars<'a>(store: &'a str, url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("BFF_SESSION__STORE", store), ("BFF_SESSION__URL", url), ("BFF_OIDC__HTTP_TIMEOUT_SECS", "10")]
}

/// An IdP whose clients get back-channel logout calls at the BFF on `bff_port`.
pub(crate) fn backchannel_idp(bff_port: u16, extra: Value) -> Value {
    let origin = format!("http://127.0.0.1:{bff_port}");
    let mut cfg = json!({
        "clients": [{
            "client_id": "bff-basic",
            "client_secret": SECRET_BASIC,
            "token_endpoint_auth_method": "client_secret_basic",
            "redirect_uris": [format!("{origin}/callback")],
            "post_logout_redirect_uris": [format!("{origin}/")],
            "backchannel_logout_uri": format!("{origin}/backchannel-logout"),
        }],
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    cfg
}

pub(crate) async fn stack_store(idp_extra: Value, vars: &[(&str, &str)], toml: &str, backchannel: bool) -> (Idp, Bff) {
    let listener = reserve().await;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let idp_cfg = if backchannel { backchannel_idp(port, idp_extra) } else { idp_extra };
    let idp = Idp::start(port, idp_cfg).await;
    let bff = spawn_bff(listener, settings_with(port, &idp.issuer, vars, toml)).await;
    (idp, bff)
}

fn cookie_value(jar: &std::collections::BTreeMap<String, String>) -> String {
    jar.get("__Host-bff").cloned().unwrap_or_default()
}

/// Login, /session, reload, restart, logout, stolen copies, a new id at every login.
pub(crate) async fn core_flow(kind: Kind) {
    let Some(store) = TestStore::new(kind, "core").await else { return };
    core_flow_in(store).await;
}

pub(crate) async fn core_flow_in(store: TestStore) {
    let url = store.url();
    let vars = store.vars(store.store_name(), &url);
    let (idp, bff) = stack_store(json!({}), &vars, "", false).await;
    let mut b = Browser::new(&bff);
    let r = b.login(&bff, "ada", "/home").await;
    assert_eq!((r.status, r.location()), (302, "/home".to_owned()), "{}", r.body);
    let cookie = cookie_value(&b.jar());
    assert!(!cookie.is_empty() && cookie.len() < 120, "the cookie carries only a sealed id: {} bytes", cookie.len());
    assert!(open_session(&bff, &b.jar()).is_none(), "no session data in the cookie");
    assert_eq!(store.session_count().await, 1);
    let s = b.session(&bff).await;
    assert_eq!((s.status, s.json()["sub"].clone()), (200, json!("ada")), "{}", s.body);
    assert_eq!(s.json()["claims"]["email"], json!("ada@example.test"));
    // The id is bound to this instance's key: a tampered id is anonymous, never a 500.
    let mut forged = Browser::new(&bff);
    let mut jar = b.jar();
    let mid = cookie.len() / 2;
    let flipped = if &cookie[mid..=mid] == "A" { "B" } else { "A" };
    jar.insert("__Host-bff".into(), format!("{}{flipped}{}", &cookie[..mid], &cookie[mid + 1..]));
    forged.set_jar(jar);
    assert_eq!(forged.session(&bff).await.status, 401);

    // A restarted instance (same store, same key) still knows the session.
    let port = bff.addr.port();
    bff.stop().await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap_or_else(|e| panic!("{e}"));
    let bff = spawn_bff(listener, settings_with(port, &idp.issuer, &vars, "")).await;
    assert_eq!(b.session(&bff).await.status, 200, "session survives a restart");

    // A new login replaces the session (new id; the old row is deleted) — even though the
    // IdP's redirect back is cross-site and so carries no SameSite=Strict session cookie.
    let before = b.jar();
    let start = b.get(&bff.url("/login?return_to=/")).await;
    let callback = b.idp_login(&start.location(), "ada").await;
    let mut cross_site = b.jar();
    cross_site.remove("__Host-bff");
    b.set_jar(cross_site);
    assert_eq!(b.get(&callback).await.status, 302);
    assert_ne!(cookie_value(&b.jar()), cookie_value(&before));
    assert_eq!(store.session_count().await, 1, "the previous session was deleted");
    let mut old_copy = Browser::new(&bff);
    old_copy.set_jar(before);
    assert_eq!(old_copy.session(&bff).await.status, 401, "the pre-login id no longer opens");

    // Logout deletes the row: a copy of the cookie taken before logout is dead too.
    let copy = b.jar();
    let out = b.fetch(Method::POST, &bff.url("/logout"), None).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.json()["logout_url"].as_str().is_some_and(|u| u.contains("id_token_hint=")));
    assert_eq!(b.session(&bff).await.status, 401);
    let mut stolen = Browser::new(&bff);
    stolen.set_jar(copy);
    let r = stolen.session(&bff).await;
    assert_eq!(r.status, 401, "a stolen copy of the cookie does not outlive logout");
    assert!(r.set_cookies().iter().any(|c| c.starts_with("__Host-bff=;")), "the dead cookie is expired");
    assert_eq!(store.session_count().await, 0);
    assert_eq!(idp.events().await["revocations"], json!(1), "refresh token revoked at logout");
    // GET /logout?sid= with the session's own logout token works the same way.
    b.login(&bff, "ada", "/").await;
    let logout_url = b.session(&bff).await.json()["bff_logout_url"].as_str().unwrap_or_default().to_owned();
    let r = b.get(&bff.url(&logout_url)).await;
    assert_eq!(r.status, 302);
    assert_eq!(b.session(&bff).await.status, 401);
    store.drop_all().await;
}

#[tokio::test]
async fn sqlite_store_core_flow() {
    core_flow(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres_store_core_flow() {
    core_flow(Kind::Postgres).await;
}

#[tokio::test]
async fn redis_store_core_flow() {
    core_flow(Kind::Redis).await;
}

/// End the user's session at the IdP (RP-initiated logout confirmed at the IdP, from the
/// browser that holds the IdP session): the IdP then calls `/backchannel-logout` itself.
pub(crate) async fn logout_at_idp(b: &mut Browser, idp: &Idp) {
    let r = b.get(&format!("{}/signoff", idp.issuer)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let action = r.body.split("action=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default().to_owned();
    let xsrf = r.body.split("name=\"xsrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or_default();
    let form = format!("xsrf={xsrf}&logout=yes");
    let r =
        b.request(Method::POST, &action, &[("content-type", "application/x-www-form-urlencoded")], Some(form)).await;
    assert!((300..400).contains(&r.status), "IdP logout confirm answered {}: {}", r.status, r.body);
}

async fn wait_for_status(b: &mut Browser, bff: &Bff, want: u16) -> u16 {
    let mut last = 0;
    for _ in 0..100 {
        last = b.clone().session(bff).await.status;
        if last == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// `store`: the store kind, or "cookie" with `url` as the revocation list.
pub(crate) async fn backchannel_flow(store: TestStore, mode: &str) {
    let url = store.url();
    let vars = store.vars(mode, &url);
    let (idp, bff) = stack_store(json!({}), &vars, "", true).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "bob", "/").await;
    // A second BFF session of the same IdP session (another tab that logged in again).
    let mut other = b.clone();
    other.set_jar(Default::default());
    other.login(&bff, "bob", "/").await;
    // Someone else's session is not touched.
    let mut carol = Browser::new(&bff);
    carol.login(&bff, "carol", "/").await;
    assert_eq!(b.session(&bff).await.status, 200);
    assert_eq!(other.session(&bff).await.status, 200);

    // A new login must be strictly after the logout token's iat (whole seconds).
    logout_at_idp(&mut b, &idp).await;
    assert_eq!(wait_for_status(&mut b, &bff, 401).await, 401, "bob's session ends after the IdP's back-channel call");
    assert_eq!(wait_for_status(&mut other, &bff, 401).await, 401, "every session of that sid ends");
    assert_eq!(carol.session(&bff).await.status, 200, "other users keep their sessions");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Logging in again afterwards works (the IdP asks for credentials again; any name works).
    b.jars.remove(&b.bff_origin.clone());
    let r = b.login(&bff, "bob", "/").await;
    assert_eq!(r.status, 302, "{}", r.body);
    let s = b.session(&bff).await;
    assert_eq!((s.status, s.json()["sub"].clone()), (200, json!("bob")), "a login after the logout is not locked out");
    store.drop_all().await;
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_sqlite_store() {
    if let Some(s) = TestStore::new(Kind::Sqlite, "bcl").await {
        backchannel_flow(s, "sqlite").await;
    }
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_postgres_store() {
    if let Some(s) = TestStore::new(Kind::Postgres, "bcl").await {
        backchannel_flow(s, "postgres").await;
    }
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_redis_store() {
    if let Some(s) = TestStore::new(Kind::Redis, "bcl").await {
        backchannel_flow(s, "redis").await;
    }
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_cookie_mode_revocation_list_sqlite() {
    if let Some(s) = TestStore::new(Kind::Sqlite, "bclc").await {
        backchannel_flow(s, "cookie").await;
    }
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_cookie_mode_revocation_list_postgres() {
    if let Some(s) = TestStore::new(Kind::Postgres, "bclc").await {
        backchannel_flow(s, "cookie").await;
    }
}

#[tokio::test]
async fn backchannel_logout_from_the_idp_cookie_mode_revocation_list_redis() {
    if let Some(s) = TestStore::new(Kind::Redis, "bclc").await {
        backchannel_flow(s, "cookie").await;
    }
}

async fn sign(idp: &Idp, header: Value, payload: Value) -> String {
    idp.sign(header, payload).await
}

async fn post_logout_token(bff: &Bff, body: String) -> Resp {
    let mut b = Browser::new(bff);
    // No X-CSRF, a foreign Origin: the IdP is not a browser, and neither check applies here.
    b.request(
        Method::POST,
        &bff.url("/backchannel-logout"),
        &[("content-type", "application/x-www-form-urlencoded"), ("origin", "https://idp.example")],
        Some(body),
    )
    .await
}

fn form(token: &str) -> String {
    format!("logout_token={}", urlencode(token))
}

#[tokio::test]
async fn hostile_logout_tokens_are_refused_with_400() {
    let Some(store) = TestStore::new(Kind::Sqlite, "hostile").await else { return };
    let url = store.url();
    let (idp, bff) = stack_store(json!({}), &store_vars("sqlite", &url), "", false).await;
    let now = oidc_bff::clock::now();
    let event = json!({ "http://schemas.openid.net/event/backchannel-logout": {} });
    let good = |jti: &str| json!({ "iss": idp.issuer, "aud": "bff-basic", "iat": now, "jti": jti, "sub": "mallory", "events": event });
    let with = |jti: &str, k: &str, v: Value| {
        let mut p = good(jti);
        p[k] = v;
        p
    };
    let without = |jti: &str, k: &str| {
        let mut p = good(jti);
        p.as_object_mut().map(|o| o.remove(k));
        p
    };
    let typ = json!({ "typ": "logout+jwt" });
    let valid = sign(&idp, typ.clone(), good("j-ok")).await;
    let r = post_logout_token(&bff, form(&valid)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), "no-store");

    let mut tampered = valid.clone();
    let last = tampered.pop().unwrap_or('A');
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let cases: Vec<(&str, String)> = vec![
        ("replayed jti", valid.clone()),
        ("bad signature", tampered),
        ("wrong aud", sign(&idp, typ.clone(), with("j1", "aud", json!("someone-else"))).await),
        ("wrong iss", sign(&idp, typ.clone(), with("j2", "iss", json!("https://evil.example"))).await),
        ("nonce present", sign(&idp, typ.clone(), with("j3", "nonce", json!("n"))).await),
        ("events missing", sign(&idp, typ.clone(), without("j4", "events")).await),
        ("events without the member", sign(&idp, typ.clone(), with("j5", "events", json!({"x": {}}))).await),
        ("neither sid nor sub", sign(&idp, typ.clone(), without("j6", "sub")).await),
        ("jti missing", sign(&idp, typ.clone(), without("j7", "jti")).await),
        ("iat ten minutes old", sign(&idp, typ.clone(), with("j8", "iat", json!(now - 600))).await),
        ("iat in the future", sign(&idp, typ.clone(), with("j9", "iat", json!(now + 600))).await),
        ("expired", sign(&idp, typ.clone(), with("j10", "exp", json!(now - 600))).await),
        ("typ of an ID token", sign(&idp, json!({"typ": "JWT"}), good("j11")).await),
        ("alg none", {
            let mut parts = valid.split('.');
            let _ = parts.next();
            let payload = parts.next().unwrap_or_default();
            format!("eyJhbGciOiJub25lIn0.{payload}.")
        }),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (what, token) in cases {
        let r = post_logout_token(&bff, form(&token)).await;
        assert_eq!((r.status, r.json()["error"].clone()), (400, json!("invalid_logout_token")), "{what}: {}", r.body);
    }
    // A token refused for another reason did not use up its jti.
    let r = post_logout_token(&bff, form(&sign(&idp, typ.clone(), good("j11")).await)).await;
    assert_eq!(r.status, 200, "a jti is spent only by a valid token: {}", r.body);
    // Malformed bodies.
    let r = post_logout_token(&bff, "token=abc".into()).await;
    assert_eq!(r.status, 400);
    let r = post_logout_token(&bff, form(&"a".repeat(17 * 1024))).await;
    assert_eq!((r.status, r.json()["error"].clone()), (413, json!("payload_too_large")));
    store.drop_all().await;
}

#[tokio::test]
async fn backchannel_logout_in_cookie_mode_without_a_store_is_501() {
    let (_idp, bff) = stack(json!({}), &[]).await;
    let r = post_logout_token(&bff, form("x.y.z")).await;
    assert_eq!((r.status, r.json()["error"].clone()), (501, json!("backchannel_unavailable")), "{}", r.body);
    assert_eq!(r.header("cache-control"), "no-store");
}

/// Two instances, one store, 10 + 10 concurrent requests of one session after its access token
/// expired, at an IdP that rotates refresh tokens and revokes on reuse: one grant, 20 answers.
/// `mode`: the store kind (server-side sessions), or "cookie" (the store holds only the shared
/// refresh cache and lock).
pub(crate) async fn two_instances_one_refresh(kind: Kind, mode: &str) {
    two_instances_one_refresh_with_keys(kind, mode, [KEY_A, KEY_A]).await;
}

/// As [`two_instances_one_refresh`], the instances configured with `keys` (comma-separated
/// `[session] keys`, the first seals): a key rotation caught mid-rollout.
async fn two_instances_one_refresh_with_keys(kind: Kind, mode: &str, keys: [&str; 2]) {
    let Some(store) = TestStore::new(kind, "pair").await else { return };
    let url = store.url();
    let with_keys = |k| {
        let mut v = store.vars(mode, &url);
        v.push(("BFF_SESSION__KEYS", k));
        v
    };
    let up = upstream::start().await;
    let routes = format!("[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\n", up.url());
    let short = json!({ "accessTokenTtl": 4 });
    let (idp, a) = stack_store(short, &with_keys(keys[0]), &routes, false).await;
    let listener = reserve().await;
    let port_b = listener.local_addr().map(|x| x.port()).unwrap_or_default();
    let b_inst = spawn_bff(listener, settings_with(port_b, &idp.issuer, &with_keys(keys[1]), &routes)).await;
    let mut browser = Browser::new(&a);
    browser.login(&a, "alice", "/").await;
    let jar = browser.jar();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut bearers = std::collections::BTreeSet::new();
    let mut latest = None;
    for r in fan_out(&[&a, &b_inst], &jar, "/api/pair", 20).await {
        assert_eq!(r.status, 200, "{}", r.body);
        bearers.insert(r.json()["headers"]["authorization"].as_str().unwrap_or_default().to_owned());
        latest = Some(r);
    }
    assert_eq!(idp.grants("refresh_token").await, 1, "the IdP saw exactly one refresh grant");
    assert_eq!(bearers.len(), 1, "all 20 requests carried the one refreshed access token");
    // The session is usable afterwards from both instances (server-side: the rotated token was
    // stored; cookie mode: the refreshed cookie every response carried).
    let mut after = Browser::new(&a);
    after.set_jar(jar.clone());
    if let Some(r) = &latest {
        after.absorb_set_cookies(r);
    }
    for inst in [&a, &b_inst] {
        let mut c = Browser::new_for_origin(&inst.url(""));
        c.set_jar(after.jar());
        assert_eq!(c.session(inst).await.status, 200);
    }
    store.drop_all().await;
}

/// SPEC §6.2: two instances sharing `[session] url` make one token exchange for a session and
/// route, whichever of them the requests reach.
async fn two_instances_one_exchange(kind: Kind, mode: &str) {
    let Some(pair) =
        ExchangePair::start(kind, mode, "resource = \"https://pay.example.test/\"\nscopes = [\"read\"]").await
    else {
        return;
    };
    let mut bearers = std::collections::BTreeSet::new();
    for r in fan_out(&[&pair.a, &pair.b], &pair.jar, "/pay/x", 20).await {
        assert_eq!(r.status, 200, "{}", r.body);
        bearers.insert(r.json()["headers"]["authorization"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(pair.idp.grants("token_exchange").await, 1, "one exchange served both instances");
    assert_eq!(bearers.len(), 1);
    pair.store.drop_all().await;
}

/// Two instances sharing a store, with a `token = "exchange"` route `/pay` (`route` adds its
/// keys), and a logged-in cookie jar.
struct ExchangePair {
    store: TestStore,
    idp: Idp,
    a: Bff,
    b: Bff,
    jar: std::collections::BTreeMap<String, String>,
    _up: upstream::Running,
}

impl ExchangePair {
    async fn start(kind: Kind, mode: &str, route: &str) -> Option<Self> {
        let store = TestStore::new(kind, "exchange").await?;
        let url = store.url();
        let mut vars = store_vars(mode, &url);
        vars.push(("BFF_OIDC__SCOPES", "openid,profile,email,offline_access,read"));
        let up = upstream::start().await;
        let routes =
            format!("[[routes]]\nprefix = \"/pay\"\nupstream = \"{}\"\ntoken = \"exchange\"\n{route}\n", up.url());
        let (idp, a) = stack_store(json!({}), &vars, &routes, false).await;
        let listener = reserve().await;
        let port_b = listener.local_addr().map(|x| x.port()).unwrap_or_default();
        let b = spawn_bff(listener, settings_with(port_b, &idp.issuer, &vars, &routes)).await;
        let mut browser = Browser::new(&a);
        browser.login(&a, "alice", "/").await;
        let jar = browser.jar();
        Some(Self { store, idp, a, b, jar, _up: up })
    }
}

/// A replica whose exchange failed (IdP down) releases the exchange lock: the other replica's
/// waiting request takes over and answers 502 at once, instead of waiting out the lock (~39 s)
/// and answering 504.
#[tokio::test]
async fn a_failed_exchange_never_holds_another_replica_up() {
    let Some(pair) = ExchangePair::start(Kind::Redis, "redis", "audience = \"pay\"").await else { return };
    pair.idp.control("outage").await;
    let started = std::time::Instant::now();
    for r in fan_out(&[&pair.a, &pair.b], &pair.jar, "/pay/x", 6).await {
        assert_eq!((r.status, r.json()["error"].as_str()), (502, Some("idp_unavailable")), "{}", r.body);
    }
    assert!(started.elapsed() < Duration::from_secs(15), "a replica waited out the lock: {:?}", started.elapsed());
    pair.idp.control_method(Method::DELETE, "outage").await;
    let r = fan_out(&[&pair.b], &pair.jar, "/pay/x", 1).await;
    assert_eq!(r[0].status, 200, "{}", r[0].body);
    pair.store.drop_all().await;
}

#[tokio::test]
async fn two_instances_sharing_redis_make_one_token_exchange() {
    two_instances_one_exchange(Kind::Redis, "redis").await;
}

#[tokio::test]
async fn two_instances_sharing_postgres_make_one_token_exchange() {
    two_instances_one_exchange(Kind::Postgres, "postgres").await;
}

#[tokio::test]
async fn two_cookie_mode_instances_sharing_a_redis_cache_make_one_token_exchange() {
    two_instances_one_exchange(Kind::Redis, "cookie").await;
}

#[tokio::test]
async fn two_instances_sharing_postgres_spend_one_refresh_token() {
    two_instances_one_refresh(Kind::Postgres, "postgres").await;
}

#[tokio::test]
async fn two_instances_sharing_redis_spend_one_refresh_token() {
    two_instances_one_refresh(Kind::Redis, "redis").await;
}

#[tokio::test]
async fn two_cookie_mode_instances_sharing_a_redis_refresh_cache_spend_one_refresh_token() {
    two_instances_one_refresh(Kind::Redis, "cookie").await;
}

/// Key rotation is two-phase (SPEC §4): first the new key is added second everywhere, then moved
/// first. Replicas caught between steps of either phase share refresh coordination: its ids and
/// locks come from the refresh token, never from the key that seals.
#[tokio::test]
async fn key_rotation_rollout_in_either_phase_never_splits_refresh_coordination_redis() {
    let (phase1_old, phase1_new) = (KEY_A.to_owned(), format!("{KEY_A},{KEY_B}"));
    let (phase2_old, phase2_new) = (format!("{KEY_A},{KEY_B}"), format!("{KEY_B},{KEY_A}"));
    two_instances_one_refresh_with_keys(Kind::Redis, "cookie", [&phase1_old, &phase1_new]).await;
    two_instances_one_refresh_with_keys(Kind::Redis, "cookie", [&phase2_old, &phase2_new]).await;
}

#[tokio::test]
async fn key_rotation_rollout_in_either_phase_never_splits_refresh_coordination_postgres() {
    let (phase2_old, phase2_new) = (format!("{KEY_A},{KEY_B}"), format!("{KEY_B},{KEY_A}"));
    two_instances_one_refresh_with_keys(Kind::Postgres, "postgres", [&phase2_old, &phase2_new]).await;
    two_instances_one_refresh_with_keys(Kind::Postgres, "cookie", [&phase2_old, &phase2_new]).await;
}

#[tokio::test]
async fn two_cookie_mode_instances_sharing_a_postgres_refresh_cache_spend_one_refresh_token() {
    two_instances_one_refresh(Kind::Postgres, "cookie").await;
}

/// Crafted logout tokens (signed by the real IdP's key) against sessions whose ID tokens carry
/// no `sid` (the default clients here have no back-channel logout URI).
pub(crate) async fn crafted_logouts(kind: Kind, mode: &str) {
    let Some(store) = TestStore::new(kind, "crafted").await else { return };
    let url = store.url();
    let (idp, bff) = stack_store(json!({}), &store.vars(mode, &url), "", false).await;
    let event = json!({ "http://schemas.openid.net/event/backchannel-logout": {} });
    let token = |sub: &str, sid: Option<&str>, jti: &str| {
        let mut p = json!({ "iss": idp.issuer, "aud": "bff-basic", "iat": oidc_bff::clock::now(), "jti": jti, "sub": sub, "events": event });
        if let Some(sid) = sid {
            p["sid"] = json!(sid);
        }
        p
    };
    // sub only: that user's sessions created at or before iat end; a later login does not.
    let mut sam = Browser::new(&bff);
    sam.login(&bff, "sam", "/").await;
    let mut tom = Browser::new(&bff);
    tom.login(&bff, "tom", "/").await;
    assert!(open_session(&bff, &sam.jar()).is_none_or(|s| s.sid.is_none()), "these ID tokens carry no sid");
    let r = post_logout_token(&bff, form(&sign(&idp, json!({}), token("sam", None, "c1")).await)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for_status(&mut sam, &bff, 401).await, 401, "sam's session ended");
    assert_eq!(tom.session(&bff).await.status, 200, "tom's did not");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sam.jars.remove(&sam.bff_origin.clone());
    sam.login(&bff, "sam", "/").await;
    assert_eq!(sam.session(&bff).await.status, 200, "a login after iat is not locked out");
    // sid and sub, for sessions that carry no sid: that user's sessions before iat end.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r =
        post_logout_token(&bff, form(&sign(&idp, json!({}), token("tom", Some("an-idp-session"), "c2")).await)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for_status(&mut tom, &bff, 401).await, 401, "tom's sid-less session ended");
    assert_eq!(sam.session(&bff).await.status, 200);
    store.drop_all().await;
}

/// An IdP that keeps a `sid` after a back-channel logout (one application logged out, the SSO
/// session continues): a session created after we received the logout is not ended by it.
async fn sid_logout_spares_later_sessions(mode: &str) {
    let Some(store) = TestStore::new(Kind::Sqlite, "sidreuse").await else { return };
    let url = store.url();
    let (idp, bff) = stack_store(json!({}), &store_vars(mode, &url), "", true).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "val", "/").await;
    // The session's sid, from the ID token's claims as /session shows them.
    let s = b.session(&bff).await.json();
    let sid = s["claims"]["sid"].as_str().unwrap_or_default().to_owned();
    assert!(!sid.is_empty(), "ID tokens carry a sid for a back-channel client: {s}");
    let payload = json!({
        "iss": idp.issuer, "aud": "bff-basic", "iat": oidc_bff::clock::now(), "jti": "reuse-1", "sid": sid,
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let r = post_logout_token(&bff, form(&sign(&idp, json!({}), payload).await)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for_status(&mut b, &bff, 401).await, 401, "the sid's session ended");
    // The IdP session (and its sid) lives on: a login after the receipt margin reuses the sid.
    tokio::time::sleep(Duration::from_secs(oidc_bff::store::SID_RECEIPT_MARGIN_SECS as u64 + 1)).await;
    b.jars.remove(&b.bff_origin.clone());
    b.login(&bff, "val", "/").await;
    let s = b.session(&bff).await;
    assert_eq!(s.status, 200, "a later session of a reused sid is not ended: {}", s.body);
    assert_eq!(s.json()["claims"]["sid"], json!(sid), "same IdP session");
    store.drop_all().await;
}

#[tokio::test]
async fn sid_logout_spares_later_sessions_sqlite_store() {
    sid_logout_spares_later_sessions("sqlite").await;
}

#[tokio::test]
async fn sid_logout_spares_later_sessions_cookie_mode() {
    sid_logout_spares_later_sessions("cookie").await;
}

#[tokio::test]
async fn crafted_logout_tokens_end_the_right_sessions_sqlite_store() {
    crafted_logouts(Kind::Sqlite, "sqlite").await;
}

#[tokio::test]
async fn crafted_logout_tokens_end_the_right_sessions_cookie_mode() {
    crafted_logouts(Kind::Sqlite, "cookie").await;
}

#[tokio::test]
async fn crafted_logout_tokens_end_the_right_sessions_redis_store() {
    crafted_logouts(Kind::Redis, "redis").await;
}

#[tokio::test]
async fn redis_index_sets_live_as_long_as_the_session_can() {
    let Some(store) = TestStore::new(Kind::Redis, "ttl").await else { return };
    let url = store.url();
    let vars =
        [("BFF_SESSION__STORE", "redis"), ("BFF_SESSION__URL", url.as_str()), ("BFF_SESSION__IDLE_TIMEOUT_SECS", "60")];
    let (_idp, bff) = stack_store(json!({}), &vars, "", false).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "uma", "/").await;
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap_or_else(|e| panic!("{e}"));
    let mut c = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("{e}"));
    // The set is named by the id's hash (SPEC §9).
    let set = format!("{}hsub:{}", store.name, oidc_bff::secret::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"uma")));
    let ttl: i64 = redis::cmd("TTL").arg(&set).query_async(&mut c).await.unwrap_or(-3);
    // The session's own key slides with activity; its index entry must outlive the idle
    // timeout, or a back-channel logout after an hour of activity would find nothing.
    assert!(ttl > 60 * 60, "index set TTL {ttl}s must reach the absolute expiry (8 h)");
    assert_eq!(b.session(&bff).await.status, 200);
    b.fetch(Method::POST, &bff.url("/logout"), None).await;
    let members: i64 = redis::cmd("SCARD").arg(&set).query_async(&mut c).await.unwrap_or(-1);
    assert_eq!(members, 0, "a deleted session leaves its index sets");
    store.drop_all().await;
}

/// The store stops mid-run: 503 `session_store_unavailable` and a failing `/readyz` within
/// seconds, never a 500 or a hang; it comes back and service resumes without a restart.
async fn store_outage(kind: Kind, mode: &str) {
    let Some(store) = TestStore::new(kind, "outage").await else { return };
    let relay = Relay::start(store.port).await;
    let url = store.url_via(relay.port);
    let (_idp, bff) = stack_store(json!({}), &store_vars(mode, &url), "", false).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "dora", "/").await;
    assert_eq!(b.session(&bff).await.status, 200);
    let probe = reqwest::Client::new();
    relay.stop();
    let started = std::time::Instant::now();
    let mut seen = (0, Value::Null);
    while started.elapsed() < Duration::from_secs(15) {
        let r = b.clone().session(&bff).await;
        seen = (r.status, r.json()["error"].clone());
        if r.status != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, (503, json!("session_store_unavailable")), "store down → 503");
    assert!(started.elapsed() < Duration::from_secs(12), "within seconds: {:?}", started.elapsed());
    let ready_status =
        || async { probe.get(bff.url("/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) };
    let mut ready = 0;
    for _ in 0..250 {
        ready = ready_status().await;
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 503, "/readyz fails while the store is down");
    // The maintenance task's view: two missed rounds (10 s) at most, plus scheduling.
    assert!(started.elapsed() < Duration::from_secs(20), "within seconds: {:?}", started.elapsed());
    // Logging in needs the store too: a clear 503 page, not a 500.
    relay.restart().await;
    let mut status = 0;
    for _ in 0..150 {
        status = b.clone().session(&bff).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "service resumes once the store is back, without a restart");
    for _ in 0..100 {
        ready = ready_status().await;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200, "/readyz recovers with the store");
    drop(relay);
    store.drop_all().await;
}

#[tokio::test]
async fn postgres_stopped_mid_run_is_503_then_recovers() {
    store_outage(Kind::Postgres, "postgres").await;
}

#[tokio::test]
async fn redis_stopped_mid_run_is_503_then_recovers() {
    store_outage(Kind::Redis, "redis").await;
}

#[tokio::test]
async fn cookie_mode_revocation_store_stopped_fails_closed_then_recovers() {
    store_outage(Kind::Redis, "cookie").await;
}

fn migrate_config(url: &str) -> String {
    format!(
        r#"
[server]
public_url = "https://app.example.com"
[oidc]
issuer = "https://idp.example.com"
client_id = "c"
client_secret = "s"
[session]
store = "{}"
url = "{url}"
keys = ["{KEY_A}"]
"#,
        if url.starts_with("sqlite") { "sqlite" } else { "postgres" }
    )
}

async fn migrate_twice(kind: Kind) {
    let Some(store) = TestStore::new(kind, "migrate").await else { return };
    let dir = std::env::temp_dir().join(unique("migrate_cfg"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let config = dir.join("bff.toml");
    std::fs::write(&config, migrate_config(&store.url())).unwrap_or_else(|e| panic!("{e}"));
    for round in 1..=2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oidc-bff"))
            .args(["migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let count = |sql: &'static str| {
        let url = store.url();
        async move {
            match kind {
                Kind::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
                    sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap_or(-1)
                }
                _ => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
                    sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap_or(-1)
                }
            }
        }
    };
    assert_eq!(count("SELECT COUNT(*) FROM _sqlx_migrations").await, 1, "one migration, applied once");
    assert_eq!(count("SELECT COUNT(*) FROM bff_sessions").await, 0);
    // serve on the migrated database: start-up migration is a no-op.
    let (_idp, bff) = stack_store(json!({}), &store_vars(store.store_name(), &store.url()), "", false).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "eve", "/").await;
    assert_eq!(b.session(&bff).await.status, 200);
    assert_eq!(count("SELECT COUNT(*) FROM _sqlx_migrations").await, 1);
    let _ = std::fs::remove_dir_all(&dir);
    store.drop_all().await;
}

#[tokio::test]
async fn migrate_is_idempotent_sqlite() {
    migrate_twice(Kind::Sqlite).await;
}

#[tokio::test]
async fn migrate_is_idempotent_postgres() {
    migrate_twice(Kind::Postgres).await;
}

#[tokio::test]
async fn check_config_validates_store_settings() {
    let bad = [
        ("store = \"postgres\"", "session.url: required with store = \"postgres\""),
        ("store = \"redis\"\nurl = \"postgres://x/y\"", "session.url: must be a redis:// or rediss:// URL"),
        ("store = \"cookie\"\nurl = \"mysql://x/y\"", "session.url: must be a sqlite://"),
        ("store = \"memcached\"", "session.store: must be cookie, sqlite, postgres or redis"),
    ];
    for (session, want) in bad {
        let toml = format!(
            "[server]\npublic_url = \"https://a.example\"\n[oidc]\nissuer = \"https://i.example\"\nclient_id = \"c\"\nclient_secret = \"s\"\n[session]\nkeys = [\"{KEY_A}\"]\n{session}\n"
        );
        let err = oidc_bff::settings::Settings::from_toml_str(&toml, Default::default())
            .err()
            .map(|e| e.0.join("\n"))
            .unwrap_or_default();
        assert!(err.contains(want), "{session}: {err}");
    }
    // A password in the URL never appears in a message.
    let toml = format!(
        "[server]\npublic_url = \"https://a.example\"\n[oidc]\nissuer = \"https://i.example\"\nclient_id = \"c\"\nclient_secret = \"s\"\n[session]\nkeys = [\"{KEY_A}\"]\nstore = \"redis\"\nurl = \"redis://:hunter2@[::1\"\n"
    );
    let err = oidc_bff::settings::Settings::from_toml_str(&toml, Default::default())
        .err()
        .map(|e| e.0.join("\n"))
        .unwrap_or_default();
    assert!(err.contains("session.url") && !err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn a_login_state_completed_on_one_instance_is_refused_on_another() {
    completed_state_replay(Kind::Sqlite).await;
}

pub(crate) async fn completed_state_replay(kind: Kind) {
    let Some(store) = TestStore::new(kind, "state").await else { return };
    let url = store.url();
    let vars = store.vars(store.store_name(), &url);
    let (idp, a) = stack_store(json!({}), &vars, "", false).await;
    let listener = reserve().await;
    let port_b = listener.local_addr().map(|x| x.port()).unwrap_or_default();
    let b_inst = spawn_bff(listener, settings_with(port_b, &idp.issuer, &vars, "")).await;
    let mut browser = Browser::new(&a);
    let start = browser.get(&a.url("/login?return_to=/")).await;
    let callback = browser.idp_login(&start.location(), "frank").await;
    let before = browser.jar();
    assert_eq!(browser.get(&callback).await.status, 302);
    assert_eq!(idp.grants("authorization_code").await, 1);
    // The transaction cookie copied before completion, replayed at the other replica.
    let mut replay = Browser::new(&b_inst);
    replay.set_jar(before);
    let r = replay.get(&callback.replace(&a.url(""), &b_inst.url(""))).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("invalid_state"), "{}", r.body);
    assert_eq!(idp.grants("authorization_code").await, 1, "the replay never reached the IdP");
    store.drop_all().await;
}

/// A `sub`-only logout token from an IdP whose clock is behind ours: `iat` is earlier than the
/// session's creation on our clock, yet the logout happened after the login. Sessions created
/// up to `iat + clock_skew_secs` (never later than our receipt) end; a login after the
/// logout's receipt is not locked out.
async fn sub_only_logout_behind_our_clock(kind: Kind, mode: &str) {
    let Some(store) = TestStore::new(kind, "subskew").await else { return };
    let url = store.url();
    let (idp, bff) = stack_store(json!({}), &store_vars(mode, &url), "", false).await;
    let mut b = Browser::new(&bff);
    b.login(&bff, "skew", "/").await;
    assert_eq!(b.session(&bff).await.status, 200);
    let behind = oidc_bff::clock::now() - 30;
    let payload = json!({
        "iss": idp.issuer, "aud": "bff-basic", "iat": behind, "jti": "skew-1", "sub": "skew",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    let r = post_logout_token(&bff, form(&sign(&idp, json!({}), payload).await)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_for_status(&mut b, &bff, 401).await, 401, "the session survived a logout stamped by a slow clock");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    b.jars.remove(&b.bff_origin.clone());
    b.login(&bff, "skew", "/").await;
    assert_eq!(b.session(&bff).await.status, 200, "a login after the logout's receipt is not locked out");
    store.drop_all().await;
}

#[tokio::test]
async fn a_sub_only_logout_whose_iat_is_behind_our_clock_still_ends_the_session_sqlite_store() {
    sub_only_logout_behind_our_clock(Kind::Sqlite, "sqlite").await;
}

#[tokio::test]
async fn a_sub_only_logout_whose_iat_is_behind_our_clock_still_ends_the_session_cookie_mode() {
    sub_only_logout_behind_our_clock(Kind::Sqlite, "cookie").await;
}

/// The store API on `store` (one Redis node), and a connection of the test's own beside it.
async fn direct_redis(store: &TestStore) -> (oidc_bff::store::Store, redis::aio::MultiplexedConnection) {
    let url = oidc_bff::settings::StoreUrl {
        backend: oidc_bff::settings::StoreKind::Redis,
        url: oidc_bff::secret::Secret::new(store.url()),
        redis_mode: oidc_bff::settings::RedisMode::Single,
    };
    let s = oidc_bff::store::Store::open(&url).unwrap_or_else(|e| panic!("{e}"));
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap_or_else(|e| panic!("{e}"));
    (s, client.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("{e}")))
}

/// Sessions written by a build that named Redis index sets by the raw ids (before SPEC §9's
/// hashed names) are still found by a back-channel logout and cleaned by a delete, and a jti
/// such a build spent is still spent.
#[tokio::test]
async fn redis_sessions_indexed_by_an_older_build_are_still_found() {
    let Some(store) = TestStore::new(Kind::Redis, "legacy").await else { return };
    let (s, mut c) = direct_redis(&store).await;
    let p = &store.name;
    let now = oidc_bff::clock::now();
    // What the older build wrote: the session hash without isub/isid, sets named by raw ids.
    for (id, sid) in [("aa", "sid-1"), ("bb", "sid-2")] {
        let _: () = redis::cmd("HSET")
            .arg(format!("{p}s:{id}"))
            .arg(&["sub", "old", "sid", sid, "created", &(now - 10).to_string(), "seen", "0", "v", "1", "data", "x"])
            .query_async(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _: () = redis::cmd("SADD").arg(format!("{p}sub:old")).arg(id).query_async(&mut c).await.unwrap_or(());
        let _: () = redis::cmd("SADD").arg(format!("{p}sid:{sid}")).arg(id).query_async(&mut c).await.unwrap_or(());
    }
    let _: () = redis::cmd("SET").arg(format!("{p}used:jti:old")).arg(1).query_async(&mut c).await.unwrap_or(());
    let who = oidc_bff::store::Subject::Sid { sid: "sid-1", sub: None, received: now };
    assert_eq!(s.delete_sessions_of(who, now).await.unwrap_or(0), 1);
    let left: i64 = redis::cmd("EXISTS").arg(format!("{p}s:aa")).query_async(&mut c).await.unwrap_or(-1);
    assert_eq!(left, 0);
    let mut key = [0u8; 32];
    key[0] = 0xbb;
    // A delete of a session whose hash has no isub/isid removes it from the raw-named sets.
    let _: () = redis::cmd("RENAME")
        .arg(format!("{p}s:bb"))
        .arg(format!("{p}s:{}", oidc_bff::secret::hex(&key)))
        .query_async(&mut c)
        .await
        .unwrap_or(());
    let _: () = redis::cmd("SADD")
        .arg(format!("{p}sub:old"))
        .arg(oidc_bff::secret::hex(&key))
        .query_async(&mut c)
        .await
        .unwrap_or(());
    s.delete_session(&key).await.unwrap_or_else(|e| panic!("{e}"));
    let left: Vec<String> =
        redis::cmd("SMEMBERS").arg(format!("{p}sub:old")).query_async(&mut c).await.unwrap_or_default();
    assert!(!left.contains(&oidc_bff::secret::hex(&key)), "{left:?}");
    assert!(s.is_used("jti:old", now).await.unwrap_or(false), "a jti an older build spent stays spent");
    let _: () = redis::cmd("SET").arg(format!("{p}used:state:old")).arg(1).query_async(&mut c).await.unwrap_or(());
    assert!(!s.first_use("state:old", now + 60).await.unwrap_or(true), "a state an older build spent is refused");
    assert!(s.first_use("state:new", now + 60).await.unwrap_or(false));
    assert!(!s.first_use("state:new", now + 60).await.unwrap_or(true), "and spent once");
    assert!(!s.is_used("jti:new", now).await.unwrap_or(true));
    store.drop_all().await;
}

/// SPEC §9's order (index entry first, then the session): a logout walking an index meets an
/// entry whose session is not written yet. It must leave that young entry in place (or the
/// session, written a moment later, would escape every later logout) and clear old dead ones.
#[tokio::test]
async fn a_logout_walk_keeps_the_index_entry_of_a_session_still_being_written() {
    let Some(store) = TestStore::new(Kind::Redis, "young").await else { return };
    let (s, mut c) = direct_redis(&store).await;
    let now = oidc_bff::clock::now();
    let set = format!("{}hsub:{}", store.name, oidc_bff::secret::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"pat")));
    let (young, old) = (format!("{}:{now}", "ab".repeat(32)), format!("{}:{}", "cd".repeat(32), now - 600));
    let _: () = redis::cmd("SADD").arg(&set).arg(&young).arg(&old).query_async(&mut c).await.unwrap_or(());
    assert_eq!(s.delete_sessions_of(oidc_bff::store::Subject::Sub("pat"), now).await.unwrap_or(99), 0);
    let left: Vec<String> = redis::cmd("SMEMBERS").arg(&set).query_async(&mut c).await.unwrap_or_default();
    assert_eq!(left, [young], "the young entry stays, the old dead one goes");
    store.drop_all().await;
}
