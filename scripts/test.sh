#!/usr/bin/env bash
# README's test command: installs the pinned test IdP (tests/idp, npm ci from the lockfile) if
# needed, then runs every test: the test IdP's own smoke test (every flow the other tests rely
# on, token exchange, PAR and DPoP included), the echo API's DPoP self-test
# (examples/echo-api/check.mjs), cargo test, then the Chromium end-to-end tests
# (scripts/browser-test.sh, which installs Debian's chromium and tests/browser's pinned
# playwright-core when missing, or says why it skips). PostgreSQL/Redis tests skip with
# a printed reason where those services do not answer on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d tests/idp/node_modules/oidc-provider ]; then
  npm ci --prefix tests/idp --no-audit --no-fund
fi
timeout 120 node tests/idp/smoke.js > /dev/null
timeout 60 node examples/echo-api/check.mjs > /dev/null
cargo test --all-targets "$@"
scripts/browser-test.sh
