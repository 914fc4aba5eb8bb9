#!/usr/bin/env bash
# A guided tour of the pet store, against a running deployment. Every step checks what it
# shows; the tour ends non-zero when a check fails.
#
#   dev/demo.sh saga        an order through all five saga steps, with its timeline; a declined
#                           card compensated in reverse; two customers racing for one pet; a
#                           retried order answered once (Idempotency-Key)
#   dev/demo.sh observ      the order's trace id (and its Jaeger link), metric deltas from
#                           /metrics, its log lines found by correlation id
#   dev/demo.sh resilience  fault flags make payments fail: sagas compensate, the provider's
#                           breaker opens, then half-opens and closes; a dead letter replayed
#   dev/demo.sh security    401/403/404/429 with their reasons, bad input refused, and the
#                           audit trail of it
#   dev/demo.sh flags       flags toggled live: caching, premium filters, express orders, and
#                           the pricing_experiment A/B split over many customers
#   dev/demo.sh data        cache MISS, HIT and BYPASS; an order's event history; audit rows;
#                           the order projection rebuilt from the events
#   dev/demo.sh all         every scenario above, in that order
#   dev/demo.sh             a menu (when run in a terminal)
#
# Options: --target all-in-one|compose (default: detected: the all-in-one serves /metrics on its
# single port, the compose gateway does not), --base-url URL (or BASE_URL; default
# http://localhost:8080). Needs curl and jq.
#
# Tokens come from `petstore token` (PETSTORE_BIN, else target/release or target/debug, else
# `cargo run`), which signs with the configuration the pet store uses (PETSTORE_CONFIG and
# PETSTORE__* are passed through). Against compose, METRICS_URLS (default: the six services'
# published ports) is where /metrics and /ready are read; PETSTORE_LOG names a file with the
# pet store's JSON or text logs for `observ` (compose: `docker compose logs` when docker is
# there); REBUILD_CMD is how `data` rebuilds the projection (default: `petstore
# rebuild-projections` with the same configuration when the storage is PostgreSQL).
set -euo pipefail

BASE_URL="${BASE_URL:-http://localhost:8080}"
TARGET="${TARGET:-}"
SCENARIO=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) TARGET=$2; shift 2 ;;
    --target=*) TARGET=${1#--target=}; shift ;;
    --base-url) BASE_URL=$2; shift 2 ;;
    --base-url=*) BASE_URL=${1#--base-url=}; shift ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) SCENARIO=$1; shift ;;
  esac
done
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "demo.sh needs $tool (e.g. apt-get install $tool)" >&2; exit 1; }
done

if [ -t 1 ]; then B=$'\033[1m'; G=$'\033[32m'; R=$'\033[31m'; D=$'\033[2m'; N=$'\033[0m'; else B= G= R= D= N=; fi
bold() { printf '\n%s%s%s\n' "$B" "$*" "$N"; }
say() { printf '  %s\n' "$*"; }
note() { printf '  %s%s%s\n' "$D" "$*" "$N"; }

FAILURES=0
CHECKS=0
check() { # description actual expected: one line, ✓ or ✗
  CHECKS=$((CHECKS + 1))
  if [ "$2" = "$3" ]; then printf '  %s✓%s %s\n' "$G" "$N" "$1"
  else FAILURES=$((FAILURES + 1)); printf '  %s✗ %s: got `%s`, expected `%s`%s\n' "$R" "$1" "$2" "$3" "$N"; fi
}
check_that() { # description command…: ✓ when the command succeeds
  local what=$1; shift
  CHECKS=$((CHECKS + 1))
  if "$@"; then printf '  %s✓%s %s\n' "$G" "$N" "$what"
  else FAILURES=$((FAILURES + 1)); printf '  %s✗ %s%s\n' "$R" "$what" "$N"; fi
}
fail() { echo "${R}demo.sh: $*${N}" >&2; exit 1; }

WORK=$(mktemp -d)
DEMO_DIR=$WORK
TOKENS="$DEMO_DIR/tokens"   # fixed: the race's racers get a WORK of their own
mkdir -p "$TOKENS"
cleanup_flags=()
cleanup() {
  # A scenario that stopped halfway must not leave a drill on.
  local flag
  for flag in "${cleanup_flags[@]}"; do
    api DELETE "/admin/flags/$flag" admin:ops >/dev/null 2>&1 || true
  done
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT

petstore_cli() {
  if [ -n "${PETSTORE_BIN:-}" ]; then "$PETSTORE_BIN" "$@"
  elif [ -x target/release/petstore ]; then target/release/petstore "$@"
  elif [ -x target/debug/petstore ]; then target/debug/petstore "$@"
  else cargo run -q -p petstore -- "$@"; fi
}

token() { # subject [role] [tier] → a bearer token (cached for the run)
  local subject=$1 role=${2:-customer} tier=${3:-} file="$TOKENS/$1-${2:-customer}-${3:-}"
  if [ ! -s "$file" ]; then
    if [ -n "$tier" ]; then petstore_cli token --sub "$subject" --role "$role" --tier "$tier" >"$file"
    else petstore_cli token --sub "$subject" --role "$role" >"$file"; fi
  fi
  cat "$file"
}

api() { # method path [caller] [body] → prints the body; `status` and `header NAME` read the rest
  # caller: a customer id (a customer token), `admin:<name>`, `premium:<name>` (a customer
  # token with tier premium), or `raw:<Authorization value>`.
  local method=$1 path=$2 caller=${3:-} body=${4:-}
  local args=(-sS -X "$method" -D "$WORK/headers" -o "$WORK/body" -w '%{http_code}' -H 'accept: application/json')
  case "$caller" in
    "") ;;
    raw:*) args+=(-H "authorization: ${caller#raw:}") ;;
    admin:*) args+=(-H "authorization: Bearer $(token "${caller#admin:}" admin)") ;;
    premium:*) args+=(-H "authorization: Bearer $(token "${caller#premium:}" customer premium)") ;;
    *) args+=(-H "authorization: Bearer $(token "$caller")") ;;
  esac
  [ -n "${IDEMPOTENCY_KEY:-}" ] && args+=(-H "idempotency-key: $IDEMPOTENCY_KEY")
  [ -n "$body" ] && args+=(-H 'content-type: application/json' --data "$body")
  curl "${args[@]}" "$BASE_URL$path" >"$WORK/status" || fail "cannot reach $BASE_URL — is the pet store running?"
  cat "$WORK/body"
}

status() { cat "$WORK/status"; }

header() { tr -d '\r' <"$WORK/headers" | awk -v h="$(echo "$1" | tr 'A-Z' 'a-z')" 'tolower($1) == h":" {print $2}'; }

# --- where things are --------------------------------------------------------------------

detect_target() {
  [ -n "$TARGET" ] && return
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE_URL/metrics" || true)
  case "$code" in
    200) TARGET=all-in-one ;;
    404) TARGET=compose ;;
    000) fail "cannot reach $BASE_URL — start the pet store (cargo run -p petstore) or the compose stack" ;;
    *) fail "$BASE_URL/metrics answered $code: pass --target all-in-one or --target compose" ;;
  esac
}

ops_urls() { # where /metrics and /ready are read
  if [ "$TARGET" = all-in-one ]; then echo "$BASE_URL"
  else echo "${METRICS_URLS:-http://localhost:8081 http://localhost:8082 http://localhost:8083 http://localhost:8084 http://localhost:8085 http://localhost:8086}"; fi
}

service_url() { # service → its own base URL (for /ready)
  if [ "$TARGET" = all-in-one ]; then echo "$BASE_URL"; return; fi
  local port
  case "$1" in order) port=8081 ;; payment) port=8082 ;; delivery) port=8083 ;; inventory) port=8084 ;;
    notification) port=8085 ;; orchestrator) port=8086 ;; esac
  local url
  for url in $(ops_urls); do case "$url" in *:"$port") echo "$url"; return ;; esac; done
  echo "http://localhost:$port"
}

metric_sum() { # name [label filter regex] → the sum over every scraped series
  local name=$1 filter=${2:-} url
  for url in $(ops_urls); do curl -sf "$url/metrics" || true; done \
    | awk -v n="$name" -v f="$filter" '$1 ~ "^"n"({|$)" && (f == "" || $1 ~ f) {s += $NF} END {printf "%d\n", s}'
}

readiness() { # service check → that check's status in /ready
  curl -s "$(service_url "$1")/ready" | jq -r --arg c "$2" '.checks[$c].status // "absent"'
}

# --- orders and sagas --------------------------------------------------------------------

address='{"street":"742 Evergreen Terrace","city":"Springfield","postal_code":"49007","country":"US"}'

order_body() { printf '{"pet_id":"%s","shipping_address":%s,"payment_method":"%s"}' "$1" "$address" "$2"; }

first_available_pet() { # [category]
  local pet
  pet=$(api GET "/pets?available=true&limit=1${1:+&category=$1}" | jq -r '.items[0].pet_id // empty')
  [ -n "$pet" ] || fail "no pet is available any more; restart the pet store to reset the catalog"
  echo "$pet"
}

wait_for_saga() { # order_id customer [seconds] → prints the final status JSON
  # One request that the orchestrator answers when the saga ends (`?wait=`), not a poll.
  local order=$1 customer=$2 limit=${3:-30} body state started=$SECONDS
  while [ $((SECONDS - started)) -lt "$limit" ]; do
    body=$(api GET "/orders/$order/status?wait=${limit}s" "$customer")
    state=$(jq -r '.status // empty' <<<"$body" 2>/dev/null || true)
    case "$state" in completed|compensated|failed) echo "$body"; return ;; esac
    sleep 0.1
  done
  fail "saga of order $order did not end in $limit s; last answer: $body"
}

settled_order() { # order_id customer → the order once its saga's end reached it (confirmed or cancelled)
  # The order service hears of the end a moment after the saga ends (ApproveOrder/RejectOrder).
  local order=$1 customer=$2 body started=$SECONDS
  while :; do
    body=$(api GET "/orders/$order" "$customer")
    case "$(jq -r '.status // empty' <<<"$body")" in confirmed|cancelled) echo "$body"; return ;; esac
    [ $((SECONDS - started)) -lt 10 ] || fail "order $order did not follow its saga in 10 s: $body"
    sleep 0.05
  done
}

# Seconds since the epoch, with the fraction, of an RFC 3339 UTC timestamp.
JQ_TIME='def t: capture("^(?<s>[^.Z]+)(\\.(?<f>[0-9]+))?Z$") | ((.s + "Z") | fromdate) + (("0." + (.f // "0")) | tonumber);'

show_timeline() { # saga JSON: each step with when it ran, relative to the first
  jq -r "$JQ_TIME"'
    (.steps[0].started_at | t) as $t0
    | "  saga \(.saga_id): \(.status | ascii_upcase)" + (if .reason then " — \(.reason)" else "" end),
      (.steps[] | "    " + (.step + " " * (18 - (.step | length)))
        + (.status + " " * (12 - (.status | length)))
        + (if .started_at then "+\(((.started_at | t) - $t0) * 1000 | floor) ms" else "" end)
        + (if .finished_at then " → +\(((.finished_at | t) - $t0) * 1000 | floor) ms" else "" end)
        + (if .compensated_at then "   compensated at +\(((.compensated_at | t) - $t0) * 1000 | floor) ms" else "" end)
        + (if .error then "  (\(.error))" else "" end))' <<<"$1"
}

place() { # customer pet method → prints the 202 body
  local body
  body=$(api POST /orders "$1" "$(order_body "$2" "$3")")
  [ "$(status)" = 202 ] || fail "POST /orders answered $(status): $body"
  echo "$body"
}

order_and_wait() { # customer pet method → prints the saga JSON
  local placed
  placed=$(place "$1" "$2" "$3")
  wait_for_saga "$(jq -r .order_id <<<"$placed")" "$1"
}

# --- flags -------------------------------------------------------------------------------

set_flag() { # flag definition-json: PUT /admin/flags/{flag} as an admin
  local answer
  answer=$(api PUT "/admin/flags/$1" admin:ops "$2")
  [ "$(status)" = 200 ] || fail "PUT /admin/flags/$1 answered $(status): $answer"
  cleanup_flags+=("$1")
  in_force_everywhere "$1" admin
}

reset_flag() { # flag: back to the file's definition
  api DELETE "/admin/flags/$1" admin:ops >/dev/null
  case "$(status)" in 200|404) ;; *) fail "DELETE /admin/flags/$1 answered $(status)" ;; esac
  in_force_everywhere "$1" file
}

in_force_everywhere() { # flag source: waits until every service shows the flag from `source`
  local url started=$SECONDS seen token
  token=$(token ops admin)
  for url in $(ops_urls); do
    while :; do
      seen=$(curl -s -H "authorization: Bearer $token" "$url/admin/flags/$1" | jq -r '.source // empty')
      [ "$seen" = "$2" ] && break
      [ $((SECONDS - started)) -lt 5 ] || fail "$url still has $1 from ${seen:-nowhere}, not $2, after 5 s"
      sleep 0.05
    done
  done
  [ "$TARGET" = compose ] && note "$1 from $2 in force on every service ($(ops_urls | wc -w) processes)"
  return 0
}

served() { # variant value-json [targeting-json] → a flag definition serving `variant`
  printf '{"state":"ENABLED","variants":%s,"defaultVariant":"%s"%s}' "$2" "$1" "${3:+,\"targeting\":$3}"
}
BOOL='{"on":true,"off":false}'

# --- the scenarios -----------------------------------------------------------------------

saga() {
  local pet saga order
  pet=$(first_available_pet)
  bold "Saga: alice orders $pet — reserve, pay, schedule delivery, mark sold (the pivot), confirm"
  saga=$(order_and_wait alice "$pet" credit_card)
  show_timeline "$saga"
  order=$(jq -r .order.order_id <<<"$saga")
  check "the saga completed" "$(jq -r .status <<<"$saga")" completed
  check "every step succeeded, in order" "$(jq -r '[.steps[] | .step + ":" + .status] | join(" ")' <<<"$saga")" \
    "reserve_pet:succeeded process_payment:succeeded schedule_delivery:succeeded mark_pet_sold:succeeded send_confirmation:succeeded"
  check "the order is confirmed" "$(settled_order "$order" alice | jq -r .status)" confirmed
  check "the pet is sold" "$(api GET "/pets/$pet" | jq -r .status)" sold
  say "alice's inbox: $(api GET /notifications alice | jq -r '.items[0].subject')"

  pet=$(first_available_pet)
  bold "Compensation: bob pays for $pet with the provider's test card declined_card"
  saga=$(order_and_wait bob "$pet" declined_card)
  show_timeline "$saga"
  check "the saga compensated" "$(jq -r .status <<<"$saga")" compensated
  check "what had succeeded is undone, latest first" \
    "$(jq -r "$JQ_TIME"'[.steps[] | select(.compensated_at) | {step, at: (.compensated_at | t)}] | sort_by(-.at) | map(.step) | join(" then ")' <<<"$saga")" \
    "reserve_pet"
  check "the pet is available again" "$(api GET "/pets/$pet" | jq -r .status)" available
  say "bob's inbox: $(api GET /notifications bob | jq -r '.items[0].subject')"

  race
  retry
}

race() {
  local pet racer winners=0
  pet=$(first_available_pet)
  bold "Race: carol and dave order $pet at the same moment"
  token carol >/dev/null; token dave >/dev/null   # signed first, so both requests leave together
  for racer in carol dave; do
    (WORK="$DEMO_DIR/race-$racer"; mkdir -p "$WORK"
     api POST /orders "$racer" "$(order_body "$pet" credit_card)" >"$WORK/answer"; status >"$WORK/code") &
  done
  wait
  for racer in carol dave; do
    local code answer outcome
    code=$(cat "$DEMO_DIR/race-$racer/code"); answer=$(cat "$DEMO_DIR/race-$racer/answer")
    if [ "$code" = 202 ]; then
      outcome=$(wait_for_saga "$(jq -r .order_id <<<"$answer")" "$racer")
      say "$racer: 202, saga $(jq -r '.status + (if .reason then " — " + .reason else "" end)' <<<"$outcome")"
      [ "$(jq -r .status <<<"$outcome")" = completed ] && winners=$((winners + 1))
    else
      say "$racer: $code $(jq -r .detail <<<"$answer")   (lost at the door: the pet was gone before its saga began)"
    fi
  done
  check "exactly one racer got the pet" "$winners" 1
  check "the pet is sold once" "$(api GET "/pets/$pet" | jq -r .status)" sold
}

retry() {
  local pet key first again other
  pet=$(first_available_pet)
  key="demo-$(date +%s%N)"
  bold "Retry: frank's client sends its order for $pet again (its first answer timed out)"
  first=$(IDEMPOTENCY_KEY=$key api POST /orders frank "$(order_body "$pet" credit_card)")
  say "first:  $(status), order $(jq -r .order_id <<<"$first")   (Idempotency-Key: $key)"
  again=$(IDEMPOTENCY_KEY=$key api POST /orders frank "$(order_body "$pet" credit_card)")
  say "again:  $(status), order $(jq -r .order_id <<<"$again"), Idempotent-Replayed: $(header idempotent-replayed)"
  check "the retry answers the same order" "$(jq -r .order_id <<<"$again")" "$(jq -r .order_id <<<"$first")"
  other=$(IDEMPOTENCY_KEY=$key api POST /orders frank "$(order_body "$pet" paypal)")
  check "the same key with another body is refused" "$(status) $(jq -r .title <<<"$other")" "422 Idempotency key reused"
  wait_for_saga "$(jq -r .order_id <<<"$first")" frank >/dev/null
}

observ() {
  local pet before_orders before_ended before_published placed order correlation trace saga
  pet=$(first_available_pet)
  bold "Observability: one order, seen through its trace, its metrics and its logs"
  before_orders=$(metric_sum petstore_orders_created_total)
  before_ended=$(metric_sum petstore_sagas_ended_total 'outcome="completed"')
  before_published=$(metric_sum petstore_messages_published_total 'outcome="ok"')
  placed=$(place grace "$pet" credit_card)
  trace=$(header x-trace-id)
  order=$(jq -r .order_id <<<"$placed"); correlation=$(jq -r .correlation_id <<<"$placed")
  saga=$(wait_for_saga "$order" grace)
  say "order $order, correlation id $correlation"
  if [ -n "$trace" ]; then
    say "trace id $trace — the whole saga across services: http://localhost:16686/trace/$trace"
  else
    note "no trace id: this pet store exports no traces (tracing.otlp_endpoint is empty); the compose stack sends them to Jaeger"
  fi
  sleep 1   # the confirmation's metrics follow the saga's end
  say "metric deltas over this order (from /metrics):"
  local orders ended published
  orders=$(( $(metric_sum petstore_orders_created_total) - before_orders ))
  ended=$(( $(metric_sum petstore_sagas_ended_total 'outcome="completed"') - before_ended ))
  published=$(( $(metric_sum petstore_messages_published_total 'outcome="ok"') - before_published ))
  say "  petstore_orders_created_total                +$orders"
  say "  petstore_sagas_ended_total{outcome=completed} +$ended"
  say "  petstore_messages_published_total{ok}         +$published   (commands, replies and events of five steps)"
  check "one order created" "$orders" 1
  check "one saga completed" "$ended" 1
  check_that "the saga's messages were published ($published ≥ 10)" test "$published" -ge 10
  check "the saga completed" "$(jq -r .status <<<"$saga")" completed
  say "its log lines, found by correlation id:"
  local logs=""
  if [ -n "${PETSTORE_LOG:-}" ] && [ -r "$PETSTORE_LOG" ]; then
    logs=$(grep -F "$correlation" "$PETSTORE_LOG" || true)
  elif [ "$TARGET" = compose ] && command -v docker >/dev/null; then
    logs=$(docker compose -f docker-compose.enhanced.yml logs --no-log-prefix 2>/dev/null | grep -F "$correlation" || true)
  fi
  if [ -n "$logs" ]; then
    sed 's/\x1b\[[0-9;]*m//g' <<<"$logs" | awk 'NR <= 12' | cut -c1-160 | sed 's/^/    /'
    check_that "the order's logs carry its correlation id ($(wc -l <<<"$logs") lines)" test "$(wc -l <<<"$logs")" -ge 3
  else
    note "set PETSTORE_LOG to the pet store's log file to see them (e.g. cargo run -p petstore 2>&1 | tee petstore.log)"
  fi
}

resilience() {
  local pet saga i ready
  bold "Resilience: a payment provider outage, drilled with fault_payment_failure_rate = 1"
  set_flag fault_payment_failure_rate "$(served total '{"off":0,"total":1}')"
  say "PUT /admin/flags/fault_payment_failure_rate → every call to the simulated provider fails"
  for i in 1 2 3; do
    pet=$(first_available_pet)
    saga=$(order_and_wait "henry$i" "$pet" credit_card)
    say "order $i for $pet: $(jq -r '.status + " — " + (.reason // "")' <<<"$saga")"
    check "order $i compensated, nothing charged" "$(jq -r .status <<<"$saga")" compensated
  done
  ready=$(readiness payment payment_provider)
  check "the payment_provider breaker is open (/ready: degraded)" "$ready" degraded
  reset_flag fault_payment_failure_rate
  say "DELETE /admin/flags/fault_payment_failure_rate → the provider answers again"
  say "the open breaker refuses calls until its pause ends, then lets one probe through (half-open):"
  local completed="" started=$SECONDS
  while [ $((SECONDS - started)) -lt 40 ]; do
    pet=$(first_available_pet)
    saga=$(order_and_wait ivy "$pet" credit_card)
    say "  +$((SECONDS - started)) s: $(jq -r '.status + (if .reason then " — " + .reason else "" end)' <<<"$saga")"
    if [ "$(jq -r .status <<<"$saga")" = completed ]; then completed=yes; break; fi
    sleep 2
  done
  check "an order completes once the breaker closes" "${completed:-no}" yes
  check "the breaker is closed (/ready: up)" "$(readiness payment payment_provider)" up

  bold "Resilience: a handler that keeps failing, drilled on delivery-commands"
  set_flag fault_handler_failure_rate \
    "$(served off '{"off":0,"total":1}' '{"if":[{"in":[{"var":"channel"},["delivery-commands"]]},"total",null]}')"
  pet=$(first_available_pet)
  local placed order letter
  placed=$(place judy "$pet" credit_card)
  order=$(jq -r .order_id <<<"$placed")
  say "judy's order $order: its schedule-delivery command fails every attempt"
  for _ in $(seq 1 100); do
    letter=$(api GET "/admin/dlq?channel=delivery-commands" admin:ops \
      | jq -c --arg o "$order" '[.items[] | select(.message.data.order_id == $o)][0] // empty')
    [ -n "$letter" ] && break
    sleep 0.2
  done
  [ -n "$letter" ] || fail "no dead letter for order $order on delivery-commands after 20 s"
  say "dead-lettered after $(jq -r .attempts <<<"$letter") attempts: $(jq -r '.message_type + " — " + .error' <<<"$letter" | cut -c1-110)"
  check "the saga waits at the delivery step" \
    "$(api GET "/orders/$order/status" judy | jq -r '.steps[] | select(.step == "schedule_delivery") | .status')" running
  reset_flag fault_handler_failure_rate
  api POST "/admin/dlq/$(jq -r .id <<<"$letter")/replay" admin:ops >/dev/null
  say "drill off; POST /admin/dlq/$(jq -r .id <<<"$letter")/replay → $(status)"
  check "the replay is accepted" "$(status)" 202
  saga=$(wait_for_saga "$order" judy)
  show_timeline "$saga"
  check "the replayed command completed the saga" "$(jq -r .status <<<"$saga")" completed
}

security() {
  local pet placed order quota
  bold "Security: every route but the catalog needs a bearer token"
  api GET /notifications >/dev/null
  check "no token → 401" "$(status)" 401
  say "  $(jq -r .detail "$WORK/body")   WWW-Authenticate: $(header www-authenticate)"
  api GET /notifications 'raw:Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.' >/dev/null
  check "a forged alg:none token → 401" "$(status)" 401
  say "  $(jq -r .detail "$WORK/body")"
  api GET /admin/dlq grace >/dev/null
  check "a customer at an admin route → 403" "$(status)" 403
  say "  $(jq -r .detail "$WORK/body")"
  pet=$(first_available_pet)
  placed=$(place grace "$pet" credit_card)
  order=$(jq -r .order_id <<<"$placed")
  wait_for_saga "$order" grace >/dev/null
  check "grace reads her order" "$(api GET "/orders/$order" grace >/dev/null; status)" 200
  check "heidi reads grace's order → 404 (ids cannot be probed)" "$(api GET "/orders/$order" heidi >/dev/null; status)" 404
  check "an admin reads grace's order" "$(api GET "/orders/$order" admin:ops >/dev/null; status)" 200
  bold "Rate limit: heidi sends orders for a pet that does not exist until the quota answers 429"
  quota=0
  for i in $(seq 1 60); do
    api POST /orders heidi "$(order_body unicorn-999 credit_card)" >/dev/null
    if [ "$(status)" = 429 ]; then quota=$i; break; fi
  done
  check_that "heidi is limited (429 at request $quota)" test "$quota" -gt 0
  say "  Retry-After: $(header retry-after) s, X-RateLimit-Limit: $(header x-ratelimit-limit)"
  check "ivan, meanwhile, is not limited" "$(api GET /notifications ivan >/dev/null; status)" 200
  bold "Bad input: RFC 9457 problem details, nothing stored"
  api POST /orders erin '{"pet_id": ' >/dev/null
  check "malformed JSON → 400" "$(status)" 400
  api POST /orders erin "$(order_body unicorn-999 credit_card)" >/dev/null
  check "an unknown pet → 422" "$(status) $(jq -r .detail "$WORK/body")" "422 pet_id: no pet \`unicorn-999\` in the catalog"
  api POST /orders erin '{"pet_id":"goldfish-004","payment_method":"credit_card","admin":true}' >/dev/null
  check "an unknown field → 400 naming it" "$(status)" 400
  say "  $(jq -r .detail "$WORK/body")"
  api GET "/pets?category=dog';--" >/dev/null
  check "SQL-ish input → 400" "$(status)" 400
  check "no order of erin's was placed (no notification)" "$(api GET /notifications erin | jq -r '.items | length')" 0

  bold "Audit trail (GET /admin/audit as an admin): what grace and heidi just did"
  local trail
  trail=$(api GET "/admin/audit?service=order&actor=grace&limit=3" admin:ops)
  jq -r '.items[] | "  \(.at)  \(.actor)  \(.action)  \(.target // "-")  → \(.status)"' <<<"$trail"
  check "grace's order is in the trail" "$(jq -r --arg o "$order" '[.items[] | select(.target == $o)] | length' <<<"$trail")" 1
  trail=$(api GET "/admin/audit?service=order&actor=heidi&limit=2" admin:ops)
  jq -r '.items[] | "  \(.at)  \(.actor)  \(.action)  \(.target // "-")  → \(.status)"' <<<"$trail"
  note "refused orders are audited too; 429s never reach the service"
  check "heidi's refused orders are in the trail" "$(jq -r '.items[0].status' <<<"$trail")" 422
}

flags() {
  bold "Feature flags: GET /admin/flags (flagd definitions; the file's, or an admin's override)"
  api GET /admin/flags admin:ops \
    | jq -r '.[] | "  \(.flag + " " * (28 - (.flag | length)))\(.source)  default \(.definition.defaultVariant)" + (if .definition.targeting then ", targeted" else "" end)'
  check "nine flags" "$(jq -r length "$WORK/body")" 9

  bold "redis_caching, switched off and on again live"
  api GET "/pets?category=fish&limit=2" >/dev/null; api GET "/pets?category=fish&limit=2" >/dev/null
  check "cached: X-Cache" "$(header x-cache)" HIT
  set_flag redis_caching "$(served off "$BOOL")"
  api GET "/pets?category=fish&limit=2" >/dev/null
  check "off: X-Cache" "$(header x-cache)" BYPASS
  reset_flag redis_caching
  api GET "/pets?category=fish&limit=2" >/dev/null
  check "back to the file's definition: X-Cache" "$(header x-cache)" HIT

  bold "premium_filters: targeted at tokens with tier=premium"
  api GET "/pets?sort=-price&limit=3" kate >/dev/null
  check "a standard customer sorting → 403" "$(status)" 403
  say "  $(jq -r .detail "$WORK/body")"
  api GET "/pets?sort=-price&limit=3" premium:leo >"$WORK/sorted"
  check "a premium customer sorting → 200" "$(status)" 200
  jq -r '.items[] | "  \(.pet_id)  $\(.price)"' "$WORK/sorted"
  check "most expensive first" "$(jq -r '[.items[].price | tonumber] | . == (sort | reverse)' "$WORK/sorted")" true

  bold "express_order_processing, on for everyone for one order"
  set_flag express_order_processing "$(served on "$BOOL")"
  local pet saga
  pet=$(first_available_pet)
  saga=$(order_and_wait mia "$pet" credit_card)
  reset_flag express_order_processing
  check "the order is express" "$(api GET "/orders/$(jq -r .order.order_id <<<"$saga")" mia | jq -r .express)" true
  note "the saga passed express to the delivery service, which booked it for the next day"

  bold "pricing_experiment: the A/B split over 200 customers (fractional by customer id, 50/25/25)"
  pet=$(first_available_pet)
  local list n arm
  list=$(api GET "/pets/$pet" | jq -r .price)
  for n in $(seq 1 200); do
    api GET "/pets/$pet" "shopper-$n" >/dev/null
    echo "$(header x-pricing-arm) $(jq -r .price "$WORK/body")" >>"$WORK/arms"
  done
  say "catalog price of $pet: $list"
  sort "$WORK/arms" | uniq -c | awk '{printf "  %-16s %3d customers (%2d %%) see %s\n", $2, $1, $1 / 2, $3}'
  for arm in control discount_10 premium_plus_5; do
    n=$(grep -c "^$arm " "$WORK/arms" || true)
    case $arm in control) lo=80; hi=120 ;; *) lo=30; hi=70 ;; esac
    check_that "$arm holds $n of 200 (expected $((lo / 2))–$((hi / 2)) %)" test "$n" -ge "$lo" -a "$n" -le "$hi"
  done
  arm=$(grep -m1 '^discount_10 ' "$WORK/arms" | cut -d' ' -f2)
  check "discount_10 sees 90 % of the catalog price ($arm)" \
    "$(jq -n --arg a "$arm" --arg l "$list" '($a | tonumber) == (($l | tonumber) * 90 | round / 100)')" true
  local again
  api GET "/pets/$pet" shopper-1 >/dev/null; again=$(header x-pricing-arm)
  check "sticky: shopper-1 sees the same arm again" "$again" "$(head -1 "$WORK/arms" | cut -d' ' -f1)"
}

data() {
  local pet saga order
  bold "Data: the catalog cache (Redis in compose, memory in the all-in-one)"
  local query="/pets?category=bird&max_price=$RANDOM&limit=2"
  api GET "$query" >/dev/null; check "first read: X-Cache" "$(header x-cache)" MISS
  api GET "$query" >/dev/null; check "second read: X-Cache" "$(header x-cache)" HIT
  set_flag redis_caching "$(served off "$BOOL")"
  api GET "$query" >/dev/null; check "redis_caching off: X-Cache" "$(header x-cache)" BYPASS
  reset_flag redis_caching

  pet=$(first_available_pet)
  bold "Data: an order is its events (event sourcing); GET /orders/{id} is their projection"
  saga=$(order_and_wait nina "$pet" credit_card)
  order=$(jq -r .order.order_id <<<"$saga")
  settled_order "$order" nina >/dev/null
  api GET "/orders/$order/events" nina | jq -r '.events[] | "  v\(.version)  \(.recorded_at)  \(.event.type // (.event | keys[0]))"'
  check "placed, then confirmed" "$(jq -r '[.events[].event | .type // keys[0]] | join(",")' "$WORK/body")" "placed,confirmed"
  bold "Data: audit rows of the order and of the flag changes"
  api GET "/admin/audit?service=order&actor=nina&limit=1" admin:ops \
    | jq -r '.items[] | "  \(.at)  \(.actor)  \(.action)  \(.target)  → \(.status)"'
  check "the order's audit row" "$(jq -r '.items[0].target' "$WORK/body")" "$order"
  api GET "/admin/audit?service=flags&action=PUT%20%2Fadmin%2Fflags%2F%7Bflag%7D&limit=1" admin:ops \
    | jq -r '.items[] | "  \(.at)  \(.actor)  \(.action)  \(.target)  → \(.status)"'
  check "the flag change's audit row" "$(jq -r '.items[0] | .action + " " + .target' "$WORK/body")" "PUT /admin/flags/{flag} redis_caching"

  bold "Data: the order projection rebuilt from the events"
  local before after
  before=$(api GET "/orders/$order" nina | jq -c 'del(.updated_at)')
  if [ -n "${REBUILD_CMD:-}" ]; then
    say "$REBUILD_CMD → $(eval "$REBUILD_CMD" 2>&1 | tail -1)"
  elif [ "${PETSTORE__STORAGE:-}" = postgres ]; then
    say "petstore rebuild-projections → $(petstore_cli rebuild-projections 2>/dev/null | tail -1)"
  else
    note "this pet store keeps its data in memory: the projection lives in the same process; against"
    note "PostgreSQL (compose) \`petstore rebuild-projections\` rebuilds it from the event store"
    return
  fi
  after=$(api GET "/orders/$order" nina | jq -c 'del(.updated_at)')
  check "the rebuilt order is the same" "$after" "$before"
}

run() {
  case "$1" in
    saga|observ|resilience|security|flags|data) "$1" ;;
    all) saga; observ; resilience; security; flags; data ;;
    *) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

detect_target
printf '%sPet store demo against %s (%s)%s\n' "$B" "$BASE_URL" "$TARGET" "$N"
if [ -z "$SCENARIO" ] && [ -t 0 ] && [ -t 1 ]; then
  PS3="scenario> "
  select SCENARIO in saga observ resilience security flags data all quit; do
    [ "$SCENARIO" = quit ] || [ -z "$SCENARIO" ] && break
    run "$SCENARIO"
  done
elif [ -z "$SCENARIO" ]; then
  run help
else
  run "$SCENARIO"
fi
if [ "$FAILURES" -gt 0 ]; then
  printf '\n%s%d of %d checks failed%s\n' "$R" "$FAILURES" "$CHECKS" "$N"
  exit 1
fi
printf '\n%s%d checks passed%s\n' "$G" "$CHECKS" "$N"
