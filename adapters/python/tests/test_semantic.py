"""A paraphrased repeat is caught when the server runs the semantic stages
(`--embedder local --models-dir <repo>/models`)."""

from __future__ import annotations

import uuid

import pytest

from idem_client import AsyncIdemClient, IdemClient, dedup_tool

# A rewording the judge calls a repeat (a moved phrase); see tests/semantic.rs.
A = "Please send me the final report for the Q3 audit by Friday."
B = "Please send me the Q3 audit final report by Friday."
OTHER = "Please send me the signed contract for the warehouse lease by Friday."


@pytest.fixture
def sem_client(idem_semantic_server):
    c = IdemClient(idem_semantic_server.addr, tenant="pytest", session=f"sem-{uuid.uuid4().hex[:10]}",
                   deadline_ms=10_000, rpc_timeout=30)
    c.configure_session(deadline_ms=10_000)  # generous: CI machines are slow
    yield c
    c.close()


def test_paraphrased_repeat_is_replayed(sem_client, counter):
    @dedup_tool(sem_client)
    def send_email(to: str, body: str):
        counter(to, body)
        return {"message_id": f"m-{counter.n}"}

    assert send_email("bob@example.com", A) == {"message_id": "m-1"}
    out = sem_client.run_detailed("send_email", {"to": "bob@example.com", "body": B},
                                  lambda: send_email.__wrapped__("bob@example.com", B))
    assert out.verdict == "DUPLICATE", out
    assert out.value == {"message_id": "m-1"}
    assert send_email("bob@example.com", B) == {"message_id": "m-1"}
    # Same words, another recipient: a different action, it runs.
    assert send_email("carol@example.com", A) == {"message_id": "m-2"}
    # Same recipient, a different message: it runs.
    assert send_email("bob@example.com", OTHER) == {"message_id": "m-3"}
    assert counter.n == 3


async def test_borderline_follows_the_callback(idem_semantic_server, counter):
    c = AsyncIdemClient(idem_semantic_server.addr, tenant="pytest",
                        session=f"bl-{uuid.uuid4().hex[:10]}", rpc_timeout=30)
    # Everything similar is borderline, and the caller decides.
    await c.configure_session(deadline_ms=10_000, borderline_policy="ask", fuzzy_threshold=1.0,
                              semantic_duplicate=1.0, semantic_borderline=0.5)
    seen = []

    def decide(info):
        seen.append(info)
        return "duplicate" if len(seen) == 1 else "new"

    @dedup_tool(c, on_borderline=decide)
    async def send_email(to: str, body: str):
        counter(body)
        return {"message_id": f"m-{counter.n}"}

    assert await send_email("bob@example.com", A) == {"message_id": "m-1"}
    assert await send_email("bob@example.com", B) == {"message_id": "m-1"}  # callback: duplicate
    assert seen[0].stage == "SEMANTIC" and 0.5 <= seen[0].score < 1.0
    assert seen[0].arguments["body"] == B
    assert await send_email("bob@example.com", B) == {"message_id": "m-2"}  # callback: new
    assert counter.n == 2
    calls = (await c.list_calls()).calls
    assert calls[0].supersedes == calls[1].call_id
    await c.close()
