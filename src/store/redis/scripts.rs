//! The Lua scripts of the Redis store: each runs atomically on the server and touches the one
//! key it is given (SPEC §9: in a cluster every script stays in one hash slot). Those whose
//! writes must survive a failover are sent as `EVAL` source, so they can share a pipeline
//! with the `WAIT` that follows them; the others as cached `Script`s.

use redis::{Cmd, Script};
use std::sync::LazyLock;

/// `EVAL` of a one-key script: sent with its source, so it can share a pipeline with `WAIT`.
pub(super) fn eval(script: &str, key: &str) -> Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(1).arg(key);
    c
}

pub(super) const UPDATE: &str = r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'data', ARGV[3], 'seen', ARGV[4])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
return 1";

pub(super) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local seen = redis.call('HGET', KEYS[1], 'seen')
if not seen or tonumber(seen) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seen', ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
return 1",
    )
});

// End one session found in an index set, if the logout selects it. KEYS[1]: the session.
// ARGV: mode ('any': created <= bound; 'nosid': the same, and without a sid; 'prune': never,
// only report), bound, required sub ('' = any). Returns -1 (gone), 0 (kept) or 1 (ended).
// One key per call (SPEC §9): the caller removes gone and ended ids from the index set.
pub(super) const END: &str = r"
local f = redis.call('HMGET', KEYS[1], 'created', 'sub', 'sid')
if not f[1] then return -1 end
local old = tonumber(f[1]) <= tonumber(ARGV[2])
local hit = (ARGV[1] == 'any' and old) or (ARGV[1] == 'nosid' and old and f[3] == '')
if hit and (ARGV[3] == '' or f[2] == ARGV[3]) then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0";

// Write a session. KEYS[1]: the session. ARGV: sub, sid, isub, isid, created, seen, data,
// expiry (unix seconds), when its index entries were added (their member suffix).
pub(super) const INSERT: &str = r"
redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'sid', ARGV[2], 'isub', ARGV[3], 'isid', ARGV[4],
  'created', ARGV[5], 'seen', ARGV[6], 'v', '1', 'data', ARGV[7], 'ix', ARGV[9])
redis.call('EXPIREAT', KEYS[1], ARGV[8])
return 1";

// Delete a session, answering what names its index entries (sub, sid, isub, isid, ix; all nil
// when it was gone). KEYS[1]: the session.
pub(super) const DELETE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'sub', 'sid', 'isub', 'isid', 'ix')
redis.call('DEL', KEYS[1])
return f";

// A revocation stamped with Redis's own clock. KEYS[1]: the sorted set. ARGV: the member.
pub(super) const REVOKE: &str = r"
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1";

pub(super) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

// Spend a single-use value: refused if this build's (KEYS[1], hashed) or an older build's
// (KEYS[2], raw; not in a cluster, where no older build wrote) record exists. ARGV: its
// expiry (unix seconds).
pub(super) const FIRST_USE: &str = r"
if #KEYS > 1 and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[1], 1, 'NX', 'EXAT', ARGV[1]) then return 1 end
return 0";
