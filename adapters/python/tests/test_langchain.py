"""LangChain: the agent middleware (wrap_tool_call) and the BaseTool wrapper, with real
langchain / langchain-core objects and no network."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain.agents.middleware")

from langchain.agents.middleware import AgentMiddleware, ToolCallRequest  # noqa: E402
from langchain_core.messages import ToolMessage  # noqa: E402
from langchain_core.tools import ToolException, tool  # noqa: E402
from langgraph.prebuilt.tool_node import ToolRuntime  # noqa: E402

from idem_client import pb2  # noqa: E402
from idem_client.langchain import IdemMiddleware, IdemTool, idem_tool  # noqa: E402


def make_tools(counter):
    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        counter("send_email", to, body)
        return f"sent #{counter.n} to {to}"

    @tool
    async def create_ticket(title: str) -> dict:
        """Create a ticket."""
        counter("create_ticket", title)
        await asyncio.sleep(0)
        return {"ticket": f"T-{counter.n}"}

    @tool
    def flaky(x: int) -> str:
        """Fails."""
        counter("flaky", x)
        raise ToolException("backend down")

    return send_email, create_ticket, flaky


def request(t, args, call_id, thread="thread-1"):
    runtime = ToolRuntime(
        state={"messages": []},
        context=None,
        config={"configurable": {"thread_id": thread}},
        stream_writer=lambda _: None,
        tool_call_id=call_id,
        store=None,
    )
    call = {"name": t.name, "args": args, "id": call_id, "type": "tool_call"}
    return ToolCallRequest(tool_call=call, tool=t, state={"messages": []}, runtime=runtime)


def handler(req):
    """What ToolNode does: run the tool with the tool call, get a ToolMessage."""
    return req.tool.invoke(req.tool_call)


async def ahandler(req):
    return await req.tool.ainvoke(req.tool_call)


def test_middleware_is_a_real_agent_middleware(client):
    mw = IdemMiddleware(client)
    assert isinstance(mw, AgentMiddleware)
    # create_agent picks the hook up only when the subclass overrides it.
    assert type(mw).wrap_tool_call is not AgentMiddleware.wrap_tool_call
    assert type(mw).awrap_tool_call is not AgentMiddleware.awrap_tool_call


def test_middleware_runs_a_retried_call_once(client, counter, session_name):
    send_email, _, _ = make_tools(counter)
    mw = IdemMiddleware(client)  # session: the run's thread_id
    args = {"to": "alice@example.com", "body": "The invoice is attached."}
    first = mw.wrap_tool_call(request(send_email, args, "call-1", session_name), handler)
    assert isinstance(first, ToolMessage) and first.content == "sent #1 to alice@example.com"
    # The model re-issues the same call (new tool_call id): replayed, not re-sent.
    again = mw.wrap_tool_call(request(send_email, args, "call-2", session_name), handler)
    assert isinstance(again, ToolMessage)
    assert again.content == first.content and again.tool_call_id == "call-2"
    assert again.response_metadata["idem"]["replayed"] is True
    other = mw.wrap_tool_call(
        request(send_email, {**args, "to": "bob@example.com"}, "call-3", session_name), handler
    )
    assert other.content == "sent #2 to bob@example.com"
    assert counter.n == 2
    # Recorded under the thread's session.
    assert len(client.list_calls(session=session_name).calls) == 2


def test_middleware_records_error_messages_as_failed(client, counter, session_name):
    _, _, flaky = make_tools(counter)
    flaky.handle_tool_error = True  # ToolNode-style: the error becomes a ToolMessage
    mw = IdemMiddleware(client, session=session_name)
    r1 = mw.wrap_tool_call(request(flaky, {"x": 1}, "c1"), handler)
    assert r1.status == "error" and "backend down" in r1.content
    r2 = mw.wrap_tool_call(request(flaky, {"x": 1}, "c2"), handler)
    assert r2.status == "error"
    assert counter.n == 2  # FAILED is not replayed: a retry runs again
    assert [c.status for c in client.list_calls().calls] == [pb2.FAILED, pb2.FAILED]


def test_middleware_tool_filters(client, counter, session_name):
    send_email, _, _ = make_tools(counter)
    mw = IdemMiddleware(client, session=session_name, skip_tools=["send_email"])
    args = {"to": "a@example.com", "body": "x"}
    mw.wrap_tool_call(request(send_email, args, "c1"), handler)
    mw.wrap_tool_call(request(send_email, args, "c2"), handler)
    assert counter.n == 2
    assert list(client.list_calls().calls) == []


async def test_middleware_async_path(aclient, client, counter, session_name):
    _, create_ticket, _ = make_tools(counter)
    mw = IdemMiddleware(client, async_client=aclient)
    r = [await mw.awrap_tool_call(request(create_ticket, {"title": "Printer"}, f"c{i}", session_name), ahandler)
         for i in range(3)]
    assert counter.n == 1
    assert all(m.content == r[0].content for m in r)
    assert "T-1" in r[0].content


def test_basetool_wrapper_runs_once(client, counter):
    send_email, _, _ = make_tools(counter)
    guarded = idem_tool(send_email, client)
    assert isinstance(guarded, IdemTool)
    assert guarded.name == "send_email" and guarded.args == send_email.args
    args = {"to": "carol@example.com", "body": "Lunch?"}
    assert guarded.invoke(args) == "sent #1 to carol@example.com"
    assert guarded.invoke(args) == "sent #1 to carol@example.com"
    # Invoked with a tool call (as ToolNode does): a ToolMessage with the replayed content.
    msg = guarded.invoke({"name": "send_email", "args": args, "id": "tc-9", "type": "tool_call"})
    assert isinstance(msg, ToolMessage) and msg.content == "sent #1 to carol@example.com"
    assert msg.tool_call_id == "tc-9"
    assert guarded.invoke({**args, "to": "dan@example.com"}) == "sent #2 to dan@example.com"
    assert counter.n == 2


def test_basetool_wrapper_failure_and_error_handling(client, counter):
    _, _, flaky = make_tools(counter)
    guarded = idem_tool(flaky, client)
    with pytest.raises(ToolException):
        guarded.invoke({"x": 3})
    flaky.handle_tool_error = True
    guarded = idem_tool(flaky, client)
    assert "backend down" in guarded.invoke({"x": 3})
    assert counter.n == 2
    assert {c.status for c in client.list_calls().calls} == {pb2.FAILED}


def test_basetool_wrapper_content_and_artifact(client, counter):
    @tool(response_format="content_and_artifact")
    def search_orders(customer: str) -> tuple:
        """Search."""
        counter(customer)
        return f"1 order for {customer}", {"ids": [42]}

    guarded = idem_tool(search_orders, client)
    call = {"name": "search_orders", "args": {"customer": "acme"}, "id": "a", "type": "tool_call"}
    m1 = guarded.invoke(call)
    m2 = guarded.invoke({**call, "id": "b"})
    assert counter.n == 1
    assert (m2.content, m2.artifact) == (m1.content, m1.artifact) == ("1 order for acme", {"ids": [42]})


async def test_basetool_wrapper_async(aclient, counter):
    _, create_ticket, _ = make_tools(counter)
    guarded = idem_tool(create_ticket, async_client=aclient)
    a = await guarded.ainvoke({"title": "Disk full"})
    b = await guarded.ainvoke({"title": "Disk full"})
    assert a == b == {"ticket": "T-1"}
    assert counter.n == 1


def test_real_agent_with_middleware_runs_the_repeated_call_once(client, counter, session_name):
    """create_agent + IdemMiddleware; a scripted chat model (no network) issues the same tool
    call twice, as a model that lost the first answer would."""
    from langchain.agents import create_agent
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    class ScriptedModel(GenericFakeChatModel):
        def bind_tools(self, tools, **kwargs):
            return self

    send_email, _, _ = make_tools(counter)
    args = {"to": "alice@example.com", "body": "The invoice is attached."}
    script = iter([
        AIMessage(content="", tool_calls=[{"name": "send_email", "args": args, "id": "c1"}]),
        AIMessage(content="", tool_calls=[{"name": "send_email", "args": args, "id": "c2"}]),
        AIMessage(content="done"),
    ])
    agent = create_agent(ScriptedModel(messages=script), [send_email], middleware=[IdemMiddleware(client)])
    out = agent.invoke({"messages": [{"role": "user", "content": "mail Alice"}]},
                       {"configurable": {"thread_id": session_name}})
    tool_msgs = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.content for m in tool_msgs] == ["sent #1 to alice@example.com"] * 2
    assert [m.tool_call_id for m in tool_msgs] == ["c1", "c2"]
    assert counter.n == 1
