#!/usr/bin/env bash
# Memory under refresh load (docs/benchmarks.md, "Refresh cache memory"): REFRESHES (50,000)
# refreshes of PingOne-sized tokens (TOKEN_BYTES, 3 KB access and refresh tokens) within
# DURATION (600 s), with refresh_grace_secs = 60 and no store, so that every refresh result sits in
# the in-memory refresh cache for a grace period ([session] cache_max_bytes, 16 MiB by default).
# oidc-bff runs as users keep it (release build, access log on, level info, cookie mode).
#
# Prints oidc-bff's RSS: idle (ready, before any login), the peak during the load, and one grace
# period (+5 s) after the last refresh, each against idle; and the cache's evictions and bytes
# from /metrics. The IdP is bench/refresh-idp.mjs (3 KB tokens, 1 s access-token lifetime); the
# client bench/refresh-driver.mjs. oidc-bff on CPU 0, the rest on CPU 1. Loopback only; bounded
# by DURATION plus a few minutes.
#
# Environment: REFRESHES (50000), DURATION (600), SESSIONS (150), RATE (85 requests/s),
# TOKEN_BYTES (3072), CACHE_MAX_BYTES (16777216), GRACE (60), PROFILE (release), HOLD (seconds to
# keep oidc-bff up afterwards, for inspection).
set -euo pipefail
cd "$(dirname "$0")/.."

export REFRESHES=${REFRESHES:-50000} DURATION=${DURATION:-600} SESSIONS=${SESSIONS:-150} RATE=${RATE:-85}
export TOKEN_BYTES=${TOKEN_BYTES:-3072}
CACHE_MAX_BYTES=${CACHE_MAX_BYTES:-16777216}
GRACE=${GRACE:-60}
PROFILE=${PROFILE:-release}
for tool in node python3 taskset curl; do
  command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [ "$PROFILE" = release ]; then
  cargo build --release --quiet; BIN=target/release/oidc-bff
else
  cargo build --quiet; BIN=target/debug/oidc-bff
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BFF=$(free_port); ADMIN=$(free_port)

taskset -c 1 node bench/refresh-idp.mjs > "$work/idp.ready" 2> "$work/idp.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/idp.ready" ] && break; sleep 0.1; done
issuer=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuer"])' "$work/idp.ready")
idp_origin=${issuer%/ENV/as}

cat > "$work/bff.toml" << TOML
[server]
listen = "127.0.0.1:$BFF"
public_url = "http://127.0.0.1:$BFF"
admin_listen = "127.0.0.1:$ADMIN"
[oidc]
issuer = "$issuer"
client_id = "bench"
client_secret = "bench-secret-0123456789"
refresh_grace_secs = $GRACE
[session]
keys = ["$("$BIN" generate-key)"]
cache_max_bytes = $CACHE_MAX_BYTES
TOML
taskset -c 0 "$BIN" serve --config "$work/bff.toml" 2> "$work/bff.log" &
BFF_PID=$!
pids+=($BFF_PID)
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$BFF/readyz" > /dev/null && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$BFF_PID/status"; }
# The heap and other anonymous memory, and the binary's own pages (clean, file-backed: the code
# a load has run stays paged in, and the kernel can drop it at any time).
anon_file() { awk '/^RssAnon/ {a = $2} /^RssFile/ {f = $2} END {printf "anonymous %.1f MiB, file-backed %.1f MiB", a / 1024, f / 1024}' "/proc/$BFF_PID/status"; }
metric() { curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
sleep 3
idle=$(rss)
idle_parts=$(anon_file)

# Sample RSS every second while the load runs.
( while kill -0 "$BFF_PID" 2> /dev/null; do rss >> "$work/rss"; sleep 1; done ) &
pids+=($!)
taskset -c 1 node bench/refresh-driver.mjs "http://127.0.0.1:$BFF" "$idp_origin" > "$work/driver.json"
peak=$(sort -n "$work/rss" | tail -n 1)
at_end=$(rss)
cache_at_end=$(metric bff_refresh_cache_bytes)
evictions=$(metric bff_refresh_cache_evictions_total)
sleep $((GRACE + 5))
after=$(rss)
after_parts=$(anon_file)
cache_after=$(metric bff_refresh_cache_bytes)

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
echo "machine: $(nproc) CPU, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $(uname -sr)"
echo "load: $(cat "$work/driver.json")"
echo "tokens: ${TOKEN_BYTES} B access + ${TOKEN_BYTES} B refresh; refresh_grace_secs = $GRACE; cache_max_bytes = $CACHE_MAX_BYTES"
echo "RSS idle:                 $(mib "$idle")  ($idle_parts)"
echo "RSS peak during the load: $(mib "$peak")  (+$(mib $((peak - idle))) above idle)"
echo "RSS at the last refresh:  $(mib "$at_end")  (cache ${cache_at_end:-?} B, ${evictions:-0} entries evicted)"
echo "RSS one grace period on:  $(mib "$after")  (+$(mib $((after - idle))) above idle; cache ${cache_after:-?} B)"
echo "                          ($after_parts)"
errors=$(grep -c '"level":"ERROR"\|ERROR' "$work/bff.log" || true)
echo "oidc-bff log lines at ERROR: $errors"
if [ -n "${HOLD:-}" ]; then # inspection: keep oidc-bff up (at most 600 s)
  echo "holding oidc-bff (pid $BFF_PID) for ${HOLD}s"
  sleep "$((HOLD > 600 ? 600 : HOLD))"
fi
