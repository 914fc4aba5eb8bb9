#!/usr/bin/env bash
# API fuzzing: schemathesis generates requests (valid and invalid) from the all-in-one pet
# store's own /openapi.json and fails on any 5xx, on a status the description does not list,
# on a body, content type or header that does not match it, on a protected route that answers
# without the token, on an undocumented method that is not refused with 405, and on a created
# resource that cannot be read back. It runs once as a customer and once as an admin, against
# a fresh in-memory pet store on a free loopback port, and exits non-zero on any failure.
#
#   dev/fuzz-api.sh                          # build, start, fuzz, stop
#   FUZZ_MAX_EXAMPLES=500 dev/fuzz-api.sh    # more cases per operation (default 100)
#   FUZZ_SEED=7 dev/fuzz-api.sh              # another seed (default: a fixed one, so CI repeats)
#   FUZZ_CHECKS=all dev/fuzz-api.sh          # every schemathesis check, e.g. whether the schemas'
#                                            # constraints match what the handlers accept
#
# schemathesis lives in a virtualenv in $PETSTORE_INFRA_DIR (default ~/.cache/petstore-infra),
# beside the one dev/infra.sh keeps for its own Python tools. Reports (JUnit, and the server's
# log) land in target/fuzz-api/.
set -euo pipefail
cd "$(dirname "$0")/.."

INFRA_DIR="${PETSTORE_INFRA_DIR:-$HOME/.cache/petstore-infra}"
SCHEMATHESIS_VERSION="4.32.5"
VENV="$INFRA_DIR/fuzz-venv"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
SEED="${FUZZ_SEED:-20261207}"
CHECKS="${FUZZ_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth,unsupported_method,use_after_free,ensure_resource_availability}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="$TARGET_DIR/fuzz-api"

log() { printf '[fuzz] %s\n' "$*" >&2; }

ensure_schemathesis() {
  if [ -x "$VENV/bin/schemathesis" ] && "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    return
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  mkdir -p "$INFRA_DIR"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

# shellcheck source=dev/all-in-one.sh
. dev/all-in-one.sh

ensure_schemathesis
log "building the petstore binary"
cargo build -q -p petstore
BIN="$TARGET_DIR/debug/petstore"

rm -rf "$OUT" && mkdir -p "$OUT"
PORT=$(free_port)
CONFIG="$OUT/config.yaml"
# Memory everything (the embedded defaults), quiet logs, and quotas no fuzz run reaches: a
# 429 is a documented answer, but one that would hide what the route does.
cat >"$CONFIG" <<'YAML'
log: { format: json, level: "warn" }
storage: memory
rate_limits:
  authenticated: { requests: 100000, per: 1s, burst: 100000 }
  anonymous: { requests: 100000, per: 1s, burst: 100000 }
  routes:
    "POST /orders": { requests: 100000, per: 1s, burst: 100000 }
YAML
run_petstore() { env -u PETSTORE_ENV PETSTORE_CONFIG="$CONFIG" PETSTORE__HTTP__PORT="$PORT" "$BIN" "$@"; }

log "starting the all-in-one pet store on 127.0.0.1:$PORT"
start_petstore "$OUT/server.log" run_petstore
trap stop_petstore EXIT

BASE="http://127.0.0.1:$PORT"
wait_for_petstore "$BASE/health"

# Half of the generated pet ids are real ones from the seed catalog, so orders get placed
# and the stateful phase follows their links (order, events, status, saga) to real data.
SCHEMATHESIS_CONFIG="$OUT/schemathesis.toml"
# Its cache (the failures of earlier runs, tried first) stays under target/, out of the tree.
python3 - "$SCHEMATHESIS_CONFIG" "$TARGET_DIR/schemathesis-cache" <<'PY'
import json, sys
pets = [p["pet_id"] for p in json.load(open("db/inventory/seed_pets.json"))]
with open(sys.argv[1], "w") as f:
    f.write("[cache]\ndirectory = %s\n\n" % json.dumps(sys.argv[2]))
    f.write("[dictionaries.pets]\nvalues = %s\n\n" % json.dumps(pets))
    f.write('[parameters]\n"body.pet_id" = { dictionary = "pets", probability = 0.5 }\n')
    f.write('"path.pet_id" = { dictionary = "pets", probability = 0.5 }\n\n')
    f.write("[phases.stateful]\nmax-steps = 10\n")
PY

failed=()
for role in customer admin; do
  token=$(run_petstore token --sub "fuzz-$role" --role "$role" --ttl 1h)
  log "schemathesis as fuzz-$role (role $role), at most $MAX_EXAMPLES cases per operation"
  if ! "$VENV/bin/schemathesis" --config-file "$SCHEMATHESIS_CONFIG" run "$BASE/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks "$CHECKS" \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 2 \
    --request-timeout 10 \
    --suppress-health-check all \
    --report junit --report-junit-path "$OUT/$role.junit.xml"; then
    failed+=("$role")
  fi
done

if ! kill -0 "$SERVER" 2>/dev/null; then
  log "the pet store died during the run; its log is in $OUT/server.log"
  failed+=("server")
fi
if grep -q '"level":"ERROR"' "$OUT/server.log"; then
  log "the pet store logged errors (in $OUT/server.log):"
  grep '"level":"ERROR"' "$OUT/server.log" | awk 'NR <= 20' >&2
fi
if (( ${#failed[@]} )); then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "no failures"
