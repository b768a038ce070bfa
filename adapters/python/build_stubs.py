#!/usr/bin/env python3
"""Generate idem_client/_gen/ (gRPC stubs) from the repository's proto/ with grpcio-tools."""

import importlib.util
from pathlib import Path


def load_stubs_module():
    """idem_client/_stubs.py on its own, without importing the package (which needs the stubs)."""
    path = Path(__file__).resolve().parent / "idem_client" / "_stubs.py"
    spec = importlib.util.spec_from_file_location("_idem_client_stubs", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    out = load_stubs_module().generate()
    print(f"generated {out}")
