#!/usr/bin/env bash
# README's first command: two demo IdPs (tests/idp, oidc-provider) — the company's on
# 127.0.0.1:9000 and the partners' on 127.0.0.1:9002, each with its own keys —, the upstream
# echo API (examples/echo-api) on 127.0.0.1:9001, and oidc-bff with config/demo.toml on
# 127.0.0.1:8080 serving the sample SPA (examples/spa) and proxying /api to the echo API.
# Ctrl-C stops them all. Loopback only.
#
# SPA-mode login (the IdP returns to the SPA page /signed-in, which posts to /login/end):
#   BFF_OIDC__REDIRECT_URI=http://127.0.0.1:8080/signed-in scripts/demo.sh
# (that variable is [oidc]'s, the company IdP's; the partners' logins keep /callback).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d tests/idp/node_modules/oidc-provider ]; then
  npm ci --prefix tests/idp --no-audit --no-fund
fi
cargo build --quiet

mkdir -p .demo
idp_config='{"port":9000,"clients":[{"client_id":"demo-spa","client_secret":"demo-secret-not-for-production",
  "token_endpoint_auth_method":"client_secret_basic",
  "redirect_uris":["http://127.0.0.1:8080/callback","http://127.0.0.1:8080/signed-in"],
  "post_logout_redirect_uris":["http://127.0.0.1:8080/"]}]}'
# The [[providers]] entry "partners" of config/demo.toml: another issuer (envId), another client.
partners_config='{"port":9002,"envId":"PARTNERS","clients":[{"client_id":"demo-partners",
  "client_secret":"demo-partners-secret-not-for-production",
  "token_endpoint_auth_method":"client_secret_basic",
  "redirect_uris":["http://127.0.0.1:8080/callback","http://127.0.0.1:8080/signed-in"],
  "post_logout_redirect_uris":["http://127.0.0.1:8080/"]}]}'

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

# Both IdPs start at once (key generation dominates their start-up); oidc-bff needs both.
# A background job's stdin is /dev/null, which server.js ignores: it lives until killed.
rm -f .demo/idp.out .demo/partners-idp.out
IDP_CONFIG="$idp_config" node tests/idp/server.js > .demo/idp.out 2> .demo/idp.log &
pids+=($!)
IDP_CONFIG="$partners_config" node tests/idp/server.js > .demo/partners-idp.out 2> .demo/partners-idp.log &
pids+=($!)
for idp in idp partners-idp; do
  for _ in $(seq 1 100); do
    grep -q '"ready":true' ".demo/$idp.out" 2>/dev/null && break
    sleep 0.1
  done
  grep -q '"ready":true' ".demo/$idp.out" ||
    { echo "the demo IdP did not start; see .demo/$idp.log" >&2; exit 1; }
done

node examples/echo-api/echo.mjs 9001 &
pids+=($!)

target/debug/oidc-bff serve --config config/demo.toml &
pids+=($!)

for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break
  sleep 0.1
done
cat <<MSG

  oidc-bff demo is running.
  Open  http://127.0.0.1:8080/  and pick an IdP: "Log in with default" (the company's,
  127.0.0.1:9000) or "Log in with partners" (the partners', 127.0.0.1:9002). Any user name
  works at either; the page shows which one you used.
  "Call API" goes through oidc-bff to the echo API on 127.0.0.1:9001.
  Ctrl-C stops it.

MSG
wait -n "${pids[@]}"
