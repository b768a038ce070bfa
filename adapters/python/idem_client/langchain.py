"""LangChain adapters.

- ``IdemMiddleware``: an agent middleware (LangChain 1.x ``wrap_tool_call`` /
  ``awrap_tool_call``): ``create_agent(model, tools, middleware=[IdemMiddleware(client)])`` guards
  every tool of the agent.
- ``idem_tool(tool, client)``: wraps any langchain-core ``BaseTool`` into one that asks idem first.

A replayed call comes back as a ``ToolMessage`` with the stored content (and artifact) and
``response_metadata["idem"] = {"replayed": True, "call_id": ..., "verdict": ...}``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable, Iterable, Optional, Union

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool

from . import _core
from .aio import AsyncIdemClient
from .client import IdemClient
from .errors import ToolFailed

try:  # LangChain 1.x agents
    from langchain.agents.middleware import AgentMiddleware
except ImportError:  # pragma: no cover - langchain-core only: the BaseTool wrapper still works
    AgentMiddleware = object  # type: ignore[misc,assignment]

try:
    from langchain_core.tools.base import _get_runnable_config_param
except ImportError:  # pragma: no cover
    def _get_runnable_config_param(func: Callable[..., Any]) -> Optional[str]:
        return "config" if "config" in inspect.signature(func).parameters else None


# -- ToolMessage <-> JSON -----------------------------------------------------------------

def _message_to_json(result: Any) -> str:
    if isinstance(result, ToolMessage):
        return _core.default_serialize(
            {"kind": "tool_message", "content": result.content, "artifact": result.artifact}
        )
    # A Command (or anything else) cannot be rebuilt faithfully; keep a description.
    return _core.default_serialize({"kind": type(result).__name__, "repr": repr(result)[:2000]})


def _message_from_json(result_json: Optional[str], tool_call: dict, out: _core.Outcome) -> ToolMessage:
    data = _core.default_deserialize(result_json)
    meta = {"idem": {"replayed": True, "call_id": out.call_id, "verdict": out.verdict}}
    if isinstance(data, dict) and data.get("kind") == "tool_message":
        content, artifact = data.get("content", ""), data.get("artifact")
    elif isinstance(data, dict) and "repr" in data:
        content = (f"This call repeats call {out.call_id}, which already ran; its result "
                   f"({data.get('kind')}) cannot be replayed: {data['repr']}")
        artifact = None
    else:  # recorded by another adapter: the raw result
        content = data if isinstance(data, (str, list)) else json.dumps(data)
        artifact = None
    return ToolMessage(
        content=content,
        artifact=artifact,
        tool_call_id=tool_call.get("id") or "",
        name=tool_call.get("name"),
        status="success",
        response_metadata=meta,
    )


def _thread_id(runtime: Any) -> Optional[str]:
    config = getattr(runtime, "config", None)
    if isinstance(config, dict):
        tid = (config.get("configurable") or {}).get("thread_id")
        return str(tid) if tid is not None else None
    return None


def _check_failed(result: Any) -> Any:
    """A ToolMessage with status "error" is a failed run: record it FAILED, hand it back."""
    if isinstance(result, ToolMessage) and result.status == "error":
        raise ToolFailed(str(result.content)[:4000], value=result)
    return result


class IdemMiddleware(AgentMiddleware):
    """Agent middleware that asks idem before each tool call.

    Args:
        client: an ``IdemClient`` (used by ``agent.invoke``/``stream``).
        async_client: an ``AsyncIdemClient`` (used by ``agent.ainvoke``/``astream``); optional
            when only the sync path is used.
        tools: names of the tools to guard (default: all); ``skip_tools``: names never guarded.
        session: a session name, or ``fn(request) -> str``; by default the LangGraph
            ``thread_id`` of the run, else the client's session.
        key: ``fn(request) -> str | None`` giving an idempotency key.
        on_borderline: see ``IdemClient``.
    """

    def __init__(
        self,
        client: Optional[IdemClient] = None,
        *,
        async_client: Optional[AsyncIdemClient] = None,
        tools: Optional[Iterable[str]] = None,
        skip_tools: Iterable[str] = (),
        session: Union[str, Callable[[Any], Optional[str]], None] = None,
        tenant: Optional[str] = None,
        key: Optional[Callable[[Any], Optional[str]]] = None,
        deadline_ms: Optional[int] = None,
        on_borderline: Optional[Callable] = None,
    ):
        super().__init__()
        if client is None and async_client is None:
            raise ValueError("IdemMiddleware needs an IdemClient and/or an AsyncIdemClient")
        self.client = client
        self.async_client = async_client
        self.only = set(tools) if tools is not None else None
        self.skip = set(skip_tools)
        self.session = session
        self.tenant = tenant
        self.key = key
        self.deadline_ms = deadline_ms
        self.on_borderline = on_borderline

    @property
    def name(self) -> str:
        return "IdemMiddleware"

    def _guarded(self, tool_name: str) -> bool:
        return tool_name not in self.skip and (self.only is None or tool_name in self.only)

    def _opts(self, request) -> dict:
        if callable(self.session):
            session = self.session(request)
        else:
            session = self.session or _thread_id(getattr(request, "runtime", None))
        return dict(
            session=session,
            tenant=self.tenant,
            idempotency_key=self.key(request) if self.key else None,
            deadline_ms=self.deadline_ms,
            on_borderline=self.on_borderline,
            serialize=_message_to_json,
            deserialize=lambda j: j,  # rebuilt below, with this call's tool_call_id
        )

    def wrap_tool_call(self, request, handler):
        call = request.tool_call
        if not self._guarded(call["name"]):
            return handler(request)
        if self.client is None:
            raise RuntimeError("IdemMiddleware: the sync path needs an IdemClient (client=...)")
        try:
            out = self.client.run_detailed(
                call["name"], call.get("args") or {}, lambda: _check_failed(handler(request)),
                **self._opts(request),
            )
        except ToolFailed as e:
            return e.value
        return out.value if out.executed else _message_from_json(out.result_json, call, out)

    async def awrap_tool_call(self, request, handler):
        call = request.tool_call
        if not self._guarded(call["name"]):
            return await handler(request)
        if self.async_client is None:
            raise RuntimeError("IdemMiddleware: the async path needs an AsyncIdemClient (async_client=...)")

        async def run():
            return _check_failed(await handler(request))

        try:
            out = await self.async_client.run_detailed(
                call["name"], call.get("args") or {}, run, **self._opts(request)
            )
        except ToolFailed as e:
            return e.value
        return out.value if out.executed else _message_from_json(out.result_json, call, out)


# -- BaseTool wrapper ---------------------------------------------------------------------

class IdemTool(BaseTool):
    """A BaseTool that asks idem before running ``inner`` (made by ``idem_tool``)."""

    inner: BaseTool
    idem: Optional[Any] = None
    aidem: Optional[Any] = None
    idem_session: Optional[Any] = None
    idem_tenant: Optional[str] = None
    idem_key: Optional[Any] = None
    idem_deadline_ms: Optional[int] = None
    idem_on_borderline: Optional[Any] = None

    def _arguments(self, args: tuple, kwargs: dict) -> dict:
        arguments = self._filter_injected_args(dict(kwargs)) if kwargs else {}
        arguments.pop("run_manager", None)
        arguments.pop("callbacks", None)
        if args:
            arguments["__args__"] = list(args)
        return arguments

    def _opts(self, arguments: dict) -> dict:
        session = self.idem_session(arguments) if callable(self.idem_session) else self.idem_session
        key = self.idem_key(arguments) if callable(self.idem_key) else None
        if isinstance(self.idem_key, str):
            key = arguments.get(self.idem_key)
            key = None if key is None else str(key)
        return dict(session=session, tenant=self.idem_tenant, idempotency_key=key,
                    deadline_ms=self.idem_deadline_ms, on_borderline=self.idem_on_borderline,
                    serialize=self._serialize, deserialize=self._deserialize)

    def _serialize(self, value: Any) -> str:
        if self.response_format == "content_and_artifact" and isinstance(value, tuple) and len(value) == 2:
            return _core.default_serialize({"content": value[0], "artifact": value[1]})
        if isinstance(value, ToolMessage):
            return _message_to_json(value)
        return _core.default_serialize(value)

    def _deserialize(self, text: Optional[str]) -> Any:
        data = _core.default_deserialize(text)
        if self.response_format == "content_and_artifact" and isinstance(data, dict) and "artifact" in data:
            return data.get("content"), data.get("artifact")
        return data

    def _inner_kwargs(self, fn, kwargs: dict, config, run_manager) -> dict:
        kw = dict(kwargs)
        params = inspect.signature(fn).parameters
        if "run_manager" in params:
            kw["run_manager"] = run_manager
        if (p := _get_runnable_config_param(fn)) is not None:
            kw[p] = config
        return kw

    def _run(self, *args: Any, config: RunnableConfig, run_manager=None, **kwargs: Any) -> Any:
        if self.idem is None:
            raise RuntimeError(f"idem_tool({self.name}): the sync path needs an IdemClient")
        arguments = self._arguments(args, kwargs)
        inner = self.inner

        def run():
            return inner._run(*args, **self._inner_kwargs(inner._run, kwargs, config, run_manager))

        return self.idem.run(self.name, arguments, run, **self._opts(arguments))

    async def _arun(self, *args: Any, config: RunnableConfig, run_manager=None, **kwargs: Any) -> Any:
        arguments = self._arguments(args, kwargs)
        inner = self.inner
        if self.aidem is None:
            if self.idem is None:
                raise RuntimeError(f"idem_tool({self.name}): needs an IdemClient or AsyncIdemClient")
            return await super()._arun(*args, config=config, run_manager=run_manager, **kwargs)

        async def run():
            return await inner._arun(*args, **self._inner_kwargs(inner._arun, kwargs, config, run_manager))

        return await self.aidem.run(self.name, arguments, run, **self._opts(arguments))


def idem_tool(
    tool: BaseTool,
    client: Optional[IdemClient] = None,
    *,
    async_client: Optional[AsyncIdemClient] = None,
    session: Union[str, Callable[[dict], str], None] = None,
    tenant: Optional[str] = None,
    key: Union[str, Callable[[dict], Optional[str]], None] = None,
    deadline_ms: Optional[int] = None,
    on_borderline: Optional[Callable] = None,
) -> IdemTool:
    """Wrap ``tool`` so that each distinct call runs once: same name, description, schema and
    error handling; ``invoke`` uses ``client``, ``ainvoke`` uses ``async_client`` (or ``client``
    in a worker thread)."""
    if client is None and async_client is None:
        raise ValueError("idem_tool needs an IdemClient and/or an AsyncIdemClient")
    return IdemTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        response_format=tool.response_format,
        handle_tool_error=tool.handle_tool_error,
        handle_validation_error=tool.handle_validation_error,
        tags=tool.tags,
        metadata=tool.metadata,
        extras=getattr(tool, "extras", None),
        inner=tool,
        idem=client,
        aidem=async_client,
        idem_session=session,
        idem_tenant=tenant,
        idem_key=key,
        idem_deadline_ms=deadline_ms,
        idem_on_borderline=on_borderline,
    )
