#!/usr/bin/env bash
# Redis memory per stored call: starts its own redis-server on a free loopback port (no
# persistence: memory is the same either way), then for each mode stores N unique calls through
# gRPC on a fresh release server (check, then complete; 1000 calls per session) and prints one
# JSON line: `used_memory` growth per call and `MEMORY USAGE` per key kind.
# Modes: with embeddings (pseudo-random 384-d vectors from a stub embedder, the same bytes as
# the model's) and without (`--embedder none`).
# Usage: scripts/measure-redis-memory.sh [N]   (default 100000); CONCURRENCY (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
cargo build --release --quiet --bin idem --example footprint
DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no \
  --daemonize no >/dev/null &
RPID=$!
trap 'kill $RPID 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
for _ in $(seq 1 100); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
for embedder in stub none; do
  redis-cli -p "$PORT" flushall >/dev/null
  ./target/release/examples/footprint --idem target/release/idem --calls "$N" \
    --embedder "$embedder" --concurrency "${CONCURRENCY:-8}" --per-session 1000 \
    --models-dir models --redis-url "redis://127.0.0.1:$PORT"
done
