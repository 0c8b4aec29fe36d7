#!/usr/bin/env bash
# The Chromium end-to-end tests (tests/browser, run by scripts/test.sh after cargo test; also
# runnable alone): the real test IdP, the oidc-bff debug binary serving the sample SPA, the
# upstream echo API and Debian's Chromium driven by playwright-core, all on loopback.
#
#   scripts/browser-test.sh                 # run tests/browser/*.test.js
#   scripts/browser-test.sh --screenshots   # regenerate docs/screenshots/*.png instead
#
# Installs what is missing: Debian's `chromium` package (apt-get, when root; a browser is never
# downloaded from anywhere else), tests/idp and tests/browser from their lockfiles (npm ci).
# Without /usr/bin/chromium and no way to install it, prints why and skips (exit 0).
# OIDC_BFF_BIN names another binary (default: target/debug/oidc-bff, built here with cargo
# when missing or older than the sources).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=test
case "${1:-}" in
  "") ;;
  --screenshots) mode=screenshots ;;
  -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "browser-test: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    echo "browser-test: installing Debian's chromium package (apt-get; takes a minute)"
    log=$(mktemp)
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing or stale on a fresh machine: update once, then retry.
    if ! timeout 600 apt-get install -y -qq chromium > "$log" 2>&1; then
      if ! { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq chromium; } > "$log" 2>&1; then
        echo "browser-test: apt-get install chromium failed:" >&2
        tail -20 "$log" >&2
        rm -f "$log"
        exit 1
      fi
    fi
    rm -f "$log"
  else
    echo "browser-test: SKIPPED the browser tests: $chromium is missing and cannot be installed" \
      "here (needs root and apt-get). Install Debian's chromium package to run them."
    exit 0
  fi
fi

command -v node > /dev/null || { echo "browser-test: node (>= 20.19) is required" >&2; exit 1; }
if [ ! -d tests/idp/node_modules/oidc-provider ]; then
  npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
fi
# `cargo test --all-targets` (scripts/test.sh) has just built target/debug/oidc-bff. A
# `cargo build` would build it again without the dev-dependencies' features (minutes on two
# cores), so build only when it is missing or older than the sources.
bin=target/debug/oidc-bff
if [ -z "${OIDC_BFF_BIN:-}" ] &&
  { [ ! -x "$bin" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$bin" -print -quit)" ]; }; then
  cargo build --quiet --bin oidc-bff
fi

if [ "$mode" = screenshots ]; then
  exec timeout 300 node tests/browser/screenshots.js
fi
# One file at a time (each starts its own IdP, oidc-bff and Chromium); bounded as a whole.
exec timeout 600 node --test --test-concurrency=1 --test-timeout=120000 --test-reporter=spec \
  tests/browser/*.test.js
