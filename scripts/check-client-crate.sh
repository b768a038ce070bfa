#!/usr/bin/env bash
# The Rust client crate on its own: `cargo build -p idem-client` (its own feature set, as a
# program that depends on it gets), its dependency tree free of the server's heavy dependencies,
# and its example run against a real `idem serve` (target/debug/idem, IDEM_BIN).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"
IDEM_BIN="${IDEM_BIN:-$ROOT/target/debug/idem}"
# The server's dependencies a client must never pull in.
FORBIDDEN='ort|ort-sys|fastembed|redb|plotters|hnsw_rs|tokenizers|reqwest'

"$CARGO" build -p idem-client --examples

TREE="$("$CARGO" tree -p idem-client --prefix none --format '{p}')"
bad="$(grep -E "^($FORBIDDEN) v" <<<"$TREE" | sort -u || true)"
if [[ -n "$bad" ]]; then
    echo "check-client-crate.sh: idem-client depends on server crates:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "check-client-crate.sh: idem-client's $(sort -u <<<"$TREE" | wc -l) crates include none of: ${FORBIDDEN//|/, }"

[[ -x "$IDEM_BIN" ]] || { echo "check-client-crate.sh: $IDEM_BIN missing; cargo build first" >&2; exit 1; }
TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

"$IDEM_BIN" serve --store memory --embedder none --listen 127.0.0.1:0 >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
addr=""
for _ in $(seq 1 300); do
    addr="$(sed -n 's/^idem listening on //p' "$TMP/server.log" | head -n1)"
    [[ -n "$addr" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -n "$addr" ]] || { echo "check-client-crate.sh: idem serve did not start:" >&2; cat "$TMP/server.log" >&2; exit 1; }

"$ROOT/target/debug/examples/guard" "http://$addr"
echo "check-client-crate.sh: the example ran against idem at $addr"
