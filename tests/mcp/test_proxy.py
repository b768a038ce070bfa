"""End-to-end tests of `idem mcp-proxy` with the official MCP Python SDK as the client and a real
stdio MCP server (counter_server.py) behind the proxy. `run.sh` starts idem and sets IDEM_URL and
IDEM_BIN; each test uses its own session and counter file."""

import contextlib
import os
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

HERE = Path(__file__).resolve().parent
SERVER = HERE / "counter_server.py"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def counter(tmp_path):
    path = tmp_path / "executions.log"
    path.touch()
    return path


def executions(counter: Path, prefix: str) -> int:
    return sum(1 for line in counter.read_text().splitlines() if line.startswith(prefix))


def text(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


# run.sh starts idem with `--embedder none`, so tools with prose arguments use exact matching
# (sent to idem by the proxy from this tools config; it also exercises that path).
EXACT_TOOLS = 'send_email = "exact"\ncharge = "exact"\ncreate_ticket = "exact"\n'


@contextlib.asynccontextmanager
async def proxied(counter: Path, session: str, *extra: str, server: str | None = None):
    """An initialized MCP client session talking through the proxy to counter_server.py."""
    if "--tools-config" not in extra:
        config = counter.with_name("tools.toml")
        config.write_text(EXACT_TOOLS)
        extra = ("--tools-config", str(config), *extra)
    params = StdioServerParameters(
        command=os.environ["IDEM_BIN"],
        args=[
            "mcp-proxy",
            "--server",
            server or os.environ["IDEM_URL"],
            "--tenant",
            "mcp-tests",
            "--session",
            session,
            *extra,
            "--",
            sys.executable,
            str(SERVER),
        ],
        env={"COUNTER_FILE": str(counter)},
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            yield s


def new_session() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


@pytest.mark.anyio
async def test_repeated_call_runs_once_and_is_replayed(counter):
    session = new_session()
    args = {"to": "alice@example.com", "body": "The March invoice is attached."}
    async with proxied(counter, session) as s:
        first = await s.call_tool("send_email", args)
        again = await s.call_tool("send_email", args)
    assert not first.is_error
    assert text(again) == text(first), "the repeat gets the first result replayed"
    assert executions(counter, "send_email") == 1


@pytest.mark.anyio
async def test_retry_from_a_new_connection_is_replayed(counter):
    session = new_session()
    args = {"to": "bob@example.com", "body": "Your order has shipped."}
    async with proxied(counter, session) as s:
        first = await s.call_tool("send_email", args)
    # The agent restarts and retries the same call through a fresh proxy and server process.
    async with proxied(counter, session) as s:
        again = await s.call_tool("send_email", args)
    assert text(again) == text(first)
    assert executions(counter, "send_email") == 1


@pytest.mark.anyio
async def test_different_arguments_run_again(counter):
    session = new_session()
    async with proxied(counter, session) as s:
        a = await s.call_tool("send_email", {"to": "alice@example.com", "body": "Hi"})
        b = await s.call_tool("send_email", {"to": "carol@example.com", "body": "Hi"})
    assert text(a) != text(b)
    assert executions(counter, "send_email") == 2


@pytest.mark.anyio
async def test_read_only_tool_runs_every_time(counter):
    session = new_session()
    async with proxied(counter, session) as s:
        await s.list_tools()  # the proxy learns readOnlyHint from this response
        for _ in range(3):
            r = await s.call_tool("read_inbox", {"folder": "INBOX"})
            assert not r.is_error
    assert executions(counter, "read_inbox") == 3


@pytest.mark.anyio
async def test_tools_config_mode_off_wins(counter, tmp_path):
    config = tmp_path / "tools.toml"
    config.write_text('send_email = "off"\n')
    session = new_session()
    args = {"to": "dave@example.com", "body": "Ping"}
    async with proxied(counter, session, "--tools-config", str(config)) as s:
        await s.call_tool("send_email", args)
        await s.call_tool("send_email", args)
    assert executions(counter, "send_email") == 2


@pytest.mark.anyio
async def test_failed_call_is_recorded_and_a_retry_runs_again(counter):
    session = new_session()
    args = {"order": "o-1", "amount": 10}
    fail_flag = Path(str(counter) + ".fail")
    async with proxied(counter, session) as s:
        fail_flag.touch()
        failed = await s.call_tool("charge", args)
        assert failed.is_error
        fail_flag.unlink()
        ok = await s.call_tool("charge", args)
        assert not ok.is_error
        replayed = await s.call_tool("charge", args)
    assert text(replayed) == text(ok)
    assert executions(counter, "charge") == 2


@pytest.mark.anyio
async def test_fail_closed_answers_an_error_when_idem_is_down(counter):
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    async with proxied(counter, new_session(), server=dead) as s:
        with pytest.raises(Exception) as err:
            await s.call_tool("send_email", {"to": "erin@example.com", "body": "Hi"})
    assert "unavailable" in str(err.value)
    assert executions(counter, "send_email") == 0


@pytest.mark.anyio
async def test_fail_open_runs_the_tool_when_idem_is_down(counter):
    dead = "http://127.0.0.1:9"
    async with proxied(counter, new_session(), "--fail-open", server=dead) as s:
        r = await s.call_tool("send_email", {"to": "erin@example.com", "body": "Hi"})
    assert not r.is_error
    assert executions(counter, "send_email") == 1


@pytest.mark.anyio
async def test_call_in_flight_elsewhere_waits_and_replays(counter):
    session = new_session()
    args = {"title": "Printer on fire"}
    results = {}

    async def call(name):
        async with proxied(counter, session) as s:
            results[name] = await s.call_tool("create_ticket", args)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, "first")
        with anyio.fail_after(30):
            while executions(counter, "create_ticket") == 0:
                await anyio.sleep(0.05)
        tg.start_soon(call, "second")  # same call from another agent process, while in flight
        await anyio.sleep(2.0)
        Path(str(counter) + ".release").touch()
    assert not results["first"].is_error
    assert text(results["second"]) == text(results["first"])
    assert executions(counter, "create_ticket") == 1


@pytest.mark.anyio
async def test_paraphrased_repeat_is_not_run_again(counter, tmp_path):
    url = os.environ.get("IDEM_SEMANTIC_URL")
    if not url:
        pytest.skip("no idem server with the local embedder (run `make models`)")
    no_config = tmp_path / "none.toml"
    no_config.write_text("")  # every tool in the server's default mode: semantic
    session = new_session()
    extra = ("--tools-config", str(no_config))
    async with proxied(counter, session, *extra, server=url) as s:
        first = await s.call_tool(
            "send_email", {"to": "alice@example.com", "body": "Please send me the final report for the Q3 audit by Friday."}
        )
        again = await s.call_tool(
            "send_email", {"to": "alice@example.com", "body": "Please send me the Q3 audit final report by Friday."}
        )
        other = await s.call_tool(
            "send_email", {"to": "bob@example.com", "body": "Please send me the Q3 audit final report by Friday."}
        )
    assert text(again) == text(first), "the paraphrase gets the first result replayed"
    assert text(other) != text(first), "a different recipient is a different action"
    assert executions(counter, "send_email") == 2
