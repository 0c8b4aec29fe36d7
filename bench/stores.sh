#!/usr/bin/env bash
# Server-side sessions under load, per store (SPEC §9, issue 20): two oidc-bff instances share
# each store, and two wrk processes (one per instance, CONNS/2 connections each) ask GET
# /session with SESSIONS sessions in rotation (so a cluster spreads them over its slots).
#
#   postgres        PostgreSQL on 127.0.0.1:5432 (database test, a schema of its own)
#   redis           the Redis on 127.0.0.1:6379 (a key prefix of its own)
#   redis-cluster   a 3-primary + 3-replica cluster started here from redis-server
#
# oidc-bff instances on CPU 0, wrk on CPU 1, the stores unpinned. Each store: a warm-up, then
# DURATION seconds; ROUNDS rounds of every store in turn; every response checked to be 200.
# Loopback only, bounded in time. Needs: wrk (apt-get install -y wrk), redis-server,
# redis-cli, psql, node, python3.
# Environment: DURATION (10), WARMUP (3), CONNS (32), ROUNDS (3), SESSIONS (16),
# STORES (postgres redis redis-cluster), BFF_BIN (a built binary; default: build release),
# ACCESS_LOG (false; true = the default a user keeps).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
SESSIONS=${SESSIONS:-16}
STORES=${STORES:-postgres redis redis-cluster}
ACCESS_LOG=${ACCESS_LOG:-false}
for tool in wrk node python3 taskset redis-server redis-cli psql; do
  command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
if [ -n "${BFF_BIN:-}" ]; then BIN=$BFF_BIN; else cargo build --release --quiet; BIN=target/release/oidc-bff; fi

work=$(mktemp -d)
tag=bench_$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  psql -q -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA IF EXISTS $tag CASCADE" > /dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$tag:*" | xargs -r -n 500 redis-cli -h 127.0.0.1 -p 6379 DEL > /dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A A B
for s in $STORES; do A[$s]=$(free_port); B[$s]=$(free_port); done

# The cluster: six nodes with explicit bus ports, three primaries with a replica each.
cluster_url=
if [[ " $STORES " == *" redis-cluster "* ]]; then
  nodes=()
  for _ in 1 2 3 4 5 6; do
    p=$(free_port); bus=$(free_port)
    # Started directly (not in a subshell), so that cleanup's kill reaches the server itself.
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" --cluster-enabled yes \
      --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 1000 --cluster-port "$bus" > "$work/redis-$p.log" 2>&1 &
    pids+=($!)
    nodes+=("127.0.0.1:$p")
  done
  for n in "${nodes[@]}"; do
    for _ in $(seq 1 100); do redis-cli -h 127.0.0.1 -p "${n#*:}" PING 2> /dev/null | grep -q PONG && break; sleep 0.1; done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes > "$work/cluster-create.log"
  for n in "${nodes[@]}"; do
    for _ in $(seq 1 300); do redis-cli -h 127.0.0.1 -p "${n#*:}" CLUSTER INFO | grep -q 'cluster_state:ok' && break; sleep 0.1; done
  done
  cluster_url="redis://$(IFS=,; echo "${nodes[*]:0:3}")/?prefix=$tag:"
fi
psql -q -h 127.0.0.1 -U postgres -d test -c "CREATE SCHEMA $tag" > /dev/null

uris=""
for s in $STORES; do uris="$uris\"http://127.0.0.1:${A[$s]}/callback\",\"http://127.0.0.1:${B[$s]}/callback\","; done
IDP_CONFIG="{\"clients\":[{\"client_id\":\"bench\",\"client_secret\":\"bench-secret\",
  \"token_endpoint_auth_method\":\"client_secret_basic\",\"redirect_uris\":[${uris%,}]}]}" \
  taskset -c 1 node tests/idp/server.js > "$work/idp.out" 2> "$work/idp.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '"ready":true' "$work/idp.out" 2> /dev/null && break; sleep 0.1; done
issuer=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["issuer"])' "$work/idp.out")
KEY=$($BIN generate-key)

store_lines() {
  case $1 in
    postgres) printf 'store = "postgres"\nurl = "postgres://postgres@127.0.0.1:5432/test?options=-c%%20search_path%%3D%s"\n' "$tag" ;;
    redis) printf 'store = "redis"\nurl = "redis://127.0.0.1:6379/?prefix=%s:"\n' "$tag" ;;
    redis-cluster) printf 'store = "redis"\nredis_mode = "cluster"\nurl = "%s"\n' "$cluster_url" ;;
  esac
}
start_bff() { # store, port
  cat > "$work/$1-$2.toml" << TOML
[server]
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2"
[oidc]
issuer = "$issuer"
client_id = "bench"
client_secret = "bench-secret"
[session]
keys = ["$KEY"]
secure = false
$(store_lines "$1")
[logging]
access_log = $ACCESS_LOG
level = "$([ "$ACCESS_LOG" = true ] && echo info || echo warn)"
TOML
  taskset -c 0 "$BIN" serve --config "$work/$1-$2.toml" > "$work/bff-$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    [ "$(python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$2/readyz').status)" 2> /dev/null)" = 200 ] && return
    sleep 0.1
  done
  echo "oidc-bff on $2 ($1) not ready: $(tail -3 "$work/bff-$2.log")" >&2
  exit 1
}
for s in $STORES; do start_bff "$s" "${A[$s]}"; start_bff "$s" "${B[$s]}"; done

# wrk: cookies in rotation, non-200 counted, one RESULT line.
cat > "$work/rotate.lua" << 'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  bad = 0; i = 0; cookies = {}
  for line in io.lines(os.getenv("COOKIES")) do table.insert(cookies, line) end
end
function request()
  i = i + 1
  return wrk.format("GET", nil, { ["Cookie"] = cookies[(i % #cookies) + 1], ["X-CSRF"] = "1" })
end
function response(status, headers, body) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("bad") end
  local e = summary.errors
  total = total + e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, total, summary.requests))
end
LUA

# Sessions made at instance A (the store makes them valid at B), fresh for every run.
login_all() {
  : > "$work/cookies-$1"
  for n in $(seq 1 "$SESSIONS"); do python3 bench/login.py "http://127.0.0.1:${A[$1]}" "bench$n" >> "$work/cookies-$1"; done
}
both() { # store, seconds: one wrk per instance at once; prints "rps p50 p99 bad total" for each
  local half=$((CONNS / 2)) waits=()
  for port in "${A[$1]}" "${B[$1]}"; do
    COOKIES="$work/cookies-$1" taskset -c 1 timeout $(($2 + 30)) wrk -t1 "-c$half" --timeout 5s -s "$work/rotate.lua" \
      "-d${2}s" "http://127.0.0.1:$port/session" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}' > "$work/out-$port" &
    waits+=($!)
  done
  wait "${waits[@]}"
  cat "$work/out-${A[$1]}" "$work/out-${B[$1]}"
}
results=()
for round in $(seq 1 "$ROUNDS"); do
  for s in $STORES; do
    login_all "$s"
    both "$s" "$WARMUP" > /dev/null
    out=$(both "$s" "$DURATION")
    results+=("$round $s $(echo "$out" | tr '\n' ' ')")
  done
done

python3 - "$CONNS" "$DURATION" "$ROUNDS" "$SESSIONS" "$ACCESS_LOG" "${results[@]}" << 'PY'
import statistics, sys
conns, duration, rounds, sessions, access_log = sys.argv[1:6]
runs = {}
for line in sys.argv[6:]:
    f = line.split()
    rnd, name, a, b = f[0], f[1], f[2:7], f[7:12]
    rps = float(a[0]) + float(b[0])
    p99 = max(float(a[2]), float(b[2]))
    bad = int(a[3]) + int(b[3]); total = int(a[4]) + int(b[4])
    runs.setdefault(name, []).append((rps, p99, bad, total))
print(f"\ntwo instances per store, {conns} connections ({int(conns)//2} per instance), {sessions} sessions in rotation, "
      f"{duration} s per run, {rounds} rounds; access_log = {access_log}")
print("Each cell: median of the rounds (every round's value in brackets); req/s summed over both instances, p99 the worse of the two.\n")
print("| store | requests/s | p99 ms | non-200 |")
print("|---|---:|---:|---:|")
for name, rs in runs.items():
    col = lambda i, f: f"{f.format(statistics.median(r[i] for r in rs))} ({', '.join(f.format(r[i]) for r in rs)})"
    print(f"| {name} | {col(0, '{:.0f}')} | {col(1, '{:.2f}')} | {sum(r[2] for r in rs)} of {sum(r[3] for r in rs)} |")
PY
