"""The sync and asyncio clients against a real `idem serve`."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import grpc
import pytest

from idem_client import (
    AsyncIdemClient,
    IdemClient,
    IdemRpcError,
    IdemUnavailable,
    InFlightTimeout,
    pb2,
)


def send_email(counter, to, body):
    def run():
        counter(to, body)
        return {"message_id": f"m-{counter.n}", "to": to}

    return run


def test_retried_call_runs_once_distinct_calls_run_each(client, counter):
    args = {"to": "alice@example.com", "body": "Hi Alice, the March invoice is attached."}
    first = client.run("send_email", args, send_email(counter, **args))
    # A retry with keys in another order and different spacing is the same call.
    retry = {"body": "Hi Alice,  the March invoice is attached.", "to": "alice@example.com"}
    again = client.run_detailed("send_email", retry, send_email(counter, **retry))
    assert counter.n == 1
    assert again.value == first == {"message_id": "m-1", "to": "alice@example.com"}
    assert again.verdict == "DUPLICATE" and again.replayed and not again.executed
    other = {"to": "bob@example.com", "body": "Hi Bob, the March invoice is attached."}
    client.run("send_email", other, send_email(counter, **other))
    client.run("send_email", other, send_email(counter, **other))
    assert counter.n == 2


def test_tool_error_is_recorded_failed_and_a_retry_runs_again(client, counter):
    args = {"order": 7, "amount": 10}

    def failing():
        counter("charge")
        raise RuntimeError("card declined")

    with pytest.raises(RuntimeError, match="card declined"):
        client.run("charge", args, failing)
    calls = client.list_calls().calls
    assert [c.status for c in calls] == [pb2.FAILED]
    assert "card declined" in calls[0].error
    out = client.run_detailed("charge", args, lambda: counter("charge") or {"ok": True})
    assert out.verdict == "NEW" and out.value == {"ok": True}
    assert counter.n == 2
    # Now it succeeded: the next retry is replayed.
    assert client.run("charge", args, lambda: counter("charge")) == {"ok": True}
    assert counter.n == 2


def test_in_flight_waits_for_the_original_and_replays_it(client, counter):
    args = {"ticket": "T-1", "title": "Printer on fire"}
    started, release = threading.Event(), threading.Event()

    def slow():
        counter("create_ticket")
        started.set()
        release.wait(10)
        return {"id": "T-1"}

    results = {}
    t = threading.Thread(target=lambda: results.setdefault("a", client.run("create_ticket", args, slow)))
    t.start()
    assert started.wait(10)

    def second():
        results["b"] = client.run_detailed("create_ticket", args, lambda: counter("dup"))

    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.3)
    assert "b" not in results  # still waiting on the original
    release.set()
    t.join(10)
    t2.join(10)
    assert counter.calls == [("create_ticket",)]
    assert results["a"] == {"id": "T-1"}
    assert results["b"].value == {"id": "T-1"}
    assert results["b"].verdict == "IN_FLIGHT" and results["b"].replayed


def test_in_flight_wait_is_bounded(idem_server, session_name, counter):
    c = IdemClient(idem_server.addr, tenant="pytest", session=session_name, in_flight_timeout=0.5)
    resp = c.check("deploy", {"service": "api", "version": "1.2.3"})
    assert resp.verdict == pb2.NEW
    t0 = time.monotonic()
    with pytest.raises(InFlightTimeout) as e:
        c.run("deploy", {"service": "api", "version": "1.2.3"}, lambda: counter("deploy"))
    assert e.value.call_id == resp.call_id
    assert time.monotonic() - t0 < 5
    assert counter.n == 0
    c.close()


def test_mode_off_runs_every_time_and_records_nothing(client, counter):
    client.configure_session(tools={"search": "off"})
    for _ in range(3):
        out = client.run_detailed("search", {"q": "weather"}, lambda: counter("search") or ["sunny"])
        assert out.verdict == "OFF" and out.call_id == "" and out.value == ["sunny"]
    assert counter.n == 3
    assert list(client.list_calls().calls) == []


def test_idempotency_key_reused_for_another_call_is_an_error(client, counter):
    client.run("charge", {"order": 1, "amount": 5}, lambda: counter() or "ok", idempotency_key="k-1")
    with pytest.raises(IdemRpcError) as e:
        client.run("charge", {"order": 2, "amount": 5}, lambda: counter() or "ok", idempotency_key="k-1")
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert counter.n == 1


def test_complete_cost_and_stats(client, counter):
    args = {"order": 3, "amount": 12}
    client.run("charge", args, lambda: {"ok": 1}, cost=lambda r: 0.25)
    client.run("charge", args, lambda: counter())
    stats = client.get_stats(session=client.session)
    assert stats.checks == 2 and stats.replays_served == 1
    assert stats.cost_avoided == pytest.approx(0.25)
    assert counter.n == 0


def _dead_addr() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


def test_unreachable_fail_closed_raises(counter):
    c = IdemClient(_dead_addr(), rpc_timeout=1.0)
    with pytest.raises(IdemUnavailable):
        c.run("send_email", {"to": "a@example.com"}, lambda: counter())
    assert counter.n == 0
    c.close()


def test_unreachable_fail_open_runs_and_warns(counter, caplog):
    c = IdemClient(_dead_addr(), rpc_timeout=1.0, on_unavailable="fail_open")
    with caplog.at_level(logging.WARNING, logger="idem_client"):
        out = c.run_detailed("send_email", {"to": "a@example.com"}, lambda: counter() or "sent")
    assert out.value == "sent" and out.verdict == "UNAVAILABLE"
    assert counter.n == 1
    assert any("FAILING OPEN" in r.getMessage() for r in caplog.records)
    c.close()


def test_bad_policy_name_is_rejected():
    with pytest.raises(ValueError):
        IdemClient("127.0.0.1:1", on_unavailable="maybe")


# -- asyncio ------------------------------------------------------------------------------

async def test_async_retried_call_runs_once(aclient, counter):
    args = {"to": "carol@example.com", "body": "Lunch at noon?"}

    async def tool():
        counter("send")
        await asyncio.sleep(0)
        return {"message_id": "m-c"}

    assert await aclient.run("send_email", args, tool) == {"message_id": "m-c"}
    out = await aclient.run_detailed("send_email", args, tool)
    assert out.verdict == "DUPLICATE" and out.value == {"message_id": "m-c"}
    await aclient.run("send_email", {**args, "to": "dave@example.com"}, tool)
    assert counter.n == 2


async def test_async_concurrent_repeats_run_once(aclient, counter):
    args = {"order": 99, "amount": 30}

    async def charge():
        counter("charge")
        await asyncio.sleep(0.3)
        return {"charged": 30}

    results = await asyncio.gather(*(aclient.run("charge", args, charge) for _ in range(5)))
    assert results == [{"charged": 30}] * 5
    assert counter.n == 1


async def test_async_tool_error_recorded_failed(aclient, counter):
    async def boom():
        counter("x")
        raise ValueError("nope")

    with pytest.raises(ValueError):
        await aclient.run("charge", {"order": 5, "amount": 1}, boom)
    calls = (await aclient.list_calls()).calls
    assert calls[0].status == pb2.FAILED


async def test_async_unreachable(counter, caplog):
    c = AsyncIdemClient(_dead_addr(), rpc_timeout=1.0)
    with pytest.raises(IdemUnavailable):
        await c.run("t", {"a": 1}, lambda: counter())
    await c.close()
    c = AsyncIdemClient(_dead_addr(), rpc_timeout=1.0, on_unavailable="fail_open")
    with caplog.at_level(logging.WARNING, logger="idem_client"):
        assert await c.run("t", {"a": 1}, lambda: counter() or 5) == 5
    assert counter.n == 1
    await c.close()


class _SheddingIdem:
    """A gRPC endpoint that sheds the first `shed` checks (RESOURCE_EXHAUSTED), then says NEW:
    what an overloaded idem does, without having to overload one."""

    def __init__(self, shed):
        from concurrent import futures

        from idem_client._core import pb2_grpc

        self.shed, self.calls = shed, 0
        outer = self

        class Servicer(pb2_grpc.IdemServicer):
            def CheckAndRecord(self, request, context):
                outer.calls += 1
                if outer.calls <= outer.shed:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "embedding backlog")
                return pb2.CheckResponse(verdict=1, call_id="c-1")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb2_grpc.add_IdemServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.stop(0)


def test_a_shed_check_is_retried_then_left_to_the_unavailability_policy():
    with _SheddingIdem(shed=2) as srv:
        c = IdemClient(f"127.0.0.1:{srv.port}", overload_retries=3)
        assert c.check("send_email", {"to": "a@example.com"}).call_id == "c-1"
        assert srv.calls == 3
    with _SheddingIdem(shed=10) as srv:
        c = IdemClient(f"127.0.0.1:{srv.port}", overload_retries=2)
        with pytest.raises(IdemUnavailable):
            c.check("send_email", {"to": "a@example.com"})
        assert srv.calls == 3
        ran = []
        opened = IdemClient(f"127.0.0.1:{srv.port}", overload_retries=0, on_unavailable="fail_open")
        assert opened.run("send_email", {"to": "a@example.com"}, lambda: ran.append(1) or "sent") == "sent"
        assert ran == [1]


def test_async_client_retries_a_shed_check():
    async def go(port):
        async with AsyncIdemClient(f"127.0.0.1:{port}", overload_retries=3) as c:
            return (await c.check("send_email", {"to": "a@example.com"})).call_id

    with _SheddingIdem(shed=1) as srv:
        assert asyncio.run(go(srv.port)) == "c-1"
        assert srv.calls == 2


def test_the_tool_sees_its_action_key_and_it_is_completed_with_its_attempt(client, counter):
    from idem_client import current_action

    seen = {}

    def charge(idempotency_key=None):
        counter("charge")
        seen["ctx"] = current_action()
        seen["kwarg"] = idempotency_key
        return {"charge": "ch_1"}

    out = client.run_detailed("charge", {"card": "tok_1", "amount": 2500}, charge,
                              action_key_arg="idempotency_key")
    assert out.verdict == "NEW" and out.attempt == 1
    assert out.action_key and out.action_key == seen["kwarg"] == seen["ctx"].key
    assert seen["ctx"].attempt == 1
    assert current_action() is None  # only while the tool runs
    rec = client.get_call(out.call_id)
    assert rec.status == pb2.SUCCEEDED and rec.action_key == out.action_key and rec.attempt == 1
    # A Complete naming another attempt is refused and changes nothing.
    with pytest.raises(IdemRpcError) as e:
        client.complete(out.call_id, {"charge": "other"}, attempt=2)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_async_tool_sees_its_action_key(idem_server, session_name):
    from idem_client import current_action

    async def main():
        async with AsyncIdemClient(idem_server.addr, tenant="pytest", session=session_name) as c:
            async def send():
                await asyncio.sleep(0)
                return {"key": current_action().key}

            out = await c.run_detailed("send_email", {"to": "a@b.c", "body": "hi"}, send)
            return out

    out = asyncio.run(main())
    assert out.value == {"key": out.action_key} and out.action_key


def test_in_flight_repeat_is_answered_by_the_server_side_wait(idem_server, session_name, counter):
    # Polling this slowly would take seconds; WaitForCall answers when the original completes.
    c = IdemClient(idem_server.addr, tenant="pytest", session=session_name, in_flight_timeout=10,
                   poll_interval=5.0, poll_max_interval=5.0)
    args = {"ticket": "T-2", "title": "Toner low"}
    started, release = threading.Event(), threading.Event()

    def slow():
        counter("create_ticket")
        started.set()
        release.wait(10)
        return {"id": "T-2"}

    results = {}
    t = threading.Thread(target=lambda: results.setdefault("a", c.run("create_ticket", args, slow)))
    t.start()
    assert started.wait(10)
    t2 = threading.Thread(target=lambda: results.setdefault(
        "b", c.run_detailed("create_ticket", args, lambda: counter("dup"))))
    t2.start()
    time.sleep(0.3)
    released_at = time.monotonic()
    release.set()
    t.join(10)
    t2.join(10)
    assert results["b"].value == {"id": "T-2"} and results["b"].replayed
    assert time.monotonic() - released_at < 3.0
    assert counter.calls == [("create_ticket",)]
    c.close()


def test_server_advisories_are_logged(client, counter, caplog):
    args = {"to": "acct-1", "amount": 5}
    client.run("pay", args, lambda: counter("pay"), idempotency_key="attempt-1")
    with caplog.at_level(logging.WARNING, logger="idem_client"):
        client.run("pay", args, lambda: counter("pay"), idempotency_key="attempt-2")
    assert counter.n == 1
    assert any("key_changes_per_attempt" in r.getMessage() for r in caplog.records)


def test_a_call_of_the_inverse_tool_lets_the_earlier_call_run_again(client, counter):
    client.configure_session(
        tools={"disable_2fa": {"resource_fields": ["user_id"], "inverse_of": "enable_2fa"}})
    for tool in ["enable_2fa", "disable_2fa", "enable_2fa", "enable_2fa"]:
        client.run(tool, {"user_id": "u-1"}, lambda tool=tool: counter(tool) or {"ok": True})
    # enable, disable, enable ran; the last enable repeats the second one.
    assert counter.calls == [("enable_2fa",), ("disable_2fa",), ("enable_2fa",)]
