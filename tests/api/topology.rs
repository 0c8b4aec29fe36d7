//! Redis topologies started by the tests from the machine's `redis-server` and `redis-cli` on
//! loopback (SPEC §9): a 3-primary + 3-replica cluster, and a primary + replica watched by 3
//! sentinels. Each test gets its own, in a temporary directory, killed when dropped. Where
//! the binaries are absent the test prints why and skips.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const MASTER: &str = "bffmaster";
/// With `acl`: the user oidc-bff logs in as (everywhere: primaries, replicas' links, sentinels);
/// the default user then needs a password nobody here uses, so nothing works unauthenticated.
const ACL_USER: &str = "bff";
const ACL_PASS: &str = "s3cret-acl";

struct Node {
    port: u16,
    child: Option<Child>,
}

pub(crate) struct Topology {
    nodes: Vec<Node>,
    sentinels: Vec<Node>,
    cluster: bool,
    acl: bool,
    dir: std::path::PathBuf,
}

fn have_binaries(label: &str) -> bool {
    let ok = |bin: &str| Command::new(bin).arg("--version").output().is_ok_and(|o| o.status.success());
    if ok("redis-server") && ok("redis-cli") {
        return true;
    }
    eprintln!("SKIPPED ({label}): redis-server and redis-cli are not installed");
    false
}

/// `n` ports free now (the kernel's choice, released at once).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"))).collect();
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).unwrap_or_default()).collect()
}

fn cli(acl: bool, port: u16, args: &[&str]) -> String {
    let auth: &[&str] = if acl { &["--user", ACL_USER, "--pass", ACL_PASS, "--no-auth-warning"] } else { &[] };
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(auth)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn info_field(info: &str, field: &str) -> String {
    info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).unwrap_or_default().trim().to_owned()
}

impl Topology {
    fn spawn(&self, port: u16, args: &[String]) -> Node {
        let log = std::fs::File::create(self.dir.join(format!("{port}.log"))).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(&self.dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}"));
        Node { port, child: Some(child) }
    }

    fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(self.acl, port, args)
    }

    fn server_args(&self, port: u16) -> Vec<String> {
        let mut args: Vec<String> =
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .map(String::from)
                .to_vec();
        if self.acl {
            let user = format!(">{ACL_PASS}");
            args.extend(["--user", ACL_USER, "on", &user, "~*", "&*", "+@all"].map(String::from));
            args.extend(
                ["--requirepass", "default-user-not-used", "--masteruser", ACL_USER, "--masterauth", ACL_PASS]
                    .map(String::from),
            );
        }
        args
    }

    fn new(cluster: bool, acl: bool, label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bff-redis-{label}-{}-{}", std::process::id(), free_ports(1)[0]));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        Self { nodes: vec![], sentinels: vec![], cluster, acl, dir }
    }

    /// Three primaries with a replica each, every slot covered, replicas in sync.
    pub(crate) fn cluster(label: &str, acl: bool) -> Option<Self> {
        if !have_binaries(label) {
            return None;
        }
        let mut t = Self::new(true, acl, label);
        let ports = free_ports(12);
        for (port, bus) in ports[..6].iter().zip(&ports[6..]) {
            let mut args = t.server_args(*port);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus.to_string(),
                ]
                .map(String::from),
            );
            let node = t.spawn(*port, &args);
            t.nodes.push(node);
        }
        for n in &t.nodes {
            wait_until("redis-server up", Duration::from_secs(10), || t.cli(n.port, &["PING"]).trim() == "PONG");
        }
        let addrs: Vec<String> = t.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let auth: &[&str] = if acl { &["--user", ACL_USER, "--pass", ACL_PASS, "--no-auth-warning"] } else { &[] };
        let out = Command::new("redis-cli")
            .args(auth)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        t.wait_healthy();
        Some(t)
    }

    /// Every node sees a healthy cluster and every replica is in sync.
    fn wait_healthy(&self) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_until("cluster_state:ok", Duration::from_secs(30), || {
                info_field(&self.cli(n.port, &["CLUSTER", "INFO"]), "cluster_state") == "ok"
            });
        }
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_until("replica in sync", Duration::from_secs(30), || {
                let info = self.cli(n.port, &["INFO", "replication"]);
                info_field(&info, "role") != "slave" || info_field(&info, "master_link_status") == "up"
            });
        }
    }

    /// A primary, its replica, and three sentinels agreeing on them (quorum 2, a primary is
    /// down after 1 s).
    pub(crate) fn sentinel(label: &str, acl: bool) -> Option<Self> {
        if !have_binaries(label) {
            return None;
        }
        let mut t = Self::new(false, acl, label);
        let ports = free_ports(5);
        let primary = t.spawn(ports[0], &t.server_args(ports[0]));
        t.nodes.push(primary);
        let mut args = t.server_args(ports[1]);
        args.extend(["--replicaof".to_owned(), "127.0.0.1".to_owned(), ports[0].to_string()]);
        let replica = t.spawn(ports[1], &args);
        t.nodes.push(replica);
        wait_until("replica in sync", Duration::from_secs(60), || {
            info_field(&t.cli(ports[1], &["INFO", "replication"]), "master_link_status") == "up"
        });
        for port in &ports[2..] {
            let conf = t.dir.join(format!("sentinel-{port}.conf"));
            let mut text = format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 5000\n\
                 sentinel parallel-syncs {MASTER} 1\n",
                ports[0]
            );
            if acl {
                // The sentinels log in to the data nodes and to each other as the same user,
                // and oidc-bff logs in to them with the credentials of its url.
                text.push_str(&format!(
                    "sentinel auth-user {MASTER} {ACL_USER}\nsentinel auth-pass {MASTER} {ACL_PASS}\n\
                     user default on >default-user-not-used ~* &* +@all\nuser {ACL_USER} on >{ACL_PASS} ~* &* +@all\n\
                     sentinel sentinel-user {ACL_USER}\nsentinel sentinel-pass {ACL_PASS}\n"
                ));
            }
            std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{e}"));
            let node = t.spawn(*port, &[conf.display().to_string(), "--sentinel".to_owned()]);
            t.sentinels.push(node);
        }
        for s in &t.sentinels {
            wait_until("sentinel knows the replica and its peers", Duration::from_secs(60), || {
                let m = t.cli(s.port, &["SENTINEL", "MASTER", MASTER]);
                let field = |name: &str| {
                    let lines: Vec<&str> = m.lines().collect();
                    lines.iter().position(|l| *l == name).and_then(|i| lines.get(i + 1)).map(|v| v.to_string())
                };
                field("num-slaves").as_deref() == Some("1") && field("num-other-sentinels").as_deref() == Some("2")
            });
        }
        Some(t)
    }

    /// The `[session] url` for this topology: the cluster's nodes, or the sentinels.
    pub(crate) fn url(&self, prefix: &str) -> String {
        let nodes = if self.cluster { &self.nodes } else { &self.sentinels };
        let hosts: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let auth = if self.acl { format!("{ACL_USER}:{ACL_PASS}@") } else { String::new() };
        format!("redis://{auth}{}/?prefix={prefix}", hosts.join(","))
    }

    pub(crate) fn vars(&self) -> Vec<(&'static str, &'static str)> {
        if self.cluster {
            vec![("BFF_SESSION__REDIS_MODE", "cluster")]
        } else {
            vec![("BFF_SESSION__REDIS_MODE", "sentinel"), ("BFF_SESSION__REDIS_SENTINEL_MASTER", MASTER)]
        }
    }

    /// Every key name matching `pattern` on any live node (replicas hold copies: deduplicated).
    pub(crate) fn keys(&self, pattern: &str) -> std::collections::BTreeSet<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .flat_map(|n| {
                self.cli(n.port, &["--scan", "--pattern", pattern]).lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// The port of the primary that serves `key` now.
    pub(crate) fn primary_for(&self, key: &str) -> u16 {
        let live = self.nodes.iter().find(|n| n.child.is_some()).map(|n| n.port).unwrap_or_default();
        let slot: u16 = self.cli(live, &["CLUSTER", "KEYSLOT", key]).trim().parse().unwrap_or_default();
        let shards = self.cli(live, &["CLUSTER", "SLOTS"]);
        // Plain output: start, end, then per node ip, port, id (primary first) — blocks of lines.
        let lines: Vec<&str> = shards.lines().collect();
        let mut i = 0;
        while i + 3 < lines.len() {
            if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>())
                && lines[i + 2] == "127.0.0.1"
                && (start..=end).contains(&slot)
            {
                return lines[i + 3].parse().unwrap_or_default();
            }
            i += 1;
        }
        panic!("no primary for slot {slot}:\n{shards}")
    }

    /// The primary as the sentinels name it now.
    pub(crate) fn sentinel_primary(&self) -> u16 {
        let out = self.cli(self.sentinels[0].port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER]);
        out.lines().nth(1).and_then(|p| p.parse().ok()).unwrap_or_default()
    }

    /// SIGKILL the node on `port`: no goodbye to its clients or peers.
    pub(crate) fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap_or_else(|| panic!("no node {port}"));
        if let Some(mut c) = node.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// How many `WAIT` commands the node on `port` has served.
    pub(crate) fn wait_calls(&self, port: u16) -> u64 {
        let stats = self.cli(port, &["INFO", "commandstats"]);
        let line = info_field(&stats, "cmdstat_wait");
        line.split(',').find_map(|kv| kv.strip_prefix("calls=")).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Whether `port` answers as a primary.
    pub(crate) fn is_primary(&self, port: u16) -> bool {
        info_field(&self.cli(port, &["INFO", "replication"]), "role") == "master"
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().chain(self.sentinels.iter_mut()) {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
