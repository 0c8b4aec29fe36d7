#!/usr/bin/env bash
# The supply-chain check of CI (.ci/run): cargo-deny, pinned, over deny.toml — advisories,
# bans (duplicate majors), licences and sources of the whole dependency tree.
#
# Advisories come from an offline snapshot of the RustSec database (this machine and CI reach
# crates.io but not GitHub): BFF_ADVISORY_DB, else ../shared/advisory-db, else
# /work/shared/advisory-db, else the copy vendored in supply-chain/. Without one the check fails. The snapshot is laid out
# where cargo-deny looks for the default database (as a git checkout dated by its SNAPSHOT.md),
# and cargo-deny runs with --offline: it never fetches anything. Any advisory in the snapshot
# that affects a crate in Cargo.lock and is not accepted in deny.toml (with its reason) fails.
set -euo pipefail
cd "$(dirname "$0")/.."

version=0.20.2
tools=target/tools
deny="$tools/bin/cargo-deny"
if [ "$("$deny" --version 2>/dev/null)" != "cargo-deny $version" ]; then
  echo "supply-chain: installing cargo-deny $version from crates.io (--locked)"
  cargo install cargo-deny --version "$version" --locked --root "$tools" --quiet
fi

db=""
for candidate in "${BFF_ADVISORY_DB:-}" ../shared/advisory-db /work/shared/advisory-db; do
  if [ -n "$candidate" ] && [ -d "$candidate/crates" ]; then
    db=$candidate
    break
  fi
done
if [ -z "$db" ]; then
  vendored=$(ls supply-chain/rustsec-advisory-db-*.tar.gz 2> /dev/null | sort | tail -n 1 || true)
  if [ -n "$vendored" ]; then
    db=target/advisory-db-vendored
    rm -rf "$db"
    mkdir -p "$db"
    tar xzf "$vendored" -C "$db"
    echo "supply-chain: no shared snapshot; using the vendored $vendored"
  fi
fi
if [ -z "$db" ]; then
  echo "supply-chain: no RustSec advisory database snapshot found (set BFF_ADVISORY_DB to one);" \
    "cannot check advisories: failing" >&2
  exit 1
fi

count=$(find "$db/crates" -name 'RUSTSEC-*.md' | wc -l)
if [ "$count" -lt 500 ]; then
  echo "supply-chain: $db holds $count advisories, not a RustSec database: failing" >&2
  exit 1
fi
# When the snapshot was taken: SNAPSHOT.md's date, else its newest advisory's.
taken=$(grep -ohE '[0-9]{4}-[0-9]{2}-[0-9]{2}' "$db/SNAPSHOT.md" 2> /dev/null | head -n 1 || true)
if [ -z "$taken" ]; then
  taken=$(grep -rhoE '^date = "[0-9]{4}-[0-9]{2}-[0-9]{2}"' "$db/crates" | grep -oE '[0-9-]{10}' | sort | tail -n 1 || true)
fi
if [ -z "$taken" ]; then
  echo "supply-chain: cannot tell when $db was taken: failing" >&2
  exit 1
fi
age_days=$((($(date +%s) - $(date -d "$taken" +%s)) / 86400))

# cargo-deny $version's directory for https://github.com/rustsec/advisory-db under db-path, as
# a git checkout whose last fetch (.git/FETCH_HEAD's time) is the snapshot's date: cargo-deny
# then refuses it once it is older than deny.toml's maximum-db-staleness.
checkout=target/advisory-dbs/advisory-db-3157b0e258782691
rm -rf "$checkout"
mkdir -p "$checkout"
cp -R "$db/." "$checkout/"
(
  cd "$checkout"
  git init -q
  git add -A
  GIT_AUTHOR_DATE="${taken}T00:00:00Z" GIT_COMMITTER_DATE="${taken}T00:00:00Z" \
    git -c user.name=advisory-db-snapshot -c user.email=snapshot@localhost -c commit.gpgsign=false \
    commit -q -m "RustSec advisory database snapshot ($db)"
  git rev-parse HEAD > .git/FETCH_HEAD
  touch -d "${taken}T00:00:00Z" .git/FETCH_HEAD
)
echo "supply-chain: advisories from $db: $count advisories, taken $taken ($age_days days ago)"
if [ "$age_days" -gt 90 ]; then
  echo "supply-chain: WARNING: the advisory snapshot is $age_days days old; advisories published since" \
    "are not checked. Refresh it when a newer copy can be had (deny.toml refuses it past 365 days)."
fi

# Every crate's sources (optional ones included), so that cargo-deny can run --offline.
cargo fetch --locked --quiet
"$deny" --offline --locked --log-level error check
