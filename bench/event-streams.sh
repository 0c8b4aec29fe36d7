#!/usr/bin/env bash
# Idle /session/events streams (SPEC §5; issue 19, "Done when" 4), measured on one machine
# (loopback only), for docs/benchmarks.md:
#
#   memory      oidc-bff's VmRSS (/proc/PID/status) after a warm-up with no streams, then with
#               STREAMS idle event streams open (each counted once its first `session` event has
#               arrived): KiB per stream = delta / STREAMS. Sessions hold 8 streams each, so
#               ceil(STREAMS / 8) sessions log in first (users s0, s1, …; timed).
#   throughput  GET /session with wrk (oidc-bff on CPU 0, wrk on CPU 1, 32 connections, a warm-up
#               before each run, every response checked to be 200 by a Lua hook, as bench/load.sh),
#               without the streams, then with them open, alternating, ROUNDS times; the ratio
#               with / without is taken within each round. The streams are idle meanwhile (a
#               `: keep-alive` comment every 25 s is all they carry).
#   fan-out     1,000 streams of one user: 125 sessions of user "fan" (125 IdP logins: the same
#               sub, each its own IdP sid), 8 streams each, beside the STREAMS streams; then one
#               back-channel logout token naming only sub "fan" (signed by the test IdP's
#               /__test/sign) is POSTed to /backchannel-logout. Measured from just before the POST
#               until each stream has received `event: ended` with `{"reason":"backchannel"}`
#               (as seen by the one Node process holding them): p50, p90, max; fails unless all
#               1,000 have it within 5 s. The STREAMS other streams must hear nothing.
#
# oidc-bff runs in cookie mode with [session] url = sqlite (back-channel logout needs it: the
# revocation list), max_event_streams = STREAMS + 1000, max_connections = STREAMS + 2000,
# admin_listen for the bff_event_streams gauge (checked after every open and close). The whole
# set runs twice, on a fresh oidc-bff each: access_log = true (the default) and false (LOGS).
# The streams are held by bench/event-streams.mjs (Node, no dependencies) on CPU 1; the test
# IdP (tests/idp/server.js) on CPU 1. Prints a markdown summary at the end; exit 1 on any
# failure (a non-200 response, a refused stream, a lost stream, a late or missing event).
#
#   BFF_BIN=target/release/oidc-bff bench/event-streams.sh
#   BFF_BIN=target/debug/oidc-bff STREAMS=200 DURATION=3 ROUNDS=1 bash bench/event-streams.sh
#
# Environment: STREAMS (5000), DURATION (10), ROUNDS (2), WARMUP (3), CONNS (32),
# BFF_BIN (target/release/oidc-bff; this script never builds), LOGS ("on off": the access-log
# settings to measure), MAX_EVENT_STREAMS (STREAMS + 1000; set it lower to see a refusal
# reported), LIMIT (seconds for the whole run; computed from the others), KEEP_LOGS (a directory
# to copy oidc-bff's, the holder's and the IdP's logs to).
# Needs: wrk (apt-get install -y wrk), node, python3, curl, taskset; open files: both node and
# oidc-bff hold one descriptor per stream (ulimit -n is raised to 65536, or to the hard limit
# when that is enough).
set -euo pipefail

STREAMS=${STREAMS:-5000}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
WARMUP=${WARMUP:-3}
CONNS=${CONNS:-32}
LOGS=${LOGS:-on off}
PER_SESSION=8 # SPEC §5: at most 8 streams per session
FANOUT=1000
FAN_SESSIONS=$(((FANOUT + PER_SESSION - 1) / PER_SESSION))
MAX_EVENT_STREAMS=${MAX_EVENT_STREAMS:-$((STREAMS + FANOUT))}
MAX_CONNECTIONS=$((STREAMS + 2000))
SESSIONS=$(((STREAMS + PER_SESSION - 1) / PER_SESSION))
nlogs=$(wc -w <<< "$LOGS")
# Logins are the slow part (the IdP does 5-10 requests for each): budget 0.2 s per login.
LIMIT=${LIMIT:-$((300 + nlogs * (60 + ROUNDS * (2 * (DURATION + WARMUP) + 60 + STREAMS / 100) + (SESSIONS + FAN_SESSIONS) / 5)))}
# Everything below runs under one overall timeout (it signals the whole process group).
if [ -z "${EVENT_STREAMS_BOUNDED:-}" ]; then
  EVENT_STREAMS_BOUNDED=1 exec timeout --kill-after=20 "$LIMIT" bash "$0" "$@"
fi
fail() { echo "event-streams: $*" >&2; exit 1; }
BIN_SHOWN=${BFF_BIN:-target/release/oidc-bff}
BIN=${BFF_BIN:-$(dirname "$0")/../target/release/oidc-bff}
[ -x "$BIN" ] || fail "no oidc-bff binary at $BIN_SHOWN: build it (cargo build --release) or set BFF_BIN"
BIN=$(realpath "$BIN") # BFF_BIN may be relative to where the script was started
cd "$(dirname "$0")/.."

for v in STREAMS DURATION ROUNDS WARMUP CONNS MAX_EVENT_STREAMS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || fail "$v must be a positive integer, not '${!v}'"
done
for l in $LOGS; do [[ $l == on || $l == off ]] || fail "LOGS holds on and/or off, not '$l'"; done
for tool in wrk node python3 curl taskset; do
  command -v "$tool" > /dev/null || fail "missing $tool (apt-get install -y wrk curl)"
done
[ "$(nproc)" -ge 2 ] || fail "needs 2 CPUs (oidc-bff on CPU 0, the clients on CPU 1)"
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund

# One descriptor per stream in each of node and oidc-bff, plus wrk's, the IdP's, sqlite's.
need=$((MAX_EVENT_STREAMS + 1000))
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)" 2> /dev/null || true
have=$(ulimit -n)
if [ "$have" != unlimited ] && [ "$have" -lt "$need" ]; then
  fail "needs $need open files per process, ulimit -n is $have (hard limit $(ulimit -Hn)); raise the hard limit (as root: ulimit -Hn 65536; docker: --ulimit nofile=65536)"
fi

work=$(mktemp -d)
pids=()
bff_pid=
cleanup() {
  # Every process started here, by pid (the stream holder, oidc-bff, the IdP).
  [ -n "${HOLDER_PID:-}" ] && kill "$HOLDER_PID" 2> /dev/null
  for p in "${pids[@]}" $bff_pid; do kill "$p" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "event-streams: stopped by a signal (the overall LIMIT of ${LIMIT}s, or ^C)" >&2; exit 124' TERM INT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A PORT ADMIN
for l in $LOGS; do PORT[$l]=$(free_port); ADMIN[$l]=$(free_port); done
redirects=$(for l in $LOGS; do printf '"http://127.0.0.1:%s/callback",' "${PORT[$l]}"; done)
first=${LOGS%% *}
# A back-channel client: the IdP puts a sid in every ID token (one per IdP login), as a real
# deployment has; the crafted logout token below names only the sub. The IdP itself never
# calls this URI here (nobody ends an IdP session).
idp_config="{\"clients\":[{\"client_id\":\"bench\",\"client_secret\":\"bench-secret\",
  \"redirect_uris\":[${redirects%,}],
  \"backchannel_logout_uri\":\"http://127.0.0.1:${PORT[$first]}/backchannel-logout\"}]}"
IDP_CONFIG="$idp_config" taskset -c 1 node tests/idp/server.js < /dev/null > "$work/idp.out" 2> "$work/idp.log" &
pids+=($!)
for _ in $(seq 1 150); do grep -q '"ready":true' "$work/idp.out" 2> /dev/null && break; sleep 0.1; done
grep -q '"ready":true' "$work/idp.out" || { tail -5 "$work/idp.log" >&2; fail "the test IdP did not start within 15 s"; }
issuer=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["issuer"])' "$work/idp.out")
KEY=$("$BIN" generate-key)

# The stream holder, a coprocess: one command per line in, one "ok …"/"fail …" line out.
coproc HOLDER { exec taskset -c 1 node bench/event-streams.mjs "$issuer" bench 2> "$work/holder.log"; }
reply=
ask() { # seconds, command…: fails the run on "fail …" or no answer in time
  local t=$1
  shift
  [ -n "${HOLDER[1]:-}" ] || fail "the stream holder is gone ($(tail -3 "$work/holder.log"))"
  echo "$*" >&"${HOLDER[1]}" || fail "the stream holder is gone ($(tail -3 "$work/holder.log"))"
  if ! IFS= read -r -t "$t" reply <&"${HOLDER[0]}"; then
    tail -5 "$work/holder.log" >&2
    fail "no answer from the stream holder to '$1' within ${t}s"
  fi
  case $reply in
    ok*) ;;
    *) tail -3 "$work/bff.log" 2> /dev/null | sed 's/^/  oidc-bff log: /' >&2; fail "${reply#fail }" ;;
  esac
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$reply"; }

cat > "$work/count.lua" << 'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 first = 0 end
function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
    if first == 0 then first = status end
  end
end
function done(summary, latency, requests)
  local total, first = 0, 0
  for _, t in ipairs(threads) do
    total = total + t:get("bad")
    if first == 0 then first = t:get("first") end
  end
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, total + errors, summary.requests, first, errors))
end
LUA
# wrk against GET /session with a fresh login's cookie (load.sh: wrk cannot store a re-sealed
# cookie): a warm-up, then DURATION s. Sets wrk_out to "rps p50 p99 bad total first-bad-status
# socket-errors".
wrk_out=
wrk_session() {
  ask 60 cookie wrk
  local cookie=${reply#ok cookie=}
  local args=(-t1 "-c$CONNS" --timeout 5s -s "$work/count.lua" -H "X-CSRF: 1" -H "Cookie: $cookie")
  taskset -c 1 timeout --foreground $((WARMUP + 30)) wrk "${args[@]}" "-d${WARMUP}s" "$url/session" > /dev/null
  local out
  out=$(taskset -c 1 timeout --foreground $((DURATION + 30)) wrk "${args[@]}" "-d${DURATION}s" "$url/session" | awk '/^RESULT/ {print $2, $3, $4, $5, $6, $7, $8}')
  [ -n "$out" ] || fail "wrk gave no result"
  wrk_out=$out
}
rss() { awk '/^VmRSS/ {print $2}' "/proc/$bff_pid/status"; }
gauge() { curl -fsS --max-time 5 "http://127.0.0.1:$admin/metrics" | awk '$1 == "bff_event_streams" {v = $2} END {print v + 0}'; }
# wait_gauge N SECONDS: until oidc-bff counts N streams; prints how long it took.
wait_gauge() {
  local t0=$SECONDS n
  while :; do
    n=$(gauge)
    [ "$n" = "$1" ] && { echo $((SECONDS - t0)); return; }
    [ $((SECONDS - t0)) -ge "$2" ] && fail "oidc-bff counts $n event streams, expected $1 (waited $2 s)"
    sleep 0.25
  done
}
result() { echo "$*" >> "$work/results"; }
wrk_text() { awk '{printf "%.0f requests/s, p50 %s ms, p99 %s ms, %d non-200 of %d", $1, $2, $3, $4, $5; if ($6) printf " (first: %d)", $6}' <<< "$wrk_out"; }
note() { echo "[$label] $*" >&2; }

for label in $LOGS; do
  port=${PORT[$label]} admin=${ADMIN[$label]} url=http://127.0.0.1:${PORT[$label]}
  cat > "$work/bff-$label.toml" << TOML
[server]
listen = "127.0.0.1:$port"
public_url = "$url"
admin_listen = "127.0.0.1:$admin"
max_event_streams = $MAX_EVENT_STREAMS
max_connections = $MAX_CONNECTIONS
shutdown_timeout_secs = 5
[oidc]
issuer = "$issuer"
client_id = "bench"
client_secret = "bench-secret"
[session]
keys = ["$KEY"]
secure = false
url = "sqlite://$work/s-$label.db?mode=rwc"
[logging]
access_log = $([ "$label" = on ] && echo true || echo false)
TOML
  # Its log (stderr: access lines, at the default level info) goes to a file, as in load.sh.
  taskset -c 0 "$BIN" serve --config "$work/bff-$label.toml" > "$work/bff.log" 2>&1 &
  bff_pid=$!
  for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/readyz")" = 200 ] && break
    kill -0 "$bff_pid" 2> /dev/null || break
    sleep 0.1
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/readyz")" = 200 ] \
    || { tail -5 "$work/bff.log" >&2; fail "oidc-bff ($label) not ready within 20 s"; }

  ask 10 use "$url"
  ask $((60 + SESSIONS)) login main "$SESSIONS" s 0
  result "login $label $(field sessions) $(field seconds)"
  note "$SESSIONS logins in $(field seconds) s ($(field per_second)/s)"
  for round in $(seq 1 "$ROUNDS"); do
    wrk_session
    result "wrk $label $round without $wrk_out"
    note "round $round, no streams: $(wrk_text)"
    sleep 1
    before=$(rss)
    ask $((60 + STREAMS / 20)) open main "$STREAMS" "$PER_SESSION"
    open_s=$(field seconds)
    wait_gauge "$STREAMS" 10 > /dev/null
    sleep 2 # settle
    after=$(rss)
    result "rss $label $round $before $after $STREAMS $open_s"
    note "round $round: $STREAMS streams opened in $open_s s; VmRSS $before -> $after KiB"
    wrk_session
    result "wrk $label $round with $wrk_out"
    note "round $round, $STREAMS streams open: $(wrk_text)"
    ask 10 check main
    if [ "$round" -lt "$ROUNDS" ]; then
      ask 30 close main
      # How long oidc-bff takes to notice that clients went away (the next round must start
      # from zero streams): bounded by one keep-alive interval (25 s) and then some.
      took=$(wait_gauge 0 40)
      result "close $label $round $took $(rss)"
      note "round $round: streams closed; oidc-bff counted 0 after ${took} s"
    fi
  done

  # Fan-out: 1,000 streams of user "fan", beside the STREAMS streams still open.
  ask $((60 + FAN_SESSIONS)) login fan "$FAN_SESSIONS" fan 1
  ask 120 open fan "$FANOUT" "$PER_SESSION"
  wait_gauge $((STREAMS + FANOUT)) 10 > /dev/null
  ask 30 fanout fan fan 5000
  result "fan $label $(field streams) $(field first_ms) $(field p50_ms) $(field p90_ms) $(field max_ms) $(field post_ms) $(field server_closed)"
  note "fan-out to $(field streams) streams: first $(field first_ms) ms, p50 $(field p50_ms) ms, max $(field max_ms) ms (POST answered $(field post_status) in $(field post_ms) ms)"
  ask 10 check main # the other users' streams heard nothing
  wait_gauge "$STREAMS" 10 > /dev/null
  ask 30 close main
  ask 30 close fan
  kill "$bff_pid"
  for _ in $(seq 1 100); do kill -0 "$bff_pid" 2> /dev/null || break; sleep 0.1; done
  kill -0 "$bff_pid" 2> /dev/null && fail "oidc-bff ($label) did not stop within 10 s of SIGTERM"
  wait "$bff_pid" 2> /dev/null || true
  bff_pid=
  errors=$(sed 's/\x1b\[[0-9;]*m//g' "$work/bff.log" | grep -c ' ERROR \|"level":"ERROR"' || true)
  [ "$errors" = 0 ] || { sed 's/\x1b\[[0-9;]*m//g' "$work/bff.log" | grep -m3 ' ERROR \|"level":"ERROR"' >&2; fail "oidc-bff ($label) logged $errors errors"; }
  warnings=$(sed 's/\x1b\[[0-9;]*m//g' "$work/bff.log" | grep -c ' WARN \|"level":"WARN"' || true)
  [ "$warnings" = 0 ] || note "oidc-bff logged $warnings warnings, e.g.: $(sed 's/\x1b\[[0-9;]*m//g' "$work/bff.log" | grep -m1 ' WARN \|"level":"WARN"')"
  if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS" && cp "$work/bff.log" "$KEEP_LOGS/bff-$label.log"; fi
done
if [ -n "${KEEP_LOGS:-}" ]; then cp "$work/holder.log" "$work/idp.log" "$KEEP_LOGS/"; fi

machine="$(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), Linux $(uname -r)"
binary="$BIN_SHOWN ($("$BIN" --version), built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC'))"
python3 - "$machine" "$binary" "$STREAMS" "$DURATION" "$ROUNDS" "$CONNS" "$work/results" << 'PY'
import statistics, sys
machine, binary, streams, duration, rounds, conns, results = sys.argv[1:8]
rows = [l.split() for l in open(results) if l.strip()]
labels = list(dict.fromkeys(r[1] for r in rows))
name = {"on": "access log on (default)", "off": "access log off"}
print(f"\n### Idle event streams (bench/event-streams.sh)\n")
print(f"- machine: {machine}")
print(f"- binary: {binary}")
print(f"- {streams} idle `/session/events` streams ({-(-int(streams) // 8)} sessions, 8 each); cookie mode, "
      f"`[session] url` = SQLite; /session: wrk, {conns} connections, {duration} s per run after a warm-up, "
      f"{rounds} rounds; oidc-bff on CPU 0, wrk and the stream holder on CPU 1\n")
print("| | logins/s | VmRSS no streams | VmRSS with streams | per stream | streams opened in |")
print("|---|---:|---:|---:|---:|---:|")
for l in labels:
    login = next(r for r in rows if r[:2] == ["login", l])
    for r in (r for r in rows if r[:2] == ["rss", l]):
        _, _, rnd, before, after, n, opened = r
        per = (int(after) - int(before)) / int(n)
        rate = f"{int(login[2]) / float(login[3]):.1f}" if rnd == "1" else ""
        print(f"| {name[l]}, round {rnd} | {rate} | {int(before) / 1024:.1f} MiB | {int(after) / 1024:.1f} MiB | "
              f"{per:.1f} KiB | {float(opened):.2f} s |")
print("\n| GET /session | round | requests/s without streams | with | with / without | p99 ms without / with | non-200 |")
print("|---|---:|---:|---:|---:|---:|---:|")
bad_total = 0
for l in labels:
    ratios = []
    wrk = {(r[2], r[3]): r[4:] for r in rows if r[:2] == ["wrk", l]}
    for rnd in sorted({k[0] for k in wrk}, key=int):
        wo, wi = wrk[(rnd, "without")], wrk[(rnd, "with")]
        ratio = float(wi[0]) / float(wo[0])
        ratios.append(ratio)
        bad = int(wo[3]) + int(wi[3])
        bad_total += bad
        first = next((x[5] for x in (wo, wi) if int(x[5])), "")
        bad_s = f"{bad} of {int(wo[4]) + int(wi[4])}" + (f" (first: {first})" if first else "")
        print(f"| {name[l]} | {rnd} | {float(wo[0]):.0f} | {float(wi[0]):.0f} | {ratio:.3f} | {wo[2]} / {wi[2]} | {bad_s} |")
    if len(ratios) > 1:
        print(f"| {name[l]} | median | | | {statistics.median(ratios):.3f} | | |")
closes = [r for r in rows if r[0] == "close"]
if int(rounds) > 1:
    print("\nRound 1 is the cost of a stream; later rounds open their streams into memory the previous "
          "round's freed (RSS does not shrink after a close), so their deltas are smaller.")
if closes:
    print("\nAfter the client closed its streams, oidc-bff's `bff_event_streams` reached 0 within: "
          + ", ".join(f"{r[3]} s ({name[r[1]]}, round {r[2]}; VmRSS then {int(r[4]) / 1024:.1f} MiB)" for r in closes))
print("\n| back-channel logout fan-out (sub only) | streams | first ms | p50 ms | p90 ms | max ms | POST answered after ms | closed by the server |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in (r for r in rows if r[0] == "fan"):
    _, l, n, first, p50, p90, mx, post, closed = r
    print(f"| {name[l]} | {n} | {first} | {p50} | {p90} | {mx} | {post} | {closed} |")
print(f"\nLatency: from just before the POST to each stream's `ended` as read by the Node client; "
      f"all within 5 s is required. The other {streams} streams received nothing.")
if bad_total:
    print(f"\nFAILED: {bad_total} /session responses were not 200 (or were socket errors)")
    sys.exit(1)
PY
