"""Getting the BFCL data: the `bfcl-eval` wheel, fetched with pip into a cache or given by path.

Only the data files inside the wheel are read (straight from the zip); nothing is installed or
imported from the package.
"""

import hashlib
import json
import os
import subprocess
import sys
import zipfile

BFCL_PACKAGE = "bfcl-eval"
BFCL_VERSION = "2026.3.23"
BFCL_WHEEL = "bfcl_eval-2026.3.23-py3-none-any.whl"
BFCL_SHA256 = "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a"
BFCL_LICENSE = "Apache-2.0"
DATA_PREFIX = "bfcl_eval/data/"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(cache_dir):
    """Returns the path of the pinned wheel, downloading it with pip into `cache_dir` if absent."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, BFCL_WHEEL)
    if not os.path.exists(path):
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-d", cache_dir, f"{BFCL_PACKAGE}=={BFCL_VERSION}",
        ]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
    return path


def open_wheel(path):
    digest = sha256_file(path)
    if digest != BFCL_SHA256:
        raise SystemExit(
            f"{path}: sha256 {digest} is not the pinned {BFCL_SHA256}; "
            f"expected {BFCL_PACKAGE}=={BFCL_VERSION}"
        )
    return BfclData(zipfile.ZipFile(path))


class BfclData:
    """Read access to the JSON Lines files under bfcl_eval/data/ in the wheel."""

    def __init__(self, zf):
        self.zf = zf
        meta = zf.read(f"bfcl_eval-{BFCL_VERSION}.dist-info/METADATA").decode("utf-8")
        self.license = next(
            (l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("License:")), "?"
        )

    def names(self):
        return sorted(n[len(DATA_PREFIX):] for n in self.zf.namelist() if n.startswith(DATA_PREFIX))

    def jsonl(self, rel):
        text = self.zf.read(DATA_PREFIX + rel).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]
