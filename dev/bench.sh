#!/usr/bin/env bash
# The pet store's benchmarks: the distributed topology on loopback (six services behind the
# gateway, PostgreSQL, Redis, the broker), idle cost, one saga alone, sagas at a rate for a
# duration, catalog reads; prints BENCHMARKS.md rows. See dev/bench.py for what each measures.
#
#   dev/bench.sh                                  # saga on NATS, 500/s for 60 s
#   dev/bench.sh --broker kafka --rate 300 --duration 30s
#   dev/bench.sh --scenarios idle,single          # just those
#   dev/bench.sh --bin /tmp/old/target/release    # binaries of another commit (no build)
set -euo pipefail
cd "$(dirname "$0")/.."
dev/infra.sh >&2
eval "$(dev/infra.sh env)"
if ! command -v nginx >/dev/null; then
  echo "[bench] installing nginx (the gateway)" >&2
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && { apt-get install -y -qq nginx-light || apt-get install -y -qq nginx; }; } >/dev/null
fi
if [[ " $* " != *" --bin "* ]]; then
  cargo build --release -p petstore -p petstore-load >&2
fi
exec python3 dev/bench.py "$@"
