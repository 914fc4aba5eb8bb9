#!/usr/bin/env bash
# Walk through the pet store's order saga against a running deployment.
#
#   dev/demo.sh catalog     browse the catalog; the second identical call is a cache HIT
#   dev/demo.sh happy       order an available pet: reserve → pay → deliver → sell → confirm
#   dev/demo.sh declined    pay with the provider's test card `declined_card`: the saga compensates
#   dev/demo.sh race        two customers order the same pet at once: exactly one gets it
#   dev/demo.sh retry       a client repeats an order with the same Idempotency-Key: one order
#   dev/demo.sh bad         malformed and invalid orders get problem+json answers
#   dev/demo.sh security    401 without or with a bad token, 403 without the role, 404 for
#                           another customer's order, 429 past the quota, the audit trail
#   dev/demo.sh all         everything above
#
# BASE_URL (default http://localhost:8080) points at the all-in-one binary (`cargo run -p
# petstore`) or at the compose deployment's entry point. Needs curl and jq. Tokens come from
# `petstore token` (PETSTORE_BIN, else target/release or target/debug, else `cargo run`),
# which signs with the same configuration as the pet store it talks to.
set -euo pipefail

BASE_URL="${BASE_URL:-http://localhost:8080}"
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "demo.sh needs $tool (e.g. apt-get install $tool)" >&2; exit 1; }
done

bold() { printf '\n\033[1m%s\033[0m\n' "$*"; }
say() { printf '  %s\n' "$*"; }

WORK=$(mktemp -d)
DEMO_DIR=$WORK
TOKENS="$DEMO_DIR/tokens"   # fixed: the race's racers get a WORK of their own
mkdir -p "$TOKENS"
trap 'rm -rf "$DEMO_DIR"' EXIT

petstore_cli() {
  if [ -n "${PETSTORE_BIN:-}" ]; then "$PETSTORE_BIN" "$@"
  elif [ -x target/release/petstore ]; then target/release/petstore "$@"
  elif [ -x target/debug/petstore ]; then target/debug/petstore "$@"
  else cargo run -q -p petstore -- "$@"; fi
}

token() { # subject [role] → a bearer token (cached for the run)
  local subject=$1 role=${2:-customer} file="$TOKENS/$1-${2:-customer}"
  [ -s "$file" ] || petstore_cli token --sub "$subject" --role "$role" >"$file"
  cat "$file"
}

api() { # method path [caller] [body] → prints the body; `status` and `header NAME` read the rest
  # caller: a customer id (a customer token), `admin:<name>` (an admin token), or
  # `raw:<Authorization value>`.
  local method=$1 path=$2 caller=${3:-} body=${4:-}
  local args=(-sS -X "$method" -D "$WORK/headers" -o "$WORK/body" -w '%{http_code}' -H 'accept: application/json')
  case "$caller" in
    "") ;;
    raw:*) args+=(-H "authorization: ${caller#raw:}") ;;
    admin:*) args+=(-H "authorization: Bearer $(token "${caller#admin:}" admin)") ;;
    *) args+=(-H "authorization: Bearer $(token "$caller")") ;;
  esac
  [ -n "${IDEMPOTENCY_KEY:-}" ] && args+=(-H "idempotency-key: $IDEMPOTENCY_KEY")
  [ -n "$body" ] && args+=(-H 'content-type: application/json' --data "$body")
  curl "${args[@]}" "$BASE_URL$path" >"$WORK/status" || { echo "cannot reach $BASE_URL — is the pet store running?" >&2; exit 1; }
  cat "$WORK/body"
}

status() { cat "$WORK/status"; }

header() { tr -d '\r' <"$WORK/headers" | awk -v h="$(echo "$1" | tr 'A-Z' 'a-z')" 'tolower($1) == h":" {print $2}'; }

address='{"street":"742 Evergreen Terrace","city":"Springfield","postal_code":"49007","country":"US"}'

order_body() { printf '{"pet_id":"%s","shipping_address":%s,"payment_method":"%s"}' "$1" "$address" "$2"; }

first_available_pet() {
  local pet
  pet=$(api GET "/pets?available=true&limit=1" | jq -r '.items[0].pet_id // empty')
  [ -n "$pet" ] || { echo "no pet is available any more; restart the pet store to reset the catalog" >&2; exit 1; }
  echo "$pet"
}

wait_for_saga() { # order_id customer → prints the final status JSON
  local order=$1 customer=$2 body status
  for _ in $(seq 1 300); do
    body=$(api GET "/orders/$order/status" "$customer")
    status=$(jq -r '.status // empty' <<<"$body" 2>/dev/null || true)
    case "$status" in completed|compensated|failed) echo "$body"; return ;; esac
    sleep 0.1
  done
  echo "saga of order $order did not end in 30 s; last answer: $body" >&2
  exit 1
}

show_saga() {
  jq -r '"  saga \(.saga_id): \(.status | ascii_upcase)" + (if .reason then " — \(.reason)" else "" end),
         (.steps[] | "    \(.step | . + " " * (18 - length)) \(.status)" + (if .error then "  (\(.error))" else "" end)),
         (if .notice then "    cancellation notice  " + (if .notice.sent_at then "sent" else "pending" end) else empty end)' <<<"$1"
}

place() { # customer pet method → prints the 202 body
  local body
  body=$(api POST /orders "$1" "$(order_body "$2" "$3")")
  [ "$(status)" = 202 ] || { echo "POST /orders answered $(status): $body" >&2; exit 1; }
  echo "$body"
}

catalog() {
  bold "Catalog: GET /pets?category=dog, twice"
  api GET "/pets?category=dog&limit=3" >"$WORK/pets"
  jq -r '.items[] | "  \(.pet_id)  \(.name)  $\(.price)  \(.status)"' "$WORK/pets"
  say "X-Cache: $(header x-cache)"
  api GET "/pets?category=dog&limit=3" >/dev/null
  say "X-Cache: $(header x-cache)   (served from the cache)"
}

happy() {
  local pet placed order saga
  pet=$(first_available_pet)
  bold "Happy path: alice orders $pet with a credit card"
  placed=$(place alice "$pet" credit_card)
  order=$(jq -r .order_id <<<"$placed")
  say "202 Accepted: order $order, correlation id $(jq -r .correlation_id <<<"$placed")"
  saga=$(wait_for_saga "$order" alice)
  show_saga "$saga"
  say "order status: $(api GET "/orders/$order" alice | jq -r .status)"
  say "pet status:   $(api GET "/pets/$pet" | jq -r .status)"
  say "alice's inbox: $(api GET /notifications alice | jq -r '.items[0].subject')"
}

declined() {
  local pet placed order saga
  pet=$(first_available_pet)
  bold "Declined card: bob orders $pet with the test card declined_card"
  placed=$(place bob "$pet" declined_card)
  order=$(jq -r .order_id <<<"$placed")
  saga=$(wait_for_saga "$order" bob)
  show_saga "$saga"
  say "pet status after compensation: $(api GET "/pets/$pet" | jq -r .status)"
  say "bob's inbox: $(api GET /notifications bob | jq -r '.items[0].subject')"
}

race() {
  local pet racer
  pet=$(first_available_pet)
  bold "Race: carol and dave order $pet at the same moment"
  token carol >/dev/null; token dave >/dev/null   # signed first, so both requests leave together
  # Each racer gets its own scratch directory so the two requests do not share files.
  for racer in carol dave; do
    (WORK="$DEMO_DIR/race-$racer"; mkdir -p "$WORK"
     api POST /orders "$racer" "$(order_body "$pet" credit_card)" >"$WORK/answer"; status >"$WORK/code") &
  done
  wait
  for racer in carol dave; do
    local code answer
    code=$(cat "$DEMO_DIR/race-$racer/code"); answer=$(cat "$DEMO_DIR/race-$racer/answer")
    if [ "$code" = 202 ]; then
      say "$racer: 202, saga $(wait_for_saga "$(jq -r .order_id <<<"$answer")" "$racer" | jq -r '.status + (if .reason then " — " + .reason else "" end)')"
    else
      say "$racer: $code $(jq -r .detail <<<"$answer")   (lost at the door: the pet was gone before its saga began)"
    fi
  done
  say "pet status: $(api GET "/pets/$pet" | jq -r .status)"
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
  other=$(IDEMPOTENCY_KEY=$key api POST /orders frank "$(order_body "$pet" paypal)")
  say "same key, another body: $(status) $(jq -r .title <<<"$other")"
  show_saga "$(wait_for_saga "$(jq -r .order_id <<<"$first")" frank)"
}

bad() {
  bold "Bad input gets RFC 9457 problem details"
  api POST /orders erin '{"pet_id": ' | jq -c '{status, title, detail}' | sed 's/^/  malformed JSON   → /'
  api POST /orders erin "$(order_body unicorn-999 credit_card)" | jq -c '{status, title, detail}' | sed 's/^/  unknown pet      → /'
  api POST /orders erin '{"pet_id":"goldfish-004"}' | jq -c '{status, title, detail}' | sed 's/^/  missing fields   → /'
  api GET /pets/unicorn-999 | jq -c '{status, title, detail}' | sed 's/^/  GET unknown pet  → /'
}

security() {
  local pet placed order quota
  bold "Security: every route but the catalog needs a bearer token"
  say "GET /notifications, no token          → $(api GET /notifications | jq -r '"\(.status) \(.detail)"')"
  say "GET /notifications, forged token      → $(api GET /notifications 'raw:Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJldmUifQ.' | jq -r '"\(.status) \(.detail)"')"
  say "GET /admin/dlq as customer grace      → $(api GET /admin/dlq grace | jq -r '"\(.status) \(.detail)"')"
  pet=$(first_available_pet)
  placed=$(place grace "$pet" credit_card)
  order=$(jq -r .order_id <<<"$placed")
  wait_for_saga "$order" grace >/dev/null
  say "grace's order as grace                → $(api GET "/orders/$order" grace >/dev/null; status)"
  say "grace's order as heidi                → $(api GET "/orders/$order" heidi | jq -r '"\(.status) \(.detail)"')"
  say "grace's order as an admin             → $(api GET "/orders/$order" admin:ops >/dev/null; status)"
  bold "Rate limit: heidi sends orders for a pet that does not exist until the quota answers 429"
  quota=0
  for i in $(seq 1 40); do
    api POST /orders heidi "$(order_body unicorn-999 credit_card)" >/dev/null
    if [ "$(status)" = 429 ]; then quota=$i; break; fi
  done
  [ "$quota" -gt 0 ] || { echo "no 429 after 40 orders: is rate_limits.routes.\"POST /orders\" configured?" >&2; exit 1; }
  say "request $quota → 429, Retry-After: $(header retry-after) s, X-RateLimit-Limit: $(header x-ratelimit-limit)"
  say "ivan, meanwhile                       → $(api GET /notifications ivan >/dev/null; status)"
  bold "Audit trail (GET /admin/audit as an admin): what grace and heidi just did"
  api GET "/admin/audit?service=order&actor=grace&limit=3" admin:ops \
    | jq -r '.items[] | "  \(.at)  \(.actor)  \(.action)  \(.target // "-")  → \(.status)"'
  api GET "/admin/audit?service=orchestrator&actor=grace&limit=3" admin:ops \
    | jq -r '.items[] | "  \(.at)  \(.actor)  \(.action)  \(.target // "-")  → \(.status)"'
  api GET "/admin/audit?service=order&actor=heidi&limit=2" admin:ops \
    | jq -r '.items[] | "  \(.at)  \(.actor)  \(.action)  \(.target // "-")  → \(.status)   (refused orders are audited too; 429s never reach the service)"'
}

case "${1:-}" in
  catalog) catalog ;;
  happy) happy ;;
  declined) declined ;;
  race) race ;;
  retry) retry ;;
  bad) bad ;;
  security) security ;;
  all) catalog; happy; declined; race; retry; bad; security ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
