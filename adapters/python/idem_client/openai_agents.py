"""OpenAI Agents SDK (``openai-agents``) adapters.

- ``idem_function_tool(tool, client)``: a copy of a ``FunctionTool`` whose invocation asks idem
  first. Works for any FunctionTool; for tools made by ``@function_tool`` the tool's own failure
  handling is kept (an error is recorded FAILED, then formatted for the model as before).
- ``idem_tool_guardrails(client)``: a tool input guardrail that answers a repeat with the replayed
  result (``reject_content`` carries it to the model instead of running the tool) and records a
  new call, plus the output guardrail that reports its result. Needs a version of the SDK with
  tool guardrails (``agents.tool_guardrails``); use ``with_idem_guardrails(tool, client)``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Optional, Union

from agents import FunctionTool
from agents.tool_context import ToolContext

from . import _core
from ._core import borderline_from, borderline_says_duplicate, pb2
from .aio import AsyncIdemClient, _maybe_await
from .errors import BorderlineError, IdemUnavailable, InFlightTimeout, ReplayError

try:  # the raising implementation inside @function_tool's failure handling (SDK internals)
    from agents.tool import _FailureHandlingFunctionToolInvoker as _FailureInvoker
except ImportError:  # pragma: no cover - other SDK versions: wrap on_invoke_tool as a whole
    _FailureInvoker = None  # type: ignore[misc,assignment]

try:
    from agents.tool_guardrails import (
        ToolGuardrailFunctionOutput,
        ToolInputGuardrail,
        ToolInputGuardrailData,
        ToolOutputGuardrail,
        ToolOutputGuardrailData,
    )

    HAS_TOOL_GUARDRAILS = True
except ImportError:  # pragma: no cover
    HAS_TOOL_GUARDRAILS = False

SessionOpt = Union[str, Callable[[ToolContext], Optional[str]], None]
KeyOpt = Optional[Callable[[ToolContext, dict], Optional[str]]]

# What @function_tool's default failure formatter returns (agents.tool.default_tool_error_function).
_DEFAULT_ERROR_PREFIX = "An error occurred while running the tool"


def _args(input_json: str) -> Any:
    if not input_json:
        return {}
    try:
        return json.loads(input_json)
    except ValueError:
        return {"__raw__": input_json}


def _session(session: SessionOpt, ctx) -> Optional[str]:
    return session(ctx) if callable(session) else session


def idem_function_tool(
    tool: FunctionTool,
    client: AsyncIdemClient,
    *,
    session: SessionOpt = None,
    tenant: Optional[str] = None,
    key: KeyOpt = None,
    deadline_ms: Optional[int] = None,
    on_borderline: Optional[Callable] = None,
) -> FunctionTool:
    """Return a copy of ``tool`` that runs each distinct call once (replays repeats)."""
    if not isinstance(client, AsyncIdemClient):
        raise TypeError("idem_function_tool needs an AsyncIdemClient (the SDK invokes tools with await)")
    invoker = tool.on_invoke_tool
    raw = None
    if _FailureInvoker is not None and isinstance(invoker, _FailureInvoker):
        raw = getattr(invoker, "_invoke_tool_impl", None)
    target = raw or invoker
    name = tool.name

    async def guarded(ctx: ToolContext, input: str) -> Any:
        args = _args(input)
        return await client.run(
            name,
            args,
            lambda: target(ctx, input),
            session=_session(session, ctx),
            tenant=tenant,
            idempotency_key=key(ctx, args) if key else None,
            deadline_ms=deadline_ms,
            on_borderline=on_borderline,
        )

    if raw is not None:
        # Keep the SDK's metadata on the implementation (argument preparation, wrapped callable).
        for attr in dir(raw):
            if attr.startswith("__agents_"):
                try:
                    setattr(guarded, attr, getattr(raw, attr))
                except (AttributeError, TypeError):
                    pass
        new_invoker: Any = _FailureInvoker(guarded, getattr(invoker, "_on_handled_error"))
        for attr in dir(invoker):
            if attr.startswith("__agents_") and not callable(getattr(invoker, attr)):
                setattr(new_invoker, attr, getattr(invoker, attr))
    else:
        new_invoker = guarded
    return dataclasses.replace(tool, on_invoke_tool=new_invoker)


def _as_text(result_json: Optional[str]) -> str:
    value = _core.default_deserialize(result_json)
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def idem_tool_guardrails(
    client: AsyncIdemClient,
    *,
    session: SessionOpt = None,
    tenant: Optional[str] = None,
    key: KeyOpt = None,
    deadline_ms: Optional[int] = None,
    on_borderline: Optional[Callable] = None,
    is_failure: Optional[Callable[[Any], bool]] = None,
):
    """Return ``(input_guardrail, output_guardrail)`` for ``FunctionTool(tool_input_guardrails=[..],
    tool_output_guardrails=[..])`` (or use ``with_idem_guardrails``).

    The input guardrail checks the call: a repeat of a succeeded call is answered with its
    replayed result (``reject_content``, so the tool does not run); a repeat of a running call
    waits for it (bounded); a new call is recorded and allowed. The output guardrail Completes the
    new call with the tool's output, as FAILED when ``is_failure(output)`` (default: the SDK's
    default error text). A tool that raises past the SDK (no failure handler) leaves the call in
    progress until its lease expires; ``idem_function_tool`` has no such gap.
    """
    if not HAS_TOOL_GUARDRAILS:
        raise RuntimeError("this version of openai-agents has no tool guardrails; use idem_function_tool")
    pending: dict[str, str] = {}
    failed = is_failure or (lambda out: isinstance(out, str) and out.startswith(_DEFAULT_ERROR_PREFIX))

    def _pending_key(ctx) -> str:
        return f"{id(ctx)}:{ctx.tool_call_id}"

    async def idem_check(data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        args = _args(ctx.tool_arguments)
        opts = dict(session=_session(session, ctx), tenant=tenant,
                    idempotency_key=key(ctx, args) if key else None, deadline_ms=deadline_ms)
        retry_of = None
        for _ in range(8):
            try:
                resp = await client.check(ctx.tool_name, args, retry_of=retry_of, **opts)
                retry_of = None
                v = resp.verdict
                if v == pb2.NEW:
                    if resp.call_id:
                        pending[_pending_key(ctx)] = resp.call_id
                    return ToolGuardrailFunctionOutput.allow({"verdict": "NEW", "call_id": resp.call_id})
                call_id = resp.call_id
                if v == pb2.BORDERLINE:
                    cb = on_borderline or client.on_borderline
                    if cb is None:
                        raise BorderlineError(resp.call_id, resp.matched.score, resp.reason)
                    if not borderline_says_duplicate(await _maybe_await(cb(borderline_from(resp, ctx.tool_name, args)))):
                        retry_of = call_id
                        continue
                    rec = await client.get_call(call_id)
                    status = rec.status
                    rj = rec.result_json if rec.HasField("result_json") else None
                else:
                    status = resp.status
                    rj = resp.result_json if resp.HasField("result_json") else None
                if status == pb2.IN_PROGRESS:
                    rec = await client.wait_for(call_id)
                    status = rec.status
                    rj = rec.result_json if rec.HasField("result_json") else None
                if status == pb2.SUCCEEDED:
                    info = {"verdict": _core.VERDICT_NAMES.get(v), "call_id": call_id, "replayed": True}
                    return ToolGuardrailFunctionOutput.reject_content(_as_text(rj), output_info=info)
                if status == pb2.FAILED and v == pb2.BORDERLINE:
                    retry_of = call_id
                    continue
                if status == pb2.FAILED and v == pb2.DUPLICATE:
                    raise ReplayError(f"call {call_id} matched an earlier call that failed: {resp.reason}")
                # FAILED after waiting, or its lease expired: check again (it may run now).
            except IdemUnavailable as e:
                if client.fail_open:
                    _core.warn_fail_open(ctx.tool_name, e)
                    return ToolGuardrailFunctionOutput.allow({"verdict": "UNAVAILABLE"})
                raise
        raise ReplayError(f"gave up on tool {ctx.tool_name!r} after 8 rounds of checks")

    async def idem_complete(data: ToolOutputGuardrailData) -> ToolGuardrailFunctionOutput:
        call_id = pending.pop(_pending_key(data.context), None)
        if call_id:
            out = data.output
            if failed(out):
                await client._complete_quietly(call_id, error=str(out)[:4000])
            else:
                try:
                    rj = client.serialize(out)
                except Exception:
                    rj = _core.default_serialize(repr(out))
                await client._complete_quietly(call_id, result_json=rj)
        return ToolGuardrailFunctionOutput.allow({"completed": call_id})

    return (
        ToolInputGuardrail(guardrail_function=idem_check, name="idem_check"),
        ToolOutputGuardrail(guardrail_function=idem_complete, name="idem_complete"),
    )


def with_idem_guardrails(tool: FunctionTool, client: AsyncIdemClient, **kw) -> FunctionTool:
    """A copy of ``tool`` with the idem input and output guardrails appended."""
    gin, gout = idem_tool_guardrails(client, **kw)
    return dataclasses.replace(
        tool,
        tool_input_guardrails=[*(tool.tool_input_guardrails or []), gin],
        tool_output_guardrails=[*(tool.tool_output_guardrails or []), gout],
    )


__all__ = ["HAS_TOOL_GUARDRAILS", "idem_function_tool", "idem_tool_guardrails", "with_idem_guardrails",
           "InFlightTimeout"]
