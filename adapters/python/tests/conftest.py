"""Fixtures: a real `idem serve` on a free port (memory store), one per test session.

The binary is $IDEM_BIN or <repo>/target/debug/idem (built by `make test`, or by run_tests.sh).
The semantic server (`--embedder local --models-dir <repo>/models`) starts only for tests that ask
for it, and is skipped with a reason when the model files are missing ($IDEM_REQUIRE_SEMANTIC=1
turns that skip into a failure).
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("IDEM_BIN", REPO / "target" / "debug" / "idem"))
MODELS = Path(os.environ.get("IDEM_MODELS_DIR", REPO / "models"))


class Server:
    def __init__(self, extra_args: list[str], log_path: Path):
        if not BIN.is_file():
            pytest.fail(f"idem binary not found at {BIN}: run `cargo build` (or set IDEM_BIN)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--listen", "127.0.0.1:0", "--store", "memory", *extra_args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
        )
        line: list[bytes] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(120)
        banner = line[0].decode().strip() if line else ""
        prefix = "idem listening on "
        if not banner.startswith(prefix):
            self.stop()
            pytest.fail(f"idem serve did not print its banner (got {banner!r}); log: {log_path}")
        self.addr = banner[len(prefix):]
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def pytest_sessionfinish(session, exitstatus):
    """With $IDEM_NO_SKIP=1 (the package checks) a skipped test fails the run: an extra that did
    not install, or model files that are missing, must not pass unnoticed."""
    if os.environ.get("IDEM_NO_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        for report in skipped:
            print(f"IDEM_NO_SKIP: skipped: {report.nodeid}: {report.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def idem_server(tmp_path_factory):
    # $IDEM_PY_EMBEDDER=local runs the default server with the semantic stages too.
    emb = os.environ.get("IDEM_PY_EMBEDDER", "none")
    extra = ["--embedder", emb] + (["--models-dir", str(MODELS)] if emb == "local" else [])
    s = Server(extra, tmp_path_factory.mktemp("idem") / "server.log")
    yield s
    s.stop()


AUTH_TOKENS = {"tok-py-agent-a": ("a", "agent"), "tok-py-agent-b": ("b", "agent")}


@pytest.fixture(scope="session")
def idem_auth_server(tmp_path_factory):
    """A server with ``[auth] required = true`` and the tokens of AUTH_TOKENS."""
    import hashlib

    d = tmp_path_factory.mktemp("idem-auth")
    lines = ["[auth]", "required = true"]
    for token, (tenant, role) in AUTH_TOKENS.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        lines += ["[[auth.tokens]]", f'sha256 = "{digest}"', f'tenant = "{tenant}"', f'role = "{role}"']
    (d / "idem.toml").write_text("\n".join(lines) + "\n")
    s = Server(["--embedder", "none", "--config", str(d / "idem.toml")], d / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def idem_semantic_server(tmp_path_factory):
    if not (MODELS / "model.onnx").is_file():
        msg = f"model files missing in {MODELS}: run `make models`"
        if os.environ.get("IDEM_REQUIRE_SEMANTIC") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    s = Server(["--embedder", "local", "--models-dir", str(MODELS)],
               tmp_path_factory.mktemp("idem-sem") / "server.log")
    yield s
    s.stop()


@pytest.fixture
def session_name():
    """A fresh session per test, so tests never see each other's records."""
    return f"s-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(idem_server, session_name):
    from idem_client import IdemClient

    c = IdemClient(idem_server.addr, tenant="pytest", session=session_name, in_flight_timeout=10)
    yield c
    c.close()


@pytest.fixture
async def aclient(idem_server, session_name):
    from idem_client import AsyncIdemClient

    c = AsyncIdemClient(idem_server.addr, tenant="pytest", session=session_name, in_flight_timeout=10)
    yield c
    await c.close()


class Counter:
    """A side-effect counter: how many times each tool really ran."""

    def __init__(self):
        self.calls: list = []

    def __call__(self, *item):
        self.calls.append(item)

    @property
    def n(self) -> int:
        return len(self.calls)


@pytest.fixture
def counter():
    return Counter()
