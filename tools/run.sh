#!/usr/bin/env bash
# `make run`: one worker with the bundled model and one gateway on
# localhost:8080. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/bin}
HTTP=${TESSERA_HTTP:-127.0.0.1:8080}
WORKER=${TESSERA_WORKER:-127.0.0.1:50051}

"$BIN/tessera-worker" --listen "$WORKER" &
worker_pid=$!
"$BIN/tessera-gateway" --listen "$HTTP" --worker "$WORKER" &
gateway_pid=$!
stop() {
  trap - INT TERM EXIT
  kill -TERM "$gateway_pid" "$worker_pid" 2>/dev/null || true
  wait "$gateway_pid" "$worker_pid" 2>/dev/null || true
  echo "tessera: stopped"
}
trap stop INT TERM EXIT

for _ in $(seq 1 100); do
  if curl -fs "http://$HTTP/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$worker_pid" 2>/dev/null || ! kill -0 "$gateway_pid" 2>/dev/null; then
    echo "tessera: a process exited during start-up" >&2
    exit 1
  fi
  sleep 0.2
done
model=$(curl -fs "http://$HTTP/v1/models" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
cat <<MSG

Tessera is serving '$model' on http://$HTTP  (Ctrl-C stops it)

  curl http://$HTTP/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "$model", "messages": [{"role": "user", "content": "Write a haiku about the sea."}], "max_tokens": 64}'

MSG
wait "$gateway_pid" "$worker_pid"
