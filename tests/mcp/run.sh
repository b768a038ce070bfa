#!/usr/bin/env bash
# Runs the MCP proxy tests: the official MCP Python SDK as client, `idem mcp-proxy` in between,
# counter_server.py behind it. Uses target/debug/idem (build it first: `cargo build`), the shared
# venv build/venv (created or topped up here, never deleted), and throwaway `idem serve`s on
# 127.0.0.1:0: one without embedder, and one with the local model when models/ holds it (for the
# paraphrase test; set IDEM_MCP_SEMANTIC=0 to skip it). Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/build/venv"
IDEM_BIN="${IDEM_BIN:-$ROOT/target/debug/idem}"

[[ -x "$IDEM_BIN" ]] || { echo "run.sh: $IDEM_BIN missing; run cargo build first" >&2; exit 1; }
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" -c 'import mcp.server.mcpserver, pytest, anyio' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet 'mcp>=2.3,<3' pytest
fi

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

# start_server NAME VAR ARGS...: starts `idem serve ARGS` and sets VAR to its URL once the
# banner is out. It runs in this shell (never in a `$(...)` subshell), so the PID it appends to
# PIDS is the one the exit trap kills.
start_server() {
    local name="$1" var="$2" log="$TMP/$1.log" addr=""
    shift 2
    "$IDEM_BIN" serve --store memory --listen 127.0.0.1:0 "$@" >"$log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 600); do
        addr="$(sed -n 's/^idem listening on //p' "$log" | head -n1)"
        [[ -n "$addr" ]] && { printf -v "$var" '%s' "http://$addr"; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "run.sh: idem serve ($name) did not start:" >&2
    cat "$log" >&2
    return 1
}

start_server plain IDEM_URL --embedder none
export IDEM_URL IDEM_BIN
if [[ "${IDEM_MCP_SEMANTIC:-1}" != 0 && -f "$ROOT/models/model.onnx" ]]; then
    start_server semantic IDEM_SEMANTIC_URL --embedder local --models-dir "$ROOT/models"
    export IDEM_SEMANTIC_URL
fi

"$VENV/bin/python" -m pytest -q -p no:cacheprovider -p no:asyncio "$ROOT/tests/mcp" "$@"
