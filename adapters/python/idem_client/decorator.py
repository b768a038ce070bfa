"""``@dedup_tool``: guard any function (sync or async) with idem."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Iterable, Optional, Union

from .aio import AsyncIdemClient
from .client import IdemClient

KeyFn = Union[str, Callable[[dict], Optional[str]], None]
SessionFn = Union[str, Callable[[dict], str], None]


def call_arguments(sig: inspect.Signature, args: tuple, kwargs: dict, exclude: Iterable[str] = ()) -> dict:
    """The call's arguments by parameter name (defaults applied, ``self``/``cls`` and excluded
    names dropped; ``**kwargs`` merged in)."""
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    skip = set(exclude)
    for name, value in bound.arguments.items():
        if name in skip or name in ("self", "cls"):
            continue
        p = sig.parameters[name]
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            out.update({k: v for k, v in value.items() if k not in skip})
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                out[name] = list(value)
        else:
            out[name] = value
    return out


def _resolve(opt, arguments: dict):
    if opt is None or isinstance(opt, str):
        return opt
    return opt(arguments)


def _key(opt: KeyFn, arguments: dict) -> Optional[str]:
    if opt is None:
        return None
    if isinstance(opt, str):  # the name of an argument that carries the idempotency key
        v = arguments.get(opt)
        return None if v is None else str(v)
    return opt(arguments)


def dedup_tool(
    client: Union[IdemClient, AsyncIdemClient],
    *,
    tool: Optional[str] = None,
    key: KeyFn = None,
    session: SessionFn = None,
    tenant: Optional[str] = None,
    exclude: Iterable[str] = (),
    deadline_ms: Optional[int] = None,
    on_borderline: Optional[Callable] = None,
    serialize: Optional[Callable[[Any], str]] = None,
    deserialize: Optional[Callable[[Optional[str]], Any]] = None,
):
    """Decorate a function so that each distinct call runs once.

    - ``client``: an ``IdemClient`` for plain functions, an ``AsyncIdemClient`` for ``async def``.
    - ``tool``: the tool name idem sees (default: the function's name).
    - ``key``: an argument name, or ``fn(arguments) -> str | None``, giving an idempotency key.
    - ``session``: a session name, or ``fn(arguments) -> str`` (default: the client's).
    - ``exclude``: argument names not sent to idem (contexts, clients, callbacks).

    A repeat returns the replayed result (JSON round-tripped) without calling the function.
    """
    exclude = tuple(exclude)

    def deco(fn):
        name = tool or fn.__name__
        sig = inspect.signature(fn)
        is_async = inspect.iscoroutinefunction(fn)
        if is_async and not isinstance(client, AsyncIdemClient):
            raise TypeError(f"@dedup_tool on async function {fn.__qualname__} needs an AsyncIdemClient")
        if not is_async and not isinstance(client, IdemClient):
            raise TypeError(f"@dedup_tool on function {fn.__qualname__} needs an IdemClient "
                            "(AsyncIdemClient is for async def)")

        def prepare(args, kwargs):
            full = call_arguments(sig, args, kwargs)
            sent = {k: v for k, v in full.items() if k not in exclude}
            return sent, opts(full)

        def opts(full):
            # key and session see every argument, excluded ones too.
            return dict(
                idempotency_key=_key(key, full),
                session=_resolve(session, full),
                tenant=tenant,
                deadline_ms=deadline_ms,
                on_borderline=on_borderline,
                serialize=serialize,
                deserialize=deserialize,
            )

        if is_async:
            @functools.wraps(fn)
            async def awrapper(*args, **kwargs):
                arguments, o = prepare(args, kwargs)
                return await client.run(name, arguments, lambda: fn(*args, **kwargs), **o)

            awrapper.idem_tool_name = name
            return awrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            arguments, o = prepare(args, kwargs)
            return client.run(name, arguments, lambda: fn(*args, **kwargs), **o)

        wrapper.idem_tool_name = name
        return wrapper

    return deco
