#!/usr/bin/env bash
# The compose deployment proved without Docker (there is no engine in CI): every petstore
# service of docker-compose.enhanced.yml started as a local process with exactly the
# environment, command, mounted files and port compose gives it, the gateway from
# dev/gateway/nginx.conf (nginx), Prometheus with monitoring/'s jobs and rules, and the
# servers of dev/infra.sh in place of the compose ones; then `dev/demo.sh --target compose all`
# through the gateway, and every dashboard and alert expression evaluated by that Prometheus.
# A misspelled variable, config key, port or route in the compose file fails it.
#
#   dev/compose-smoke.sh        (logs in target/compose-smoke/)
#
# Details in dev/compose_smoke.py.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[compose-smoke] %s\n' "$*" >&2; }
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }

dev/infra.sh
command -v docker-compose >/dev/null || { log "installing docker-compose (to resolve the file)"; apt_install docker-compose; }
command -v nginx >/dev/null || { log "installing nginx (the gateway)"; apt_install nginx-light || apt_install nginx; }
python3 -c 'import yaml' 2>/dev/null || { log "installing python3-yaml"; apt_install python3-yaml; }
command -v prometheus >/dev/null || { log "no prometheus binary (dev/infra.sh installs the package)"; exit 1; }
# Topics as compose's fresh Kafka has them: none left over from the tests.
dev/infra.sh restart-broker
log "building the petstore binary"
cargo build -q -p petstore
exec python3 dev/compose_smoke.py
