# Sourced by the scripts that run a throwaway all-in-one pet store (dev/fuzz-api.sh,
# dev/demo-check.sh): a free port, the server started in the background, stopped on exit,
# waited for. Expects `log` to be defined.

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_petstore LOG COMMAND… : starts COMMAND with its output in LOG; SERVER is its pid.
start_petstore() {
  local output=$1; shift
  "$@" >"$output" 2>&1 &
  SERVER=$!
  SERVER_LOG=$output
}

# stop_petstore: SIGTERM, then waits for the graceful shutdown.
stop_petstore() {
  if [ -n "${SERVER:-}" ] && kill -0 "$SERVER" 2>/dev/null; then
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
}

# wait_for_petstore URL: until URL answers 200; exits with the server's log when the server
# dies or 60 s pass.
wait_for_petstore() {
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "$1" 2>/dev/null; do
    if ! kill -0 "$SERVER" 2>/dev/null || (( SECONDS >= deadline )); then
      log "the pet store did not answer $1; its log:"; cat "$SERVER_LOG" >&2; exit 1
    fi
    sleep 0.2
  done
}
