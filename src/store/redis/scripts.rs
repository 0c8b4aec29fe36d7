//! The Lua scripts of the Redis store: each runs atomically on the server.

use redis::Script;
use std::sync::LazyLock;

pub(super) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'data', ARGV[3], 'seen', ARGV[4])
redis.call('EXPIREAT', KEYS[1], ARGV[5])
return 1",
    )
});

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

// One batch of an index set (the caller walks the set with SSCAN, so no call blocks Redis for
// long however large the set). KEYS[1]: the index set. ARGV: mode ('any': every session
// created <= bound; 'nosid': those without a sid; 'prune': none, only forget dead ids),
// bound, session key prefix, required sub ('' = any), then the ids. Ids whose session is gone
// leave the set.
pub(super) static LOGOUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for i = 5, #ARGV do
  local id = ARGV[i]
  local k = ARGV[3] .. id
  local f = redis.call('HMGET', k, 'created', 'sub', 'sid')
  if not f[1] then
    redis.call('SREM', KEYS[1], id)
  else
    local old = tonumber(f[1]) <= tonumber(ARGV[2])
    local hit = (ARGV[1] == 'any' and old) or (ARGV[1] == 'nosid' and old and f[3] == '')
    if hit and (ARGV[4] == '' or f[2] == ARGV[4]) then
      redis.call('DEL', k)
      redis.call('SREM', KEYS[1], id)
      n = n + 1
    end
  end
end
return n",
    )
});

// Delete a session and its index entries. KEYS[1]: the session. ARGV: index key prefix, id.
// Sessions written by older builds have no isub/isid: their sets are named by the raw ids.
pub(super) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local f = redis.call('HMGET', KEYS[1], 'sub', 'sid', 'isub', 'isid')
redis.call('DEL', KEYS[1])
if f[3] then
  redis.call('SREM', ARGV[1] .. 'hsub:' .. f[3], ARGV[2])
  if f[4] and f[4] ~= '' then redis.call('SREM', ARGV[1] .. 'hsid:' .. f[4], ARGV[2]) end
else
  if f[1] then redis.call('SREM', ARGV[1] .. 'sub:' .. f[1], ARGV[2]) end
  if f[2] and f[2] ~= '' then redis.call('SREM', ARGV[1] .. 'sid:' .. f[2], ARGV[2]) end
end
return 1",
    )
});

// A revocation stamped with Redis's own clock. KEYS[1]: the sorted set. ARGV: the member.
pub(super) static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
return 1",
    )
});

pub(super) static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

// Spend a single-use value: refused if this build's (KEYS[1], hashed) or an older build's
// (KEYS[2], raw) record exists. ARGV: its expiry (unix seconds).
pub(super) static FIRST_USE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[1], 1, 'NX', 'EXAT', ARGV[1]) then return 1 end
return 0",
    )
});
