#!/usr/bin/env bash
# Idle RSS of one or more oidc-bff binaries under the same configuration: each started ROUNDS
# times (5), alternated, pinned to CPU 0, read 1 s after /readyz answers; then where the
# resident pages are (smaps: the binary's own mapped pages, libc, the heap) for the last start.
# Loopback only; the test IdP (tests/idp) is started for discovery.
#   bench/idle-rss.sh target/release/oidc-bff /tmp/older-oidc-bff
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bench/idle-rss.sh BINARY..." >&2; exit 2; }
ROUNDS=${ROUNDS:-5}
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
IDP_CONFIG='{"clients":[{"client_id":"bench","client_secret":"bench-secret","redirect_uris":["http://127.0.0.1:1/callback"]}]}' \
  node tests/idp/server.js > "$work/idp.out" 2> /dev/null &
pids+=($!)
for _ in $(seq 1 100); do grep -q '"ready":true' "$work/idp.out" 2> /dev/null && break; sleep 0.1; done
issuer=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["issuer"])' "$work/idp.out")
cat > "$work/bff.toml" << TOML
[server]
listen = "127.0.0.1:$port"
public_url = "http://127.0.0.1:$port"
[oidc]
issuer = "$issuer"
client_id = "bench"
client_secret = "bench-secret"
[session]
keys = ["QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="]
secure = false
[logging]
access_log = false
level = "warn"
TOML
for _ in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    taskset -c 0 "$bin" serve --config "$work/bff.toml" > /dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/readyz')" 2> /dev/null && break
      sleep 0.05
    done
    sleep 1
    echo "$bin idle VmRSS $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") KiB"
    awk '/^[0-9a-f]+-[0-9a-f]+ / {n = ($6 == "" ? "[anon]" : $6)} /^Rss:/ {r[n] += $2}
      END {for (k in r) if (r[k] >= 64) printf "    %6d KiB %s\n", r[k], k}' "/proc/$pid/smaps" | sort -rn > "$work/where.$pid"
    kill "$pid"; wait "$pid" 2> /dev/null || true
    cp "$work/where.$pid" "$work/where.$(basename "$bin")"
  done
done
for bin in "$@"; do echo "$bin, last start, resident by mapping:"; cat "$work/where.$(basename "$bin")"; done
