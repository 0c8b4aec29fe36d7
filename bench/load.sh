#!/usr/bin/env bash
# Load benchmark: oidc-bff against nginx, measured in one run on one machine (loopback only).
#
#   static floor    nginx serving the /session JSON from a file
#   oidc-bff        GET /session with a valid session (real login at the test IdP)
#   proxy floor     nginx as a plain reverse proxy to the upstream
#   oidc-bff proxy  GET /api/x through oidc-bff (session, token added) to the same upstream
#   bff-exchange    GET /xapi/api/x: the same upstream through a token = "exchange" route (SPEC §6.2),
#                   its exchanged token cached after the first request (not in the default list)
#   bff-dpop        GET /api/x on an instance with dpop = true (SPEC §3.6): the same route, sent
#                   as `Authorization: DPoP` with a fresh ES256 proof per request (not in the
#                   default list; compare with bff-proxy)
#   upstream        the upstream (nginx) hit directly
#   bff-session-trace, bff-proxy-trace
#                   /session and the proxy on an instance with traces on ([telemetry], sample
#                   ratio 1.0, every request an incoming sampled traceparent) exporting to a
#                   collector that answers 200 (nginx on CPU 0); access log off, as bff-session
#                   and bff-proxy, which they are compared with (not in the default list)
#   …-log           the same four with access logs on: nginx `access_log … buffer=64k` to a file,
#                   oidc-bff with its default `access_log = true` (stderr to a file)
#
# Servers are pinned to CPU 0, wrk to CPU 1; 32 connections, a warm-up, then DURATION seconds;
# every response is checked to be 200; peak RSS (VmHWM) read from /proc. Bounded in time.
# Needs: wrk, nginx (apt-get install -y wrk nginx-light), node, python3.
# Environment: DURATION (10), WARMUP (3), CONNS (32), ROUNDS (3), TARGETS (all), PROFILE (release),
# FEATURES (cargo features, e.g. mimalloc),
# PERF=bff-session|bff-proxy records a flat CPU profile of oidc-bff during that target into
# PERF_OUT (default /tmp/oidc-bff.perf) - needs linux-perf and symbols
# (CARGO_PROFILE_RELEASE_DEBUG=line-tables-only); PERF_ARGS adds perf record options
# (e.g. --call-graph=dwarf). SYSCALLS=1 prints syscalls per request made on the servers' CPU,
# CTX=1 the context switches of oidc-bff and of all servers. HOLD=N (at most 600) keeps the
# stack up N seconds after the runs, printing oidc-bff's pid, URL and a session cookie.
# BFF_BIN=path uses that oidc-bff binary instead of building this tree.
# BASE_BIN=path/to/an/older/oidc-bff adds base-session and base-proxy (that binary, same
# config, access log off), each run just before its bff- twin, and prints after-vs-before
# ratios taken within a round: a before/after comparison that the VM's drift cannot split.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
PROFILE=${PROFILE:-release}
for tool in wrk nginx node python3 taskset; do
  command -v "$tool" > /dev/null || { echo "missing $tool (apt-get install -y wrk nginx-light)" >&2; exit 1; }
done
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
FEATURES=${FEATURES:-}
if [ -n "${BFF_BIN:-}" ]; then
  BIN=$BFF_BIN # a binary built elsewhere (e.g. a commit's, kept apart from the work tree)
elif [ "$PROFILE" = release ]; then
  cargo build --release --quiet --features "$FEATURES"; BIN=target/release/oidc-bff
else
  cargo build --quiet --features "$FEATURES"; BIN=target/debug/oidc-bff
fi

work=$(mktemp -d)
chmod 755 "$work" # nginx workers run as an unprivileged user
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f" 2> /dev/null)" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); PROXY=$(free_port); STATIC=$(free_port); BFF=$(free_port)
STATIC_LOG=$(free_port); PROXY_LOG=$(free_port); BFF_LOG=$(free_port); BASE=$(free_port); EXCH=$(free_port); DPOP=$(free_port)
TRACE=$(free_port); TRACE_ADMIN=$(free_port); OTLP=$(free_port)
BASE_BIN=${BASE_BIN:-}
if [ -n "$BASE_BIN" ] && [ ! -x "$BASE_BIN" ]; then echo "BASE_BIN $BASE_BIN is not an executable" >&2; exit 1; fi

# A small JSON body, the same for every target.
mkdir -p "$work/www/api"
body='{"authenticated":true,"sub":"bench","claims":{"name":"Bench","email":"bench@example.test"},"expires_at":1893456000}'
printf '%s' "$body" > "$work/www/session"
printf '%s' "$body" > "$work/www/api/x"
# Two nginx instances: the upstream is a separate server (as in production), so the proxy
# floor pays for talking to another process just as oidc-bff does.
nginx_conf() { # name, server blocks
  cat > "$work/$1.conf" << NGINX
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  default_type application/json;
  keepalive_requests 1000000;
  $2
}
NGINX
}
nginx_conf upstream "server { listen 127.0.0.1:$UP; root $work/www; }"
nginx_conf floors "upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$STATIC; root $work/www; }
  server {
    listen 127.0.0.1:$PROXY;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }
  server { listen 127.0.0.1:$STATIC_LOG; root $work/www; access_log $work/static-access.log combined buffer=64k; }
  server {
    listen 127.0.0.1:$PROXY_LOG;
    access_log $work/proxy-access.log combined buffer=64k;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }
  server { listen 127.0.0.1:$OTLP; client_max_body_size 64m; location = /v1/traces { return 200; } }"
for n in upstream floors; do
  taskset -c 0 nginx -c "$work/$n.conf" -p "$work" 2> "$work/$n.log" &
  pids+=($!)
done

idp_config="{\"clients\":[{\"client_id\":\"bench\",\"client_secret\":\"bench-secret\",
  \"token_endpoint_auth_method\":\"client_secret_basic\",
  \"redirect_uris\":[\"http://127.0.0.1:$BFF/callback\",\"http://127.0.0.1:$BFF_LOG/callback\",\"http://127.0.0.1:$BASE/callback\",\"http://127.0.0.1:$EXCH/callback\",\"http://127.0.0.1:$DPOP/callback\",\"http://127.0.0.1:$TRACE/callback\"]}]}"
IDP_CONFIG="$idp_config" taskset -c 1 node tests/idp/server.js > "$work/idp.out" 2> "$work/idp.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '"ready":true' "$work/idp.out" 2> /dev/null && break; sleep 0.1; done
issuer=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["issuer"])' "$work/idp.out")

KEY=$($BIN generate-key)
bff_config() { # port, [logging] lines
  cat << TOML
[server]
listen = "127.0.0.1:$1"
public_url = "http://127.0.0.1:$1"
[oidc]
issuer = "$issuer"
client_id = "bench"
client_secret = "bench-secret"
[session]
keys = ["$KEY"]
secure = false
$2
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:$UP"
TOML
}
bff_config "$BFF" $'[logging]\naccess_log = false\nlevel = "warn"' > "$work/bff.toml"
# bff-exchange has an instance of its own: the lean one's /session stays as measured before
# (with exchange routes, /session also reports their cached tokens' expiry), and BASE_BIN's
# config stays without keys an older build may not know.
bff_config "$EXCH" $'[logging]\naccess_log = false\nlevel = "warn"' > "$work/exch.toml"
cat >> "$work/exch.toml" << TOML
[[routes]]
prefix = "/xapi"
upstream = "http://127.0.0.1:$UP"
strip_prefix = true
token = "exchange"
resource = "https://api.bench.test/"
TOML
# bff-dpop: DPoP on (the [oidc] key is appended after the section's other keys by sed).
bff_config "$DPOP" $'[logging]\naccess_log = false\nlevel = "warn"' | sed 's/^\[session\]$/dpop = true\n[session]/' > "$work/dpop.toml"
# bff-*-trace: traces on, every span exported (the admin listener reports how many).
bff_config "$TRACE" $'[logging]\naccess_log = false\nlevel = "warn"' \
  | sed "s/^\[oidc\]$/admin_listen = \"127.0.0.1:$TRACE_ADMIN\"\n[oidc]/" > "$work/trace.toml"
cat >> "$work/trace.toml" << TOML
[telemetry]
otlp_endpoint = "http://127.0.0.1:$OTLP"
sample_ratio = 1.0
TOML
# The defaults a user keeps: access_log = true, level = "info", pretty lines.
bff_config "$BFF_LOG" "" > "$work/bff-log.toml"
start_bff() { # config, port, log file; sets started_pid
  taskset -c 0 "$BIN" serve --config "$1" > "$3" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
  for _ in $(seq 1 100); do
    [ "$(python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$2/readyz').status)" 2> /dev/null)" = 200 ] && break
    sleep 0.1
  done
}
start_bff "$work/bff.toml" "$BFF" "$work/bff.log"; bff_pid=$started_pid
start_bff "$work/bff-log.toml" "$BFF_LOG" "$work/bff-access.log"; bff_log_pid=$started_pid
case " ${TARGETS:-} " in
  *" bff-exchange "*) start_bff "$work/exch.toml" "$EXCH" "$work/exch.log" ;;
esac
case " ${TARGETS:-} " in
  *" bff-dpop "*) start_bff "$work/dpop.toml" "$DPOP" "$work/dpop.log" ;;
esac
case " ${TARGETS:-} " in
  *"-trace "*) start_bff "$work/trace.toml" "$TRACE" "$work/trace.log" ;;
esac
base_pid=
if [ -n "$BASE_BIN" ]; then
  bff_config "$BASE" $'[logging]\naccess_log = false\nlevel = "warn"' > "$work/base.toml"
  BIN_SAVED=$BIN; BIN=$BASE_BIN
  start_bff "$work/base.toml" "$BASE" "$work/base.log"; base_pid=$started_pid
  BIN=$BIN_SAVED
fi
idle_rss=$(awk '/^VmRSS/ {print $2}' "/proc/$bff_pid/status")
base_idle_rss=$([ -n "$base_pid" ] && awk '/^VmRSS/ {print $2}' "/proc/$base_pid/status" || echo 0)
startup=$(taskset -c 0 python3 bench/startup.py "$BIN" "$work/bff.toml" 5)

cat > "$work/count.lua" << 'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
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

# run NAME URL [cookie [header]]: warm-up, then the measured run; prints "NAME rps p50 p99 bad total".
run() {
  local name=$1 url=$2 cookie=${3:-} header=${4:-}
  local args=(-t1 "-c$CONNS" --timeout 5s -s "$work/count.lua" -H "X-CSRF: 1")
  [ -n "$cookie" ] && args+=(-H "Cookie: $cookie")
  [ -n "$header" ] && args+=(-H "$header")
  taskset -c 1 timeout 60 wrk "${args[@]}" "-d${WARMUP}s" "$url" > /dev/null
  local out perf_pid=
  if [ "${PERF:-}" = "$name" ] && [ "$round" = 1 ]; then
    taskset -c 1 perf record -q -F 1999 ${PERF_ARGS:-} -p "$bff_pid" -o "${PERF_OUT:-/tmp/oidc-bff.perf}" -- sleep "$DURATION" 2> /dev/null &
    perf_pid=$!
  fi
  local stat_pid=
  if [ -n "${SYSCALLS:-}" ] && [ "$round" = 1 ]; then
    # Every syscall made on the servers' CPU during the run, by name (divide by requests).
    taskset -c 1 perf stat -C 0 -e 'syscalls:sys_enter_*' -x, -o "$work/$name.syscalls" -- sleep "$DURATION" 2> /dev/null &
    stat_pid=$!
  fi
  out=$(taskset -c 1 timeout $((DURATION + 30)) wrk "${args[@]}" "-d${DURATION}s" "$url" | awk '/^RESULT/ {print $2, $3, $4, $5, $6}')
  if [ -n "$perf_pid" ]; then wait "$perf_pid"; fi
  if [ -n "$stat_pid" ]; then wait "$stat_pid"; fi
  if [ -n "$stat_pid" ]; then
    awk -F, -v n="$name" -v reqs="$(echo "$out" | awk '{print $5}')" -v d="$DURATION" \
      '$1 >= 1 && $3 ~ /sys_enter/ {sub("syscalls:sys_enter_", "", $3); t += $1; if ($1 / reqs >= 0.01) s = s sprintf(" %s=%.2f", $3, $1 / (reqs * 1.0))}
       END {printf "%s syscalls/request on CPU 0: %.2f:%s\n", n, t / reqs, s}' "$work/$name.syscalls" >&2
  fi
  echo "$name $out"
}
# A fresh login before each oidc-bff run: a real browser stores the re-sealed cookie, wrk
# cannot, so an old cookie would be re-sealed on every request after 60 s.
login() { python3 bench/login.py "http://127.0.0.1:${1:-$BFF}"; }

if [ -n "$BASE_BIN" ]; then
  TARGETS=${TARGETS:-static-floor base-session bff-session proxy-floor base-proxy bff-proxy static-floor-log bff-session-log proxy-floor-log bff-proxy-log upstream-direct}
else
  TARGETS=${TARGETS:-static-floor bff-session proxy-floor bff-proxy static-floor-log bff-session-log proxy-floor-log bff-proxy-log upstream-direct}
fi
# A browser's sampled trace context, sent on every request of the -trace targets.
TRACEPARENT="traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ctx() { awk '/ctxt_switches/ {s+=$2} END {print s+0}' "/proc/$1/status"; }
results=()
# Context switches of every server process on CPU 0 (oidc-bff and the nginx instances).
servers_ctx() { local s=$(ctx "$bff_pid"); for p in $(for m in "$work"/*.pid; do pgrep -P "$(cat "$m")"; done); do s=$((s + $(ctx "$p"))); done; echo "$s"; }
# ROUNDS rounds of every target in turn: each oidc-bff run sits next to its floor in time, so
# a ratio is taken between runs that saw the same machine (a shared VM's speed drifts by 10-20%
# over minutes); the summary gives the median round.
for round in $(seq 1 "$ROUNDS"); do
  for t in $TARGETS; do
    c0=$(ctx "$bff_pid") a0=$(servers_ctx)
    case $t in
      static-floor) results+=("$round $(run static-floor "http://127.0.0.1:$STATIC/session")") ;;
      bff-session) results+=("$round $(run bff-session "http://127.0.0.1:$BFF/session" "$(login)")") ;;
      proxy-floor) results+=("$round $(run proxy-floor "http://127.0.0.1:$PROXY/api/x")") ;;
      bff-proxy) results+=("$round $(run bff-proxy "http://127.0.0.1:$BFF/api/x" "$(login)")") ;;
      bff-exchange) results+=("$round $(run bff-exchange "http://127.0.0.1:$EXCH/xapi/api/x" "$(login "$EXCH")")") ;;
      bff-dpop) results+=("$round $(run bff-dpop "http://127.0.0.1:$DPOP/api/x" "$(login "$DPOP")")") ;;
      static-floor-log) results+=("$round $(run static-floor-log "http://127.0.0.1:$STATIC_LOG/session")") ;;
      bff-session-log) results+=("$round $(run bff-session-log "http://127.0.0.1:$BFF_LOG/session" "$(login "$BFF_LOG")")") ;;
      proxy-floor-log) results+=("$round $(run proxy-floor-log "http://127.0.0.1:$PROXY_LOG/api/x")") ;;
      bff-proxy-log) results+=("$round $(run bff-proxy-log "http://127.0.0.1:$BFF_LOG/api/x" "$(login "$BFF_LOG")")") ;;
      base-session) results+=("$round $(run base-session "http://127.0.0.1:$BASE/session" "$(login "$BASE")")") ;;
      base-proxy) results+=("$round $(run base-proxy "http://127.0.0.1:$BASE/api/x" "$(login "$BASE")")") ;;
      bff-session-trace) results+=("$round $(run bff-session-trace "http://127.0.0.1:$TRACE/session" "$(login "$TRACE")" "$TRACEPARENT")") ;;
      bff-proxy-trace) results+=("$round $(run bff-proxy-trace "http://127.0.0.1:$TRACE/api/x" "$(login "$TRACE")" "$TRACEPARENT")") ;;
      upstream-direct) results+=("$round $(run upstream-direct "http://127.0.0.1:$UP/api/x")") ;;
    esac
    [ -n "${CTX:-}" ] && echo "$t: context switches: oidc-bff $(($(ctx "$bff_pid") - c0)), all servers $(($(servers_ctx) - a0))" >&2
  done
done
if [ -n "${HOLD:-}" ]; then
  # Keep everything up for HOLD seconds (bounded) to inspect it by hand.
  # The cookie is a session of the throwaway test IdP started above, for wrk/curl by hand.
  echo "holding ${HOLD}s: oidc-bff pid $bff_pid on http://127.0.0.1:$BFF, cookie: $(login)" >&2
  sleep "$((HOLD < 600 ? HOLD : 600))"
fi
peak_rss=$(awk '/^VmHWM/ {print $2}' "/proc/$bff_pid/status")
peak_rss_log=$(awk '/^VmHWM/ {print $2}' "/proc/$bff_log_pid/status")
# Every answered request of the logging instance has its line (after the one-second flush).
sleep 1.5
bff_lines=$(grep -c '"access"\|INFO access:' "$work/bff-access.log" || true)
nginx_rss=$(for p in $(pgrep -f "nginx.*$work/floors.conf"); do awk "/^VmHWM/ {print \$2}" "/proc/$p/status"; done | awk "{s+=\$1} END {print s+0}")

base_peak_rss=$([ -n "$base_pid" ] && awk '/^VmHWM/ {print $2}' "/proc/$base_pid/status" || echo 0)
case " $TARGETS " in
  *"-trace "*)
    sleep 1.5 # the last batch
    python3 -c "import urllib.request as u; print('\n'.join(l for l in u.urlopen('http://127.0.0.1:$TRACE_ADMIN/metrics').read().decode().splitlines() if l.startswith('bff_trace_spans')))" >&2 || true
    ;;
esac

python3 - "$peak_rss" "$idle_rss" "$nginx_rss" "$CONNS" "$DURATION" "$peak_rss_log" "$startup" "$ROUNDS" "$bff_lines" "$base_idle_rss" "$base_peak_rss" "${results[@]}" << 'PY'
import statistics, sys
peak, idle, nginx_rss, conns, duration, peak_log, startup, rounds, bff_lines, base_idle, base_peak = sys.argv[1:12]
runs = {}  # name -> {round: row}
for line in sys.argv[12:]:
    rnd, name, rps, p50, p99, bad, total = line.split()
    runs.setdefault(name, {})[int(rnd)] = dict(rps=float(rps), p50=float(p50), p99=float(p99), bad=int(bad), total=int(total))
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"\n{conns} connections, {duration} s per run, {rounds} rounds; servers on CPU 0, wrk on CPU 1; -log targets: access logs on")
print("Each cell: median of the rounds (every round's value in brackets).\n")
print("| target | requests/s | p50 ms | p99 ms | non-200 |")
print("|---|---:|---:|---:|---:|")
for name, rs in runs.items():
    col = lambda k, f: f"{f.format(med([r[k] for r in rs.values()]))} ({', '.join(f.format(r[k]) for r in rs.values())})"
    bad = sum(r["bad"] for r in rs.values()); total = sum(r["total"] for r in rs.values())
    print(f"| {name} | {col('rps', '{:.0f}')} | {col('p50', '{:.3f}')} | {col('p99', '{:.3f}')} | {bad} of {total} |")
def ratios(a, b, k):
    if a not in runs or b not in runs:
        return []
    return [runs[a][r][k] / runs[b][r][k] for r in sorted(runs[a]) if r in runs[b] and runs[b][r][k]]
def show(xs):
    return f"{med(xs):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in xs)})"
print()
for suffix, label in (("", "access logs off"), ("-log", "access logs on")):
    if f"bff-session{suffix}" in runs:
        print(f"- {label}: /session vs static floor: {show(ratios('bff-session' + suffix, 'static-floor' + suffix, 'rps'))} requests/s, p99 {show(ratios('bff-session' + suffix, 'static-floor' + suffix, 'p99'))} nginx's")
    if f"bff-proxy{suffix}" in runs:
        print(f"- {label}: proxy vs nginx proxy: {show(ratios('bff-proxy' + suffix, 'proxy-floor' + suffix, 'rps'))} requests/s, p99 {show(ratios('bff-proxy' + suffix, 'proxy-floor' + suffix, 'p99'))} nginx's")
for what in ("session", "proxy"):
    if f"base-{what}" in runs and f"bff-{what}" in runs:
        print(f"- {what}, this build vs BASE_BIN: {show(ratios(f'bff-{what}', f'base-{what}', 'rps'))} requests/s, p99 {show(ratios(f'bff-{what}', f'base-{what}', 'p99'))}")
if int(base_idle):
    print(f"- BASE_BIN RSS: idle {int(base_idle)/1024:.1f} MiB, peak {int(base_peak)/1024:.1f} MiB")
if "bff-dpop" in runs and "bff-proxy" in runs:
    print(f"- DPoP route vs bearer route: {show(ratios('bff-dpop', 'bff-proxy', 'rps'))} requests/s, p99 {show(ratios('bff-dpop', 'bff-proxy', 'p99'))}")
if "bff-exchange" in runs and "bff-proxy" in runs:
    print(f"- exchange route (cached token) vs session-token route: {show(ratios('bff-exchange', 'bff-proxy', 'rps'))} requests/s, p99 {show(ratios('bff-exchange', 'bff-proxy', 'p99'))}")
if "bff-proxy" in runs and "upstream-direct" in runs:
    print(f"- proxy vs upstream direct: {show(ratios('bff-proxy', 'upstream-direct', 'rps'))} requests/s")
for what in ("session", "proxy"):
    if f"bff-{what}-trace" in runs and f"bff-{what}" in runs:
        print(f"- oidc-bff {what}, traces on (ratio 1.0) vs off: {show(ratios(f'bff-{what}-trace', f'bff-{what}', 'rps'))} requests/s, p99 {show(ratios(f'bff-{what}-trace', f'bff-{what}', 'p99'))}")
for what in ("session", "proxy"):
    if f"bff-{what}-log" in runs and f"bff-{what}" in runs:
        print(f"- oidc-bff {what}, access log on vs off: {show(ratios(f'bff-{what}-log', f'bff-{what}', 'rps'))} requests/s")
logged = sum(r["total"] for n in ("bff-session-log", "bff-proxy-log") for r in runs.get(n, {}).values())
if logged:
    print(f"- access lines written by oidc-bff: {bff_lines} (measured requests {logged}, plus warm-ups and logins)")
print(f"- oidc-bff RSS: idle {int(idle)/1024:.1f} MiB, peak {int(peak)/1024:.1f} MiB (log on: {int(peak_log)/1024:.1f} MiB) (the nginx floors instance, master + worker: {int(nginx_rss)/1024:.1f} MiB)")
print(f"- {startup}")
bad = sum(r["bad"] for rs in runs.values() for r in rs.values())
if bad:
    print(f"\nFAILED: {bad} responses were not 200")
    sys.exit(1)
PY
