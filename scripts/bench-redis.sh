#!/usr/bin/env bash
# Figures for the Redis store: `idem bench` against one release instance on the embedded store,
# then, for each `appendfsync` policy asked for, one instance on Redis and two on one Redis (a
# bench client per instance, at once, half the clients each). Starts a fresh redis-server
# (`appendonly yes`, the policy) on a free loopback port per setup, and stops everything it
# started on exit; a bench that fails is reported and the next setup runs. Memory per stored
# call: scripts/measure-redis-memory.sh.
# Usage: scripts/bench-redis.sh [DURATION] [CONCURRENCY] [POLICY...]
#   (default 20s 8 always everysec; POLICY is always, everysec or no)
# MIX (default exact=40,paraphrase=30,new=30) is passed to `idem bench --mix`.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20s}
C=${2:-8}
shift $(($# < 2 ? $# : 2))
POLICIES=("${@:-always}")
[ $# -eq 0 ] && POLICIES=(always everysec)
for p in "${POLICIES[@]}"; do
  case $p in always | everysec | no) ;; *) echo "unknown appendfsync policy: $p" >&2; exit 2 ;; esac
done
MIX=${MIX:-exact=40,paraphrase=30,new=30}
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
  echo "+ idem bench --server $server --concurrency $c --duration $DURATION --mix $MIX --models-dir models --json $*" >&2
  "$BIN" bench --server "$server" --concurrency "$c" --duration "$DURATION" --mix "$MIX" \
    --models-dir models --json "$@"
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
        kinds.setdefault(k, []).append((v["p50_ms"], v["p99_ms"]))
print(json.dumps({
    "setup": label,
    "requests_per_s": round(sum(r["throughput_per_s"] for r in runs), 1),
    "p50_ms_by_kind": {k: max(x[0] for x in v) for k, v in kinds.items()},
    "p99_ms_by_kind": {k: max(x[1] for x in v) for k, v in kinds.items()},
    "shed": sum(r["shed_resource_exhausted"] for r in runs),
    "errors": [r["errors"] for r in runs],
}))
EOF
}

# start_redis POLICY: a fresh redis-server (appendonly yes, appendfsync POLICY) for one setup;
# sets URL and REDIS_PID. A fresh server per setup: no data or fsync backlog carried over.
start_redis() {
  local port dir
  port=$(free_port)
  dir=$(mktemp -d -p "$OUT")
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
    --appendfsync "$1" --save '' --daemonize no >/dev/null &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  URL=redis://127.0.0.1:$port
}

start_idem embedded --data-dir "$OUT/data"
bench "$ADDR" "$C" >"$OUT/embedded.json"
kill "$LAST_PID"
summary "one instance, embedded store" "$OUT/embedded.json"

for policy in "${POLICIES[@]}"; do
  start_redis "$policy"
  start_idem "redis1-$policy" --store redis --redis-url "$URL"
  bench "$ADDR" "$C" >"$OUT/redis1-$policy.json" || true
  kill "$LAST_PID" "$REDIS_PID"
  summary "one instance, Redis, appendfsync $policy" "$OUT/redis1-$policy.json" || true

  start_redis "$policy"
  start_idem "redis2a-$policy" --store redis --redis-url "$URL"
  A=$ADDR
  start_idem "redis2b-$policy" --store redis --redis-url "$URL"
  B=$ADDR
  bench "$A" $((C / 2)) >"$OUT/redis2a-$policy.json" &
  ba=$!
  bench "$B" $((C / 2)) >"$OUT/redis2b-$policy.json" || true
  wait "$ba" || true
  kill "${PIDS[-1]}" "${PIDS[-2]}" "$REDIS_PID"
  summary "two instances, one Redis, appendfsync $policy" "$OUT/redis2a-$policy.json" \
    "$OUT/redis2b-$policy.json" || true
done
