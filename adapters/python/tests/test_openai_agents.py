"""OpenAI Agents SDK: the FunctionTool wrapper and the tool guardrails, with the real SDK and a
scripted model (no network)."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
agents = pytest.importorskip("agents")

from agents import Agent, RunConfig, Runner, function_tool  # noqa: E402
from agents.items import ToolCallOutputItem  # noqa: E402
from agents.tool_context import ToolContext  # noqa: E402

from idem_client import pb2  # noqa: E402
from idem_client.openai_agents import (  # noqa: E402
    HAS_TOOL_GUARDRAILS,
    idem_function_tool,
    idem_tool_guardrails,
    with_idem_guardrails,
)


def make_tools(counter):
    @function_tool
    def send_email(to: str, body: str) -> dict:
        """Send an email.

        Args:
            to: recipient.
            body: text.
        """
        counter("send_email", to, body)
        return {"message_id": f"m-{counter.n}", "to": to}

    @function_tool
    async def refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        counter("refund", order_id)
        if amount <= 0:
            raise ValueError("amount must be positive")
        return f"refunded {amount} on {order_id}"

    return send_email, refund


def ctx_for(tool, args: dict, call_id: str) -> tuple[ToolContext, str]:
    raw = json.dumps(args)
    return ToolContext(context=None, tool_name=tool.name, tool_call_id=call_id, tool_arguments=raw), raw


async def test_function_tool_wrapper_runs_a_retried_call_once(aclient, counter):
    send_email, _ = make_tools(counter)
    guarded = idem_function_tool(send_email, aclient)
    assert guarded.name == send_email.name
    assert guarded.params_json_schema == send_email.params_json_schema
    args = {"to": "alice@example.com", "body": "Your order shipped."}
    out1 = await guarded.on_invoke_tool(*ctx_for(guarded, args, "call_1"))
    out2 = await guarded.on_invoke_tool(*ctx_for(guarded, args, "call_2"))
    assert counter.n == 1
    assert out1 == out2 == {"message_id": "m-1", "to": "alice@example.com"}
    await guarded.on_invoke_tool(*ctx_for(guarded, {**args, "to": "bob@example.com"}, "call_3"))
    assert counter.n == 2


async def test_function_tool_wrapper_records_failures(aclient, counter):
    _, refund = make_tools(counter)
    guarded = idem_function_tool(refund, aclient)
    args = {"order_id": "o-1", "amount": 0}
    # The SDK's failure handling still turns the error into a message for the model...
    out = await guarded.on_invoke_tool(*ctx_for(guarded, args, "c1"))
    assert isinstance(out, str) and "error" in out.lower()
    # ...and idem recorded FAILED, so a retry runs again.
    await guarded.on_invoke_tool(*ctx_for(guarded, args, "c2"))
    assert counter.n == 2
    assert {c.status for c in (await aclient.list_calls()).calls} == {pb2.FAILED}


def _scripted_run(tools, calls, session_name):
    from agents.testing import ScriptedModel, assistant_message, function_call

    steps = [[function_call(name, args, call_id=cid)] for name, args, cid in calls]
    steps.append([assistant_message("done")])
    agent = Agent(name="assistant", instructions="help", tools=tools, model=ScriptedModel(steps))
    return Runner.run(agent, "please mail alice", run_config=RunConfig(tracing_disabled=True))


def _outputs(result):
    return [item.output for item in result.new_items if isinstance(item, ToolCallOutputItem)]


async def test_runner_with_wrapped_tool(aclient, counter, session_name):
    send_email, _ = make_tools(counter)
    guarded = idem_function_tool(send_email, aclient)
    args = {"to": "alice@example.com", "body": "The invoice is attached."}
    result = await _scripted_run([guarded], [("send_email", args, "c1"), ("send_email", args, "c2")],
                                 session_name)
    assert result.final_output == "done"
    assert counter.n == 1
    outs = _outputs(result)
    assert len(outs) == 2 and outs[0] == outs[1]


@pytest.mark.skipif(not HAS_TOOL_GUARDRAILS, reason="this openai-agents has no tool guardrails")
async def test_runner_with_guardrails_replays_the_duplicate(aclient, counter, session_name):
    send_email, _ = make_tools(counter)
    guarded = with_idem_guardrails(send_email, aclient)
    args = {"to": "carol@example.com", "body": "Meeting moved to 3pm."}
    result = await _scripted_run([guarded], [("send_email", args, "c1"), ("send_email", args, "c2")],
                                 session_name)
    assert result.final_output == "done"
    assert counter.n == 1
    outs = _outputs(result)
    assert len(outs) == 2
    assert json.loads(outs[1]) == {"message_id": "m-1", "to": "carol@example.com"}
    calls = (await aclient.list_calls()).calls
    assert [c.status for c in calls] == [pb2.SUCCEEDED]


@pytest.mark.skipif(not HAS_TOOL_GUARDRAILS, reason="this openai-agents has no tool guardrails")
async def test_guardrail_direct(aclient, counter):
    from agents.tool_guardrails import ToolInputGuardrailData, ToolOutputGuardrailData

    _, refund = make_tools(counter)
    gin, gout = idem_tool_guardrails(aclient)
    agent = Agent(name="a")
    args = {"order_id": "o-9", "amount": 5}
    ctx, raw = ctx_for(refund, args, "c1")
    r = await gin.run(ToolInputGuardrailData(context=ctx, agent=agent))
    assert r.behavior["type"] == "allow"
    out = await refund.on_invoke_tool(ctx, raw)
    await gout.run(ToolOutputGuardrailData(context=ctx, agent=agent, output=out))
    ctx2, _ = ctx_for(refund, args, "c2")
    r2 = await gin.run(ToolInputGuardrailData(context=ctx2, agent=agent))
    assert r2.behavior == {"type": "reject_content", "message": "refunded 5.0 on o-9"}
    assert r2.output_info["replayed"] is True
    assert counter.n == 1
    # A failed run (the SDK's default error text) is recorded FAILED: the retry is allowed.
    bad = {"order_id": "o-10", "amount": 0}
    ctx3, raw3 = ctx_for(refund, bad, "c3")
    assert (await gin.run(ToolInputGuardrailData(context=ctx3, agent=agent))).behavior["type"] == "allow"
    out3 = await refund.on_invoke_tool(ctx3, raw3)
    await gout.run(ToolOutputGuardrailData(context=ctx3, agent=agent, output=out3))
    ctx4, _ = ctx_for(refund, bad, "c4")
    assert (await gin.run(ToolInputGuardrailData(context=ctx4, agent=agent))).behavior["type"] == "allow"
