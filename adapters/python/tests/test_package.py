"""The installed package: one version with the server and the project, stubs generated at build
time (typed), nothing generated or needed at import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import idem_client
from conftest import REPO


def test_server_reports_the_package_version(client):
    info = client.server_version()
    assert info.api == "idem.v1"
    assert info.version == idem_client.__version__


async def test_async_client_reports_the_version(aclient):
    info = await aclient.server_version()
    assert info.version == idem_client.__version__


def test_version_is_the_workspace_version():
    cargo = (REPO / "Cargo.toml").read_text()
    section = re.search(r"(?ms)^\[workspace\.package\]\s*$(.*?)(?=^\[|\Z)", cargo)
    assert section, "the workspace Cargo.toml has a [workspace.package] section"
    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', section.group(1))
    assert version and version.group(1) == idem_client.__version__


def test_generated_modules_ship_with_type_stubs():
    pkg = Path(idem_client.__file__).resolve().parent
    assert (pkg / "py.typed").is_file()
    for module in ("idem_pb2", "idem_pb2_grpc"):
        assert (pkg / "_gen" / f"{module}.py").is_file()
        assert (pkg / "_gen" / f"{module}.pyi").is_file(), f"{module}.pyi missing: py.typed lies"


def test_import_needs_no_build_tools():
    # grpc_tools made unimportable: importing the package and its adapters must not need it.
    code = (
        "import sys; sys.modules['grpc_tools'] = None; sys.modules['mypy_protobuf'] = None\n"
        "import idem_client, idem_client._core\n"
        "assert idem_client.pb2.VersionInfo(version='x').version == 'x'\n"
        "print(idem_client.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == idem_client.__version__
