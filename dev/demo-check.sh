#!/usr/bin/env bash
# Runs the whole guided tour (`dev/demo.sh all`) against a fresh all-in-one pet store, as CI
# does: the binary built as a user builds it, PostgreSQL storage in a database of its own (so
# the `data` scenario rebuilds the order projection for real), every other setting the
# embedded default. Exits non-zero when a check of the tour fails or the pet store dies. Its
# output is the tour, then the errors the pet store logged (the drills make some on purpose:
# a dead-lettered message is an error); the server's log lands in target/demo/server.log.
#
#   dev/demo-check.sh
#
# Needs PostgreSQL (DATABASE_URL, default the local server of dev/infra.sh), curl and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="$TARGET_DIR/demo"
SERVER_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

log() { printf '[demo] %s\n' "$*" >&2; }

# shellcheck source=dev/all-in-one.sh
. dev/all-in-one.sh

log "building the petstore binary"
cargo build -q -p petstore
BIN="$TARGET_DIR/debug/petstore"

rm -rf "$OUT" && mkdir -p "$OUT"
DB="demo_$(date +%s)_$$"
psql -q "$SERVER_URL" -c "CREATE DATABASE $DB" >/dev/null
export PETSTORE__STORAGE=postgres
export PETSTORE__DATABASE__URL="${SERVER_URL%/*}/$DB"
export PETSTORE__HTTP__PORT
PETSTORE__HTTP__PORT=$(free_port)
unset PETSTORE_ENV PETSTORE_CONFIG

log "starting the all-in-one pet store on 127.0.0.1:$PETSTORE__HTTP__PORT (database $DB)"
start_petstore "$OUT/server.log" "$BIN"
finish() {
  stop_petstore
  psql -q "$SERVER_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
}
trap finish EXIT
BASE="http://127.0.0.1:$PETSTORE__HTTP__PORT"
wait_for_petstore "$BASE/ready"

status=0
PETSTORE_BIN="$BIN" PETSTORE_LOG="$OUT/server.log" dev/demo.sh --base-url "$BASE" --target all-in-one all || status=$?
if ! kill -0 "$SERVER" 2>/dev/null; then
  log "the pet store died during the tour; its log is in $OUT/server.log"
  status=1
fi
if grep -q ' ERROR ' "$OUT/server.log"; then
  log "errors the pet store logged during the tour (in $OUT/server.log):"
  grep ' ERROR ' "$OUT/server.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200 | awk 'NR <= 10' >&2
fi
exit "$status"
