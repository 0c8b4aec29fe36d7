//! The store conformance flows against a Redis Cluster and a Sentinel-managed primary, and
//! failovers under traffic (SPEC §9, issue 20). Each test starts its own topology from the
//! machine's `redis-server` (tests/api/topology.rs) and skips, saying why, where it is absent.

use crate::events::two_instances;
use crate::helpers::*;
use crate::stores::{
    Kind, TestStore, backchannel_flow, completed_state_replay, core_flow, core_flow_in, crafted_logouts, stack_store,
    two_instances_one_refresh,
};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn redis_cluster_store_core_flow() {
    core_flow(Kind::RedisCluster).await;
}

#[tokio::test]
async fn redis_sentinel_store_core_flow() {
    core_flow(Kind::RedisSentinel).await;
}

/// ACL user and password from the url (SPEC §9): every node refuses the default user, so the
/// flow works only if the credentials reach the cluster's nodes, or the sentinels and the
/// primary they name.
#[tokio::test]
async fn redis_cluster_with_an_acl_user_core_flow() {
    let Some(store) = TestStore::topology(Kind::RedisCluster, "acl", true) else { return };
    core_flow_in(store).await;
}

#[tokio::test]
async fn redis_sentinel_with_an_acl_user_core_flow() {
    let Some(store) = TestStore::topology(Kind::RedisSentinel, "acl", true) else { return };
    core_flow_in(store).await;
}

#[tokio::test]
async fn backchannel_logout_by_sid_redis_cluster() {
    let Some(store) = TestStore::new(Kind::RedisCluster, "bcl").await else { return };
    backchannel_flow(store, "redis").await;
}

#[tokio::test]
async fn backchannel_logout_by_sid_redis_sentinel() {
    let Some(store) = TestStore::new(Kind::RedisSentinel, "bcl").await else { return };
    backchannel_flow(store, "redis").await;
}

#[tokio::test]
async fn backchannel_logout_by_sub_redis_cluster() {
    crafted_logouts(Kind::RedisCluster, "redis").await;
}

#[tokio::test]
async fn backchannel_logout_by_sub_redis_sentinel() {
    crafted_logouts(Kind::RedisSentinel, "redis").await;
}

#[tokio::test]
async fn cookie_mode_revocation_list_redis_cluster() {
    let Some(store) = TestStore::new(Kind::RedisCluster, "rev").await else { return };
    backchannel_flow(store, "cookie").await;
}

#[tokio::test]
async fn cookie_mode_revocation_list_redis_sentinel() {
    let Some(store) = TestStore::new(Kind::RedisSentinel, "rev").await else { return };
    backchannel_flow(store, "cookie").await;
}

#[tokio::test]
async fn two_instances_spend_one_refresh_token_redis_cluster() {
    two_instances_one_refresh(Kind::RedisCluster, "redis").await;
}

#[tokio::test]
async fn two_instances_spend_one_refresh_token_redis_sentinel() {
    two_instances_one_refresh(Kind::RedisSentinel, "redis").await;
}

#[tokio::test]
async fn completed_state_replay_refused_across_instances_redis_cluster() {
    completed_state_replay(Kind::RedisCluster).await;
}

#[tokio::test]
async fn completed_state_replay_refused_across_instances_redis_sentinel() {
    completed_state_replay(Kind::RedisSentinel).await;
}

#[tokio::test]
async fn events_reach_every_instance_redis_cluster() {
    two_instances(Kind::RedisCluster).await;
}

#[tokio::test]
async fn events_reach_every_instance_redis_sentinel() {
    two_instances(Kind::RedisSentinel).await;
}

/// What a traffic loop saw around a primary's death.
struct Outcome {
    /// From the first failed request after the kill to the first of the final run of successes.
    window: Duration,
    /// Statuses other than 200, with their bodies' error codes.
    failures: Vec<(u16, String)>,
}

/// `/session` for every browser in turn while `kill` runs once, 500 ms into the loop; stops
/// after 30 consecutive rounds of 200 past the kill, or at `limit` (bounded in count too).
async fn traffic_through(bff: &Bff, browsers: &mut [Browser], limit: Duration, kill: impl FnOnce()) -> Outcome {
    let start = Instant::now();
    let mut kill = Some(kill);
    let mut killed_at = None;
    let (mut first_failure, mut last_failure) = (None::<Instant>, None::<Instant>);
    let mut failures = Vec::new();
    let mut good_rounds = 0;
    for _ in 0..20_000 {
        if killed_at.is_none() && start.elapsed() > Duration::from_millis(500) {
            if let Some(k) = kill.take() {
                k();
            }
            killed_at = Some(Instant::now());
        }
        let mut round_ok = true;
        for b in browsers.iter_mut() {
            let r = b.session(bff).await;
            if r.status != 200 {
                round_ok = false;
                let now = Instant::now();
                first_failure.get_or_insert(now);
                last_failure = Some(now);
                failures.push((r.status, r.json()["error"].as_str().unwrap_or(&r.body).to_owned()));
            }
        }
        good_rounds = if round_ok { good_rounds + 1 } else { 0 };
        if killed_at.is_some() && good_rounds >= 30 || start.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(good_rounds >= 30, "no recovery within {limit:?}: {} failures, last {:?}", failures.len(), failures.last());
    let window = match (first_failure, last_failure) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => Duration::ZERO,
    };
    Outcome { window, failures }
}

/// Failures must be 503 `session_store_unavailable` only: never a 500, never a logout (401).
fn assert_only_unavailable(o: &Outcome, what: &str) {
    for (status, error) in &o.failures {
        assert_eq!((*status, error.as_str()), (503, "session_store_unavailable"), "{what}: {:?}", o.failures);
    }
    eprintln!(
        "{what}: unavailable for {} ms ({} failed requests, all 503 session_store_unavailable)",
        o.window.as_millis(),
        o.failures.len()
    );
}

/// A session logged out just before the kill: the cookie's copy taken before must stay dead
/// after the failover (the deletion was waited for on a replica).
async fn logged_out_copy(bff: &Bff, name: &str) -> Browser {
    let mut b = logged_in(bff, &[name]).await.remove(0);
    let mut copy = Browser::new(bff);
    copy.set_jar(b.jar());
    assert_eq!(b.fetch(reqwest::Method::POST, &bff.url("/logout"), None).await.status, 200);
    assert_eq!(copy.session(bff).await.status, 401);
    copy
}

async fn logged_in(bff: &Bff, names: &[&str]) -> Vec<Browser> {
    let mut browsers = Vec::new();
    for name in names {
        let mut b = Browser::new(bff);
        b.login(bff, name, "/").await;
        assert_eq!(b.session(bff).await.status, 200);
        browsers.push(b);
    }
    browsers
}

/// Issue 20: the primary is killed under traffic; within the sentinels' failover time (1 s to
/// notice, a few to elect) plus 10 s requests succeed again without restarting oidc-bff, no
/// request got a 500 or a 401, sessions created before the kill answer 200 afterwards, and a
/// new login works.
#[tokio::test]
async fn sentinel_failover_under_traffic_loses_no_session() {
    let Some(mut store) = TestStore::new(Kind::RedisSentinel, "failover").await else { return };
    let url = store.url();
    let vars = store.vars("redis", &url);
    let (_idp, bff) = stack_store(json!({}), &vars, "", false).await;
    let mut browsers = logged_in(&bff, &["fo1", "fo2", "fo3", "fo4"]).await;
    let mut ended = logged_out_copy(&bff, "fo0").await;
    let Some(topology) = store.topology.as_mut() else { return };
    let primary = topology.sentinel_primary();
    assert!(topology.wait_calls(primary) > 0, "writes waited for the replica");
    let outcome = traffic_through(&bff, &mut browsers, Duration::from_secs(25), || topology.kill(primary)).await;
    assert_only_unavailable(&outcome, "sentinel failover");
    assert!(outcome.window < Duration::from_secs(16), "{:?}", outcome.window);
    let now_primary = topology.sentinel_primary();
    assert!(now_primary != primary && topology.is_primary(now_primary), "the replica was promoted");
    for b in &mut browsers {
        assert_eq!(b.session(&bff).await.status, 200, "a session from before the kill");
    }
    assert_eq!(ended.session(&bff).await.status, 401, "a logout before the kill is not undone");
    let mut later = Browser::new(&bff);
    assert_eq!(later.login(&bff, "fo5", "/").await.status, 302);
    assert_eq!(later.session(&bff).await.status, 200);
}

/// Issue 20: a cluster primary holding sessions is killed under traffic; its replica is
/// promoted and the same criteria hold.
#[tokio::test]
async fn cluster_primary_kill_under_traffic_loses_no_session() {
    let Some(mut store) = TestStore::new(Kind::RedisCluster, "failover").await else { return };
    let url = store.url();
    let vars = store.vars("redis", &url);
    let (_idp, bff) = stack_store(json!({}), &vars, "", false).await;
    let mut browsers = logged_in(&bff, &["cf1", "cf2", "cf3", "cf4", "cf5", "cf6"]).await;
    let prefix = store.name.clone();
    let Some(topology) = store.topology.as_mut() else { return };
    let sessions = topology.keys(&format!("{prefix}s:*"));
    let victim = sessions.iter().next().map(|k| topology.primary_for(k)).unwrap_or_default();
    assert!(topology.wait_calls(victim) > 0, "writes waited for the replica");
    let held = sessions.iter().filter(|k| topology.primary_for(k) == victim).count();
    assert!(held > 0, "the killed primary holds sessions");
    let outcome = traffic_through(&bff, &mut browsers, Duration::from_secs(25), || topology.kill(victim)).await;
    assert_only_unavailable(&outcome, "cluster primary kill");
    assert!(!outcome.failures.is_empty(), "sessions on the killed primary were unavailable for a while");
    assert!(outcome.window < Duration::from_secs(15), "{:?}", outcome.window);
    for b in &mut browsers {
        assert_eq!(b.session(&bff).await.status, 200, "a session from before the kill");
    }
    let mut later = Browser::new(&bff);
    assert_eq!(later.login(&bff, "cf7", "/").await.status, 302);
    assert_eq!(later.session(&bff).await.status, 200);
}
