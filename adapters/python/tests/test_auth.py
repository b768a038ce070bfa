"""Tokens: the clients send ``token=`` (or $IDEM_TOKEN) as ``authorization: Bearer``; a server
with ``[auth] required = true`` refuses calls without one and binds each token to its tenant."""

from __future__ import annotations

import grpc
import pytest

from idem_client import AsyncIdemClient, IdemClient, IdemRpcError


def test_no_token_is_unauthenticated(idem_auth_server, session_name, monkeypatch):
    monkeypatch.delenv("IDEM_TOKEN", raising=False)
    with IdemClient(idem_auth_server.addr, tenant="a", session=session_name) as c:
        with pytest.raises(IdemRpcError) as e:
            c.check("send_email", {"to": "x@example.com"})
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_token_argument_acts_for_its_tenant(idem_auth_server, session_name, counter):
    with IdemClient(idem_auth_server.addr, session=session_name, token="tok-py-agent-a") as c:
        run = lambda: counter("ran") or {"ok": True}  # noqa: E731
        assert c.run("send_email", {"to": "x@example.com"}, run) == {"ok": True}
        assert c.run("send_email", {"to": "x@example.com"}, run) == {"ok": True}
        assert counter.n == 1, "the repeat was replayed"
        calls = c.list_calls()
        assert [r.tenant for r in calls.calls] == ["a"]
    # Another tenant's token neither sees nor may name tenant a.
    with IdemClient(idem_auth_server.addr, session=session_name, token="tok-py-agent-b") as b:
        assert list(b.list_calls().calls) == []
        with pytest.raises(IdemRpcError) as e:
            b.get_call(calls.calls[0].call_id)
        assert e.value.code == grpc.StatusCode.NOT_FOUND
    with IdemClient(idem_auth_server.addr, tenant="a", session=session_name, token="tok-py-agent-b") as b:
        with pytest.raises(IdemRpcError) as e:
            b.check("send_email", {"to": "x@example.com"})
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED


async def test_async_client_takes_the_token_from_the_environment(idem_auth_server, session_name, monkeypatch):
    monkeypatch.setenv("IDEM_TOKEN", "tok-py-agent-b")
    c = AsyncIdemClient(idem_auth_server.addr, session=session_name)
    try:
        r = await c.check("send_email", {"to": "y@example.com"})
        assert r.call_id
        assert (await c.get_call(r.call_id)).tenant == "b"
    finally:
        await c.close()
    monkeypatch.setenv("IDEM_TOKEN", "wrong")
    c = AsyncIdemClient(idem_auth_server.addr, session=session_name)
    try:
        with pytest.raises(IdemRpcError) as e:
            await c.check("send_email", {"to": "y@example.com"})
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await c.close()


def test_in_flight_wait_sends_the_token(idem_auth_server, session_name):
    """WaitForCall carries the token too: a repeat of a call still running waits for it and
    returns its result instead of failing UNAUTHENTICATED."""
    import threading
    import time

    with IdemClient(idem_auth_server.addr, session=session_name, token="tok-py-agent-a",
                    in_flight_timeout=10) as c:
        started = threading.Event()

        def slow():
            started.set()
            time.sleep(0.3)
            return {"n": 1}

        first = threading.Thread(target=lambda: c.run("slow_tool", {"x": 1}, slow))
        first.start()
        started.wait(5)
        assert c.run("slow_tool", {"x": 1}, lambda: {"n": 2}) == {"n": 1}
        first.join(5)
