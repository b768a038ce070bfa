"""Pieces shared by the sync and asyncio clients."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import grpc

from .errors import IdemRpcError, IdemUnavailable

try:
    from ._gen import idem_pb2 as pb2
    from ._gen import idem_pb2_grpc as pb2_grpc
except ImportError as e:  # a source checkout that was never built
    raise ImportError(
        "idem_client: the generated gRPC stubs (idem_client/_gen) are missing. They are made at "
        "build time: pip install ./adapters/python (or -e for an editable install), or run "
        "python adapters/python/build_stubs.py in a checkout"
    ) from e

log = logging.getLogger("idem_client")

FAIL_CLOSED = "fail_closed"
FAIL_OPEN = "fail_open"
_POLICIES = (FAIL_CLOSED, FAIL_OPEN)

# gRPC codes that mean "idem is not there (in time)": the unavailability policy decides.
UNREACHABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

# idem shed the check (overloaded): retried with jittered backoff, then treated as unreachable.
OVERLOADED = grpc.StatusCode.RESOURCE_EXHAUSTED

VERDICT_NAMES = {1: "NEW", 2: "DUPLICATE", 3: "IN_FLIGHT", 4: "BORDERLINE"}
STATUS_NAMES = {1: "IN_PROGRESS", 2: "SUCCEEDED", 3: "FAILED"}
STAGE_NAMES = {1: "KEY", 2: "EXACT", 3: "FUZZY", 4: "SEMANTIC", 5: "VERIFIED"}

# Decisions an on_borderline callback may return.
DUPLICATE = "duplicate"
NEW = "new"


def normalize_target(target: str) -> str:
    for scheme in ("http://", "https://", "grpc://"):
        if target.startswith(scheme):
            return target[len(scheme):].rstrip("/")
    return target


def _json_default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    return str(o)


def default_serialize(value: Any) -> str:
    """A tool result as JSON text: pydantic models, dataclasses and sets are converted; other
    objects are stored as their str()."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def default_deserialize(text: Optional[str]) -> Any:
    if text is None or text == "":
        return None
    return json.loads(text)


def arguments_json(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, default=_json_default, ensure_ascii=False, sort_keys=True)


@dataclass
class Borderline:
    """What an ``on_borderline`` callback is given. Return ``"duplicate"`` (or True) to treat the
    call as a repeat of ``call_id`` (its result is replayed, or waited for), ``"new"`` (or False)
    to run the tool (recorded as a new call that supersedes nothing but is linked to the match)."""

    tool: str
    arguments: Any
    call_id: str
    score: float
    stage: str
    reason: str
    response: Any = field(repr=False, default=None)


def borderline_from(resp, tool: str, arguments: Any) -> Borderline:
    m = resp.matched if resp.HasField("matched") else None
    return Borderline(
        tool=tool,
        arguments=arguments,
        call_id=resp.call_id,
        score=m.score if m else 0.0,
        stage=STAGE_NAMES.get(m.stage, "") if m else "",
        reason=resp.reason,
        response=resp,
    )


def borderline_says_duplicate(decision: Any) -> bool:
    if isinstance(decision, bool):
        return decision
    if isinstance(decision, str):
        d = decision.strip().lower()
        if d in (DUPLICATE, "dup", "replay"):
            return True
        if d in (NEW, "run", "distinct"):
            return False
    raise ValueError(
        f"on_borderline must return 'duplicate' / True or 'new' / False, got {decision!r}"
    )


@dataclass(frozen=True)
class Action:
    """The logical action a guarded tool is executing (set while it runs; see ``current_action``).

    ``key`` is the downstream API's idempotency key (an ``Idempotency-Key`` header): it stays the
    same when idem's lease is taken over after a crash, so the downstream deduplicates a second
    execution. ``attempt`` counts the attempts of the action from 1."""

    key: str
    attempt: int


_current_action: "contextvars.ContextVar[Optional[Action]]" = contextvars.ContextVar(
    "idem_current_action", default=None
)


def current_action() -> Optional[Action]:
    """The action of the guarded tool running in this context, or None outside one (or when
    idem recorded nothing: mode off, fail open)."""
    return _current_action.get()


def action_of(resp) -> Optional[Action]:
    """The action a NEW CheckResponse names, if it names one."""
    key = getattr(resp, "action_key", "")
    return Action(key, int(getattr(resp, "attempt", 0))) if key else None


@contextlib.contextmanager
def action_context(action: Optional[Action]) -> Iterator[None]:
    """Makes ``action`` the current action while the guarded tool runs (sync or awaited)."""
    token = _current_action.set(action)
    try:
        yield
    finally:
        _current_action.reset(token)


def action_kwargs(action: Optional[Action], kwarg: Optional[str]) -> dict:
    """The keyword argument that hands the tool its action key, when the caller named one."""
    return {kwarg: action.key if action else None} if kwarg else {}


def log_warnings(tool: str, resp) -> None:
    """Logs the server's advisories on a check (a key minted per attempt, a suspected loop)."""
    for w in getattr(resp, "warnings", ()):
        log.warning("idem: %s on tool %r: %s", w, tool, resp.reason)


def is_unimplemented(e: BaseException) -> bool:
    """The server lacks the RPC (an older server): fall back to polling."""
    return isinstance(e, IdemRpcError) and e.code == grpc.StatusCode.UNIMPLEMENTED


@dataclass
class Outcome:
    """What ``run_detailed`` returns: the value and how it was obtained."""

    value: Any
    # "NEW", "DUPLICATE", "IN_FLIGHT", "BORDERLINE", or "UNAVAILABLE" (fail open) / "OFF" (mode off)
    verdict: str
    call_id: str = ""
    # True when `value` is a stored result of an earlier execution (nothing ran now).
    replayed: bool = False
    # True when the tool ran in this call.
    executed: bool = False
    result_json: Optional[str] = None
    # The action the call is an attempt of (NEW), its downstream idempotency key.
    action_key: str = ""
    attempt: int = 0


def rpc_error(e: grpc.RpcError, what: str) -> Exception:
    code = e.code() if hasattr(e, "code") else None
    details = (e.details() if hasattr(e, "details") else str(e)) or ""
    if code in UNREACHABLE_CODES:
        return IdemUnavailable(f"idem unreachable during {what}: {getattr(code, 'name', code)}: {details}")
    return IdemRpcError(code, details)


def is_overloaded(e: BaseException) -> bool:
    return isinstance(e, IdemRpcError) and e.code == OVERLOADED


def overload_pause(attempt: int, first: float = 0.02) -> float:
    """Seconds to wait before retry ``attempt`` (0-based) of a shed check: doubling, jittered to
    50-150% so shed clients do not come back in step."""
    import random

    return first * (2 ** min(attempt, 16)) * (0.5 + random.random())


def overloaded_unavailable(e: BaseException, what: str) -> IdemUnavailable:
    return IdemUnavailable(f"idem overloaded during {what} after retries: {e}")


def is_unreachable(e: BaseException) -> bool:
    return isinstance(e, IdemUnavailable)


def build_check(tenant, session, tool, arguments, idempotency_key, deadline_ms, retry_of):
    req = pb2.CheckRequest(
        tenant=tenant, session=session, tool=tool, arguments_json=arguments_json(arguments)
    )
    if idempotency_key is not None:
        req.idempotency_key = idempotency_key
    if deadline_ms is not None:
        req.deadline_ms = int(deadline_ms)
    if retry_of is not None:
        req.retry = pb2.RESAMPLE
        req.retry_of = retry_of
    return req


def build_complete(call_id, result_json, error, cost, attempt=None, compensation_json=None):
    req = pb2.CompleteRequest(call_id=call_id)
    if attempt:
        req.attempt = int(attempt)
    if compensation_json is not None:
        req.compensation_json = compensation_json
    if error is not None:
        req.outcome = pb2.FAILED
        req.error = error
    else:
        req.outcome = pb2.SUCCEEDED
        req.result_json = result_json if result_json is not None else "null"
    if cost is not None:
        req.cost = float(cost)
    return req


def build_session_config(tenant: str, session: str, fields: dict) -> Any:
    fields = dict(fields)
    tools = fields.pop("tools", None) or {}
    cfg = pb2.SessionConfig(tenant=tenant, session=session, **fields)
    for name, pol in tools.items():
        if isinstance(pol, str):
            pol = {"mode": pol}
        pol = dict(pol)
        if isinstance(pol.get("defaults_json"), (dict, list)):
            pol["defaults_json"] = json.dumps(pol["defaults_json"])
        cfg.tools[name].CopyFrom(pb2.ToolPolicy(**pol))
    return cfg


def error_text(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}"
    return s[:4000]


def now_ms() -> int:
    return int(time.time() * 1000)


class Backoff:
    """Polling intervals: initial, doubling (x1.6), capped, never past the wait deadline."""

    def __init__(self, initial: float, maximum: float, until: float):
        self.next = initial
        self.maximum = maximum
        self.until = until

    def delay(self) -> float:
        d = min(self.next, self.maximum, max(0.0, self.until - time.monotonic()))
        self.next = min(self.next * 1.6, self.maximum)
        return d


def warn_fail_open(tool: str, err: BaseException) -> None:
    log.warning(
        "IDEM UNREACHABLE, FAILING OPEN: running tool %r WITHOUT duplicate protection (%s)",
        tool,
        err,
    )


Serializer = Callable[[Any], str]
Deserializer = Callable[[Optional[str]], Any]
