#!/usr/bin/env bash
# Starts a release server on a fresh embedded store and runs `idem bench` against it at each
# concurrency given (default 1 8 64). Usage: scripts/bench-server.sh [DURATION] [CONCURRENCY...]
# Prints one JSON line per run; the server's log goes to $OUT/server.log. SERVER_ARGS adds
# flags to `idem serve` (e.g. SERVER_ARGS="--embed-cache 0": every paraphrase check embeds);
# RATE=N runs open loop at N checks/s over CONCURRENCY sessions; BENCH_ARGS adds flags to
# `idem bench` (e.g. BENCH_ARGS="--calls benches/data/load_calls.jsonl --mix exact=10,new=90":
# unique calls with 10-40 words of free text, each with identity-equal earlier calls).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15s}
shift || true
LEVELS=("${@:-1 8 64}")
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PORT=${PORT:-50977}
cargo build --release --quiet
for c in ${LEVELS[@]}; do
  rm -rf "$OUT/data"
  ./target/release/idem serve --data-dir "$OUT/data" --listen "127.0.0.1:$PORT" \
    --models-dir models ${SERVER_ARGS:-} >"$OUT/server.log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    grep -q "listening" "$OUT/server.log" 2>/dev/null && break
    sleep 0.2
  done
  ./target/release/idem bench --server "http://127.0.0.1:$PORT" --concurrency "$c" \
    --duration "$DURATION" --models-dir models ${RATE:+--rate $RATE} ${BENCH_ARGS:-} --json
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
