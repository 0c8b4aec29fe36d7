#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable on a shared VM whose
# speed drifts (bench/load.sh's ratios move by ±10% between runs here), so a few per cent of
# change in the hot paths shows up. For GET /session and for a proxied GET /api/x (the session
# added, an upstream answering 117 bytes), oidc-bff (release build) runs under callgrind twice
# per target, serving N1 and then N2 requests on one keep-alive connection after a real login
# at the test IdP; (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one request,
# start-up, login and shutdown cancelling out. Access log off unless ACCESS_LOG=true.
#
#   bench/instructions.sh            # prints "target instructions/request"
#
# Environment: N1 (200), N2 (1200), ACCESS_LOG (false), TARGETS ("session proxy"), KEEP (a
# directory to keep the callgrind files in, for callgrind_annotate).
# Needs valgrind, node, python3. Loopback only; a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-200}
N2=${N2:-1200}
ACCESS_LOG=${ACCESS_LOG:-false}
TARGETS=${TARGETS:-session proxy}
for tool in valgrind node python3; do
  command -v "$tool" > /dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp --no-audit --no-fund
cargo build --release --quiet
BIN=target/release/oidc-bff

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); BFF=$(free_port)

# The upstream: 117 bytes of JSON to every GET, HTTP/1.1 keep-alive.
cat > "$work/upstream.py" << 'PY'
import http.server, sys
BODY = b'{"authenticated":true,"sub":"bench","claims":{"name":"Bench","email":"bench@example.test"},"expires_at":1893456000}'
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$work/upstream.py" "$UP" &
pids+=($!)

idp_config="{\"clients\":[{\"client_id\":\"bench\",\"client_secret\":\"bench-secret\",
  \"token_endpoint_auth_method\":\"client_secret_basic\",\"redirect_uris\":[\"http://127.0.0.1:$BFF/callback\"]}]}"
IDP_CONFIG="$idp_config" node tests/idp/server.js > "$work/idp.out" 2> "$work/idp.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '"ready":true' "$work/idp.out" 2> /dev/null && break; sleep 0.1; done
issuer=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["issuer"])' "$work/idp.out")
cat > "$work/bff.toml" << TOML
[server]
listen = "127.0.0.1:$BFF"
public_url = "http://127.0.0.1:$BFF"
[oidc]
issuer = "$issuer"
client_id = "bench"
client_secret = "bench-secret"
[session]
keys = ["$($BIN generate-key)"]
secure = false
[logging]
access_log = $ACCESS_LOG
level = "${LEVEL:-warn}"
[[routes]]
prefix = "/api"
upstream = "http://127.0.0.1:$UP"
TOML

# The client: N requests on one keep-alive connection, each answered 200.
cat > "$work/client.py" << 'PY'
import http.client, sys
port, path, cookie, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", path, headers={"X-CSRF": "1", "Cookie": cookie})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY

# instructions TARGET PATH N: the whole process's instruction count serving N requests.
instructions() {
  local out="$work/cg.$1.$3"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" serve --config "$work/bff.toml" 2> "$work/valgrind.log" &
  local pid=$!
  for _ in $(seq 1 600); do
    python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$BFF/readyz')" 2> /dev/null && break
    sleep 0.1
  done
  local cookie
  cookie=$(python3 bench/login.py "http://127.0.0.1:$BFF")
  python3 "$work/client.py" "$BFF" "$2" "$cookie" "$3"
  kill -TERM "$pid"
  wait "$pid" || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$out" "$KEEP/"; fi
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

for t in $TARGETS; do
  case $t in
    session) path=/session ;;
    proxy) path=/api/x ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
  a=$(instructions "$t" "$path" "$N1")
  b=$(instructions "$t" "$path" "$N2")
  echo "$t $(( (b - a) / (N2 - N1) )) instructions/request (N1=$N1: $a, N2=$N2: $b)"
done
