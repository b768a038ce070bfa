#!/usr/bin/env bash
# Runs the Python adapter's tests (adapters/python/tests) against a real `idem serve`.
#   - ensures the shared venv build/venv (created if missing, never deleted) and the test deps;
#   - builds target/debug/idem when it is missing (make test builds it first);
#   - generates the gRPC stubs from proto/ (build_stubs.py: the build step, never run at import)
#     and installs idem_client (editable) into the venv;
#   - runs pytest; the fixtures start the servers. pytest's "no tests collected" (5) is a failure.
# Env: IDEM_VENV (venv path), IDEM_BIN (server binary), IDEM_REQUIRE_SEMANTIC=1 (fail instead of
# skip when models/ is missing), IDEM_PY_EMBEDDER=local (semantic stages on the default server too).
# Extra arguments go to pytest.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${IDEM_VENV:-$REPO/build/venv}"

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(command -v python3.11 || command -v python3)"
    echo "run_tests.sh: creating venv $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
PYBIN="$VENV/bin/python"

if ! "$PYBIN" -c "import grpc, grpc_tools, mypy_protobuf, setuptools, google.protobuf, pytest, pytest_asyncio, langchain.agents.middleware, langchain_core, agents" 2>/dev/null; then
    echo "run_tests.sh: installing test dependencies into $VENV"
    "$PYBIN" -m pip install --quiet --disable-pip-version-check -r "$HERE/requirements-test.txt"
fi

if [ -z "${IDEM_BIN:-}" ] && [ ! -x "$REPO/target/debug/idem" ]; then
    echo "run_tests.sh: target/debug/idem missing; cargo build"
    (cd "$REPO" && cargo build --bin idem)
fi

"$PYBIN" "$HERE/build_stubs.py"

# Editable install of idem_client (deps are already there); fall back to PYTHONPATH (the stubs
# are generated above) if the venv's setuptools cannot do an editable install offline.
# tests/python/packages.sh checks the real installs (wheel, sdist, directory, editable).
if ! "$PYBIN" -c "import idem_client, pathlib, sys; sys.exit(0 if pathlib.Path(idem_client.__file__).resolve().parent == pathlib.Path('$HERE/idem_client').resolve() else 1)" 2>/dev/null; then
    if ! "$PYBIN" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$HERE" >/dev/null 2>&1; then
        echo "run_tests.sh: editable install failed; using PYTHONPATH"
        export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi

export OPENAI_AGENTS_DISABLE_TRACING=1
cd "$HERE"
set +e
"$PYBIN" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "run_tests.sh: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
