#!/usr/bin/env bash
# Figures for the Redis store: `idem bench` against one release instance on the embedded store,
# one on Redis, and two on one Redis (a bench client per instance, at once, half the clients
# each); then Redis memory per stored call (after the one-instance run: with embeddings; and
# for new calls only, without an embedder). Starts its own redis-server (appendfsync always)
# on a free loopback port and stops everything it started on exit.
# Usage: scripts/bench-redis.sh [DURATION] [CONCURRENCY]   (default 20s 8)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20s}
C=${2:-8}
OUT=$(mktemp -d)
BIN=./target/release/idem
cargo build --release --quiet
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$OUT"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_idem NAME ARGS...: starts `idem serve`, sets ADDR and LAST_PID.
start_idem() {
  local name=$1
  shift
  "$BIN" serve --listen 127.0.0.1:0 --models-dir models "$@" >"$OUT/$name.out" 2>"$OUT/$name.log" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  for _ in $(seq 1 300); do
    grep -q "listening on" "$OUT/$name.out" 2>/dev/null && break
    sleep 0.2
  done
  ADDR=http://$(sed -n 's/^idem listening on //p' "$OUT/$name.out")
}

bench() { # SERVER CONCURRENCY [ARGS...]
  local server=$1 c=$2
  shift 2
  "$BIN" bench --server "$server" --concurrency "$c" --duration "$DURATION" --json "$@"
}

summary() { # LABEL FILE...
  local label=$1
  shift
  python3 - "$label" "$@" <<'EOF'
import json, sys
label, files = sys.argv[1], sys.argv[2:]
runs = [json.loads(open(f).read().strip().splitlines()[-1]) for f in files]
kinds = {}
for r in runs:
    for k, v in r["by_kind"].items():
        kinds.setdefault(k, []).append(v["p99_ms"])
print(json.dumps({
    "setup": label,
    "requests_per_s": round(sum(r["throughput_per_s"] for r in runs), 1),
    "p99_ms_by_kind": {k: max(v) for k, v in kinds.items()},
    "shed": sum(r["shed_resource_exhausted"] for r in runs),
    "errors": [r["errors"] for r in runs],
}))
EOF
}

RPORT=$(free_port)
mkdir -p "$OUT/redis"
redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$OUT/redis" --appendonly yes \
  --appendfsync always --save '' --daemonize no >/dev/null &
PIDS+=("$!")
for _ in $(seq 1 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
URL=redis://127.0.0.1:$RPORT

start_idem embedded --data-dir "$OUT/data"
bench "$ADDR" "$C" >"$OUT/embedded.json"
kill "$LAST_PID"
summary "one instance, embedded store" "$OUT/embedded.json"

start_idem redis1 --store redis --redis-url "$URL"
bench "$ADDR" "$C" >"$OUT/redis1.json"
kill "$LAST_PID"
summary "one instance, Redis" "$OUT/redis1.json"
used=$(redis-cli -p "$RPORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' | tr -d '\r')
calls=$(redis-cli -p "$RPORT" zcard idem:sweep | tr -d '\r')
echo "{\"redis_used_memory\": $used, \"stored_calls\": $calls, \"note\": \"after the one-instance run, embeddings included\"}"
redis-cli -p "$RPORT" flushall >/dev/null

start_idem redis2a --store redis --redis-url "$URL"
A=$ADDR
start_idem redis2b --store redis --redis-url "$URL"
B=$ADDR
bench "$A" $((C / 2)) >"$OUT/redis2a.json" &
ba=$!
bench "$B" $((C / 2)) >"$OUT/redis2b.json"
wait "$ba"
summary "two instances, one Redis" "$OUT/redis2a.json" "$OUT/redis2b.json"
redis-cli -p "$RPORT" flushall >/dev/null
base=$(redis-cli -p "$RPORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' | tr -d '\r')

start_idem store-only --store redis --redis-url "$URL" --embedder none
bench "$ADDR" "$C" --mix exact=0,paraphrase=0,new=100 >"$OUT/new.json"
used=$(redis-cli -p "$RPORT" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p' | tr -d '\r')
calls=$(redis-cli -p "$RPORT" zcard idem:sweep | tr -d '\r')
python3 -c "print('{\"redis_bytes_per_call_without_embedding\": %d, \"stored_calls\": %d, \"per_100k_calls_mb\": %.1f}' % (($used-$base)/$calls, $calls, ($used-$base)/$calls*1e5/2**20))"
