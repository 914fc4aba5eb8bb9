#!/usr/bin/env bash
# The whole test suite: makes sure PostgreSQL, Redis and the Kafka-protocol broker are up
# (dev/infra.sh), then runs every test of the workspace with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/infra.sh
eval "$(dev/infra.sh env)"
exec cargo nextest run --workspace --all-features --no-tests=fail "$@"
