#!/usr/bin/env bash
# The Python package installed the way users install it, each in a fresh venv without
# grpcio-tools, then the adapter tests against a real `idem serve`:
#   wheel     the wheel `python -m build` makes (sdist first, wheel from the sdist), with the
#             [langchain,openai-agents] extras, plus mypy over the installed package (py.typed);
#   sdist     `pip install` of that sdist;
#   dir       `pip install ./adapters/python` (not editable);
#   editable  `pip install -e ./adapters/python`.
# Each must import from where it was installed and pass every test (a skip is a failure here,
# IDEM_NO_SKIP=1). Usage: tests/python/packages.sh [KIND...] (default: all four). Uses
# target/debug/idem (IDEM_BIN) and models/ for the semantic tests; leaves nothing running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PKG="$ROOT/adapters/python"
export IDEM_BIN="${IDEM_BIN:-$ROOT/target/debug/idem}"
KINDS=("${@:-wheel sdist dir editable}")
PY="$(command -v python3.11 || command -v python3)"
PIP=(--quiet --disable-pip-version-check)
TEST_DEPS=("pytest>=8" "pytest-asyncio>=0.24")
EXTRAS="[langchain,openai-agents]"

[[ -x "$IDEM_BIN" ]] || { echo "packages.sh: $IDEM_BIN missing; run cargo build first" >&2; exit 1; }
[[ -f "$ROOT/models/model.onnx" ]] || { echo "packages.sh: models/ missing; run make models" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fresh_venv() {
    "$PY" -m venv "$TMP/venv-$1"
    echo "$TMP/venv-$1/bin/python"
}

echo "packages.sh: building sdist and wheel"
BUILDER="$(fresh_venv builder)"
"$BUILDER" -m pip install "${PIP[@]}" build
"$BUILDER" -m build --outdir "$TMP/dist" "$PKG" >"$TMP/build.log" 2>&1 || {
    cat "$TMP/build.log" >&2
    exit 1
}
WHEEL="$(ls "$TMP"/dist/idem_client-*.whl)"
SDIST="$(ls "$TMP"/dist/idem_client-*.tar.gz)"
VERSION="$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$PKG/idem_client/_version.py")"
case "$WHEEL" in
    *"idem_client-$VERSION-py3-none-any.whl") ;;
    *) echo "packages.sh: wheel $WHEEL is not version $VERSION (the workspace's)" >&2; exit 1 ;;
esac
# The wheel ships the stubs with their type stubs, the marker, and no build step.
"$BUILDER" - "$WHEEL" <<'EOF'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = {"idem_client/py.typed", "idem_client/_version.py", "idem_client/_gen/idem_pb2.py",
        "idem_client/_gen/idem_pb2.pyi", "idem_client/_gen/idem_pb2_grpc.py",
        "idem_client/_gen/idem_pb2_grpc.pyi"}
missing = sorted(need - names)
if missing:
    sys.exit(f"packages.sh: the wheel lacks {missing}")
EOF

for kind in ${KINDS[@]}; do
    echo "packages.sh: $kind: fresh venv, install, tests"
    VPY="$(fresh_venv "$kind")"
    case "$kind" in
        wheel) TARGET=("$WHEEL$EXTRAS" mypy types-protobuf types-grpcio); WHERE="$TMP/venv-$kind" ;;
        sdist) TARGET=("idem-client$EXTRAS @ file://$SDIST"); WHERE="$TMP/venv-$kind" ;;
        dir) TARGET=("$PKG$EXTRAS"); WHERE="$TMP/venv-$kind" ;;
        editable) TARGET=(-e "$PKG$EXTRAS"); WHERE="$PKG" ;;
        *) echo "packages.sh: unknown kind $kind (wheel, sdist, dir, editable)" >&2; exit 2 ;;
    esac
    "$VPY" -m pip install "${PIP[@]}" "${TARGET[@]}" "${TEST_DEPS[@]}"
    (cd "$TMP" && "$VPY" - "$WHERE" "$VERSION") <<'EOF'
import importlib.util, pathlib, sys
where, version = pathlib.Path(sys.argv[1]).resolve(), sys.argv[2]
if importlib.util.find_spec("grpc_tools") is not None:
    sys.exit("packages.sh: grpcio-tools is installed; the check needs a venv without it")
import idem_client, idem_client.langchain, idem_client.openai_agents
got = pathlib.Path(idem_client.__file__).resolve()
if where not in got.parents:
    sys.exit(f"packages.sh: idem_client imported from {got}, not from {where}")
if idem_client.__version__ != version:
    sys.exit(f"packages.sh: idem_client {idem_client.__version__}, expected {version}")
print(f"packages.sh: idem_client {idem_client.__version__} from {got.parent}")
EOF
    if [[ "$kind" == wheel ]]; then
        # py.typed is honest: mypy checks the installed package against its own stubs.
        (cd "$TMP" && "$VPY" -m mypy --no-incremental -p idem_client)
    fi
    # From outside the source tree, so `import idem_client` finds the installed package.
    (cd "$TMP" && OPENAI_AGENTS_DISABLE_TRACING=1 IDEM_NO_SKIP=1 IDEM_REQUIRE_SEMANTIC=1 \
        "$VPY" -m pytest -q -p no:cacheprovider --rootdir "$PKG" -c "$PKG/pyproject.toml" "$PKG/tests")
done
echo "packages.sh: ${KINDS[*]}: installed and tested"
