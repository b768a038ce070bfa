#!/usr/bin/env bash
# Memory and disk per stored call. Builds the release server and the footprint client, then for
# each N given (default 10000) starts a fresh server on an empty embedded store, stores N unique
# calls with 10-40 words of free text through gRPC (check, then complete) and prints one JSON
# line: RSS growth per call (VmRSS before/after) and data-directory growth per call.
# Usage: scripts/measure-footprint.sh [N...]
# EMBEDDER=stub (pseudo-random vectors over HTTP, for large N) or local (the model, default);
# CONCURRENCY (default 4); PER_SESSION calls per session (default 1000);
# SERVER_ARGS adds flags to `idem serve`, e.g. SERVER_ARGS="--embed-cache 0"; SETTLE seconds
# to wait before the final reading (default 3; long enough for the background embeddings of
# the calls recorded without one, e.g. 120 for 10,000 calls on the local model).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin idem --example footprint
for n in "${@:-10000}"; do
  ./target/release/examples/footprint --idem target/release/idem --calls "$n" \
    --embedder "${EMBEDDER:-local}" --concurrency "${CONCURRENCY:-4}" \
    --per-session "${PER_SESSION:-1000}" --settle-secs "${SETTLE:-3}" --models-dir models --server-args="${SERVER_ARGS:-}"
done
