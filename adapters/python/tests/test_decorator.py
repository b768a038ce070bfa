"""@dedup_tool on plain and async functions."""

from __future__ import annotations

import pytest

from idem_client import AsyncIdemClient, IdemClient, dedup_tool, pb2


def test_decorated_function_runs_once_per_distinct_call(client, counter):
    @dedup_tool(client, exclude=["mailer"])
    def send_email(to: str, body: str, mailer=None, cc: str | None = None):
        counter(to, body)
        return {"message_id": f"m-{counter.n}"}

    assert send_email("alice@example.com", "Your order shipped.", mailer=object()) == {"message_id": "m-1"}
    # Retried (keyword form, another mailer object): replayed, not re-sent.
    assert send_email(to="alice@example.com", body="Your order shipped.", mailer=object()) == {"message_id": "m-1"}
    assert send_email("bob@example.com", "Your order shipped.") == {"message_id": "m-2"}
    assert counter.n == 2
    calls = client.list_calls().calls
    assert {c.tool for c in calls} == {"send_email"}
    assert all("mailer" not in c.arguments_json for c in calls)


def test_decorator_tool_name_key_and_failure(client, counter):
    @dedup_tool(client, tool="payments.charge", key="request_id", exclude=["request_id"])
    def charge(order: int, amount: float, request_id: str):
        counter(order)
        if amount < 0:
            raise ValueError("negative amount")
        return "ok"

    assert charge(1, 10.0, "r-1") == "ok"
    assert charge(1, 10.0, "r-1") == "ok"
    assert counter.n == 1
    with pytest.raises(ValueError):
        charge(2, -1.0, "r-2")
    with pytest.raises(ValueError):
        charge(2, -1.0, "r-2")  # FAILED is not replayed: it runs (and fails) again
    assert counter.n == 3
    recs = client.list_calls().calls
    assert recs[0].tool == "payments.charge" and recs[0].status == pb2.FAILED
    assert {r.idempotency_key for r in recs} == {"r-1", "r-2"}


def test_decorator_rejects_mismatched_client(idem_server):
    ac = AsyncIdemClient.__new__(AsyncIdemClient)  # no channel needed for the type check
    with pytest.raises(TypeError):
        dedup_tool(ac)(lambda x: x)
    c = IdemClient(idem_server.addr)
    with pytest.raises(TypeError):

        @dedup_tool(c)
        async def f(x):
            return x

    c.close()


async def test_decorated_async_function(aclient, counter):
    @dedup_tool(aclient)
    async def create_ticket(title: str, priority: int = 2):
        counter(title)
        return {"ticket": f"T-{counter.n}", "priority": priority}

    assert await create_ticket("Printer on fire") == {"ticket": "T-1", "priority": 2}
    assert await create_ticket("Printer on fire", priority=2) == {"ticket": "T-1", "priority": 2}
    assert await create_ticket("Printer on fire", priority=1) == {"ticket": "T-2", "priority": 1}
    assert counter.n == 2
