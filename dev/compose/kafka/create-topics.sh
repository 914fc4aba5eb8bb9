#!/usr/bin/env bash
# Creates the pet store's Kafka topics before any service starts: the one-shot `kafka-init`
# service of docker-compose.enhanced.yml runs it in the apache/kafka image, and the services
# wait for it to finish (condition: service_completed_successfully).
#
# The partition counts must stay equal to messaging.channels.<name>.partitions in
# dev/compose/petstore.yaml. A service declares each of its channels at start-up with that
# count, but an existing topic is taken as it is (the bus ignores "topic already exists" and
# neither warns nor repartitions), so the counts here are the ones in force.
#
# Idempotent: --if-not-exists. It does not change a topic that exists already; to change a
# partition count (only upwards) or a retention, use kafka-topics.sh --alter / kafka-configs.sh,
# or start from empty volumes (docker compose down -v).
set -euo pipefail

BOOTSTRAP=${KAFKA_BOOTSTRAP:-kafka:9092}
TOPICS=${KAFKA_TOPICS_SH:-/opt/kafka/bin/kafka-topics.sh}
DAY_MS=86400000
RETENTION_MS=$((7 * DAY_MS))      # events, commands and queries: 7 days
DLQ_RETENTION_MS=$((14 * DAY_MS)) # dead letters wait for an operator: 14 days
PARALLEL=4                        # topic-creating JVMs at once

# <channel> <partitions>. Every channel the services declare, keyed by order id; the ones that
# ride NATS in dev/compose/petstore.yaml (inventory-events, notification-*) get their topics
# too, so that moving one back to Kafka is a one-line change with the same partitions.
# inventory-queries: the request/response fallback (messaging.backend_selection.fallback).
# flag-events rides NATS only (a broadcast, never moved), so it has no topic here.
CHANNELS=(
  "order-events 6"
  "order-commands 6"
  "inventory-commands 6"
  "payment-commands 6"
  "delivery-commands 6"
  "notification-commands 6"
  "inventory-events 3"
  "payment-events 3"
  "delivery-events 3"
  "notification-events 2"
  "inventory-queries 1"
)

# One JVM to list what exists, so that a restart of the stack does not start one per topic.
existing=" $("$TOPICS" --bootstrap-server "$BOOTSTRAP" --list | tr '\n' ' ') "

pids=()
failed=0
drain() {
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  pids=()
}
create() { # topic partitions retention_ms
  if [[ "$existing" == *" $1 "* ]]; then return 0; fi
  "$TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$1" \
    --partitions "$2" --replication-factor 1 \
    --config "retention.ms=$3" --config cleanup.policy=delete &
  pids+=("$!")
  if [ "${#pids[@]}" -ge "$PARALLEL" ]; then drain; fi
}

for entry in "${CHANNELS[@]}"; do
  read -r channel partitions <<<"$entry"
  create "$channel" "$partitions" "$RETENTION_MS"
  # Dead letters of the channel (the bus publishes them to <channel>.dlq on the same backend).
  create "$channel.dlq" 1 "$DLQ_RETENTION_MS"
done
drain

if [ "$failed" -ne 0 ]; then
  echo "kafka-init: could not create every topic" >&2
  exit 1
fi
echo "kafka-init: topics on $BOOTSTRAP:"
"$TOPICS" --bootstrap-server "$BOOTSTRAP" --describe --exclude-internal | grep '^Topic:'
