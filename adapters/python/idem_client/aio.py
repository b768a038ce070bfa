"""asyncio idem client (grpc.aio); the same dance as IdemClient, awaited."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any, Awaitable, Callable, Optional, cast

import grpc

from . import _core
from ._core import Outcome, borderline_from, borderline_says_duplicate, pb2, pb2_grpc
from .client import MAX_ROUNDS, _Base
from .errors import BorderlineError, IdemRpcError, IdemUnavailable, InFlightTimeout, ReplayError, ToolFailed


async def _maybe_await(x):
    if inspect.isawaitable(x):
        return await x
    return x


class AsyncIdemClient(_Base):
    """asyncio client for ``idem.v1.Idem``; ``await run(tool, arguments, fn)`` where ``fn()``
    returns an awaitable (or a plain value). Create it inside the running event loop."""

    def __init__(self, target: str = "127.0.0.1:50051", *, channel: Optional[grpc.aio.Channel] = None, **kw):
        super().__init__(target, **kw)
        creds = self._credentials()
        self._channel = channel or (
            grpc.aio.secure_channel(self.target, creds) if creds else grpc.aio.insecure_channel(self.target)
        )
        self._stub = pb2_grpc.IdemStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _call(self, method, req, what: str):
        try:
            return await method(req, timeout=self.rpc_timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _core.rpc_error(e, what) from e

    async def check(self, tool: str, arguments: Any, *, idempotency_key=None, deadline_ms=None,
                    retry_of=None, tenant=None, session=None):
        req = _core.build_check(
            tenant or self.tenant, session or self.session, tool, arguments, idempotency_key,
            deadline_ms if deadline_ms is not None else self.deadline_ms, retry_of,
        )
        for attempt in range(self.overload_retries + 1):
            try:
                return await self._call(self._stub.CheckAndRecord, req, "CheckAndRecord")
            except IdemRpcError as e:
                if not _core.is_overloaded(e):
                    raise
                if attempt == self.overload_retries:
                    raise _core.overloaded_unavailable(e, "CheckAndRecord") from e
                await asyncio.sleep(_core.overload_pause(attempt))

    async def complete(self, call_id: str, result: Any = None, *, error: Optional[str] = None,
                       cost: Optional[float] = None, result_json: Optional[str] = None,
                       attempt: Optional[int] = None, compensation_json: Optional[str] = None):
        if error is None and result_json is None:
            result_json = self.serialize(result)
        req = _core.build_complete(call_id, result_json, error, cost, attempt, compensation_json)
        return (await self._call(self._stub.Complete, req, "Complete")).call

    async def get_call(self, call_id: str):
        return await self._call(self._stub.GetCall, pb2.GetCallRequest(call_id=call_id), "GetCall")

    async def list_calls(self, *, status: Optional[int] = None, page_size: int = 100,
                         page_token: str = "", tenant: Optional[str] = None,
                         session: Optional[str] = None):
        req = pb2.ListCallsRequest(tenant=tenant or self.tenant, session=session or self.session,
                                   page_size=page_size, page_token=page_token)
        if status is not None:
            req.status = cast("pb2.CallStatus.ValueType", status)
        return await self._call(self._stub.ListCalls, req, "ListCalls")

    async def get_stats(self, *, tenant=None, session=None):
        req = pb2.GetStatsRequest(tenant=tenant or self.tenant)
        if session is not None:
            req.session = session
        return await self._call(self._stub.GetStats, req, "GetStats")

    async def server_version(self) -> "pb2.VersionInfo":
        """GetVersion: the server's ``version`` and its ``api`` package, ``"idem.v1"``."""
        return await self._call(self._stub.GetVersion, pb2.GetVersionRequest(), "GetVersion")

    async def configure_session(self, *, tenant=None, session=None, **fields):
        cfg = _core.build_session_config(tenant or self.tenant, session or self.session, fields)
        return await self._call(self._stub.ConfigureSession, pb2.ConfigureSessionRequest(config=cfg),
                                "ConfigureSession")

    async def get_session(self, *, tenant=None, session=None):
        req = pb2.GetSessionRequest(tenant=tenant or self.tenant, session=session or self.session)
        return await self._call(self._stub.GetSession, req, "GetSession")

    async def report_feedback(self, call_id: str, correct: bool, note: str = ""):
        req = pb2.FeedbackRequest(call_id=call_id, correct=correct, note=note)
        return await self._call(self._stub.ReportFeedback, req, "ReportFeedback")

    async def wait_for_call(self, call_id: str, timeout: float):
        """WaitForCall (see the sync client)."""
        req = pb2.WaitForCallRequest(call_id=call_id, timeout_ms=max(1, int(timeout * 1000)))
        try:
            return await self._stub.WaitForCall(req, timeout=timeout + self.rpc_timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _core.rpc_error(e, "WaitForCall") from e

    async def wait_for(self, call_id: str, timeout: Optional[float] = None):
        timeout = self.in_flight_timeout if timeout is None else timeout
        start = time.monotonic()
        until = start + timeout
        backoff = _core.Backoff(self.poll_interval, self.poll_max_interval, until)
        server_side = True
        while True:
            rec = None
            if server_side:
                try:
                    rec = await self.wait_for_call(
                        call_id, max(0.001, min(until - time.monotonic(), 30.0)))
                except IdemRpcError as e:
                    if not _core.is_unimplemented(e):
                        raise
                    server_side = False
            if rec is None:
                rec = await self.get_call(call_id)
            if rec.HasField("superseded_by"):
                return rec
            if rec.status != pb2.IN_PROGRESS:
                return rec
            if rec.lease_until_ms and rec.lease_until_ms <= _core.now_ms():
                return rec
            if time.monotonic() >= until:
                raise InFlightTimeout(call_id, time.monotonic() - start)
            if not server_side:
                await asyncio.sleep(backoff.delay())

    async def run(self, tool: str, arguments: Any, fn: Callable[[], Any], **kw) -> Any:
        return (await self.run_detailed(tool, arguments, fn, **kw)).value

    async def run_detailed(self, tool: str, arguments: Any, fn: Callable[[], Awaitable[Any]], *,
                           idempotency_key=None, deadline_ms=None, tenant=None, session=None,
                           on_borderline=None, serialize=None, deserialize=None, cost=None,
                           action_key_arg: Optional[str] = None) -> Outcome:
        """The dance, with details; ``current_action()`` and ``action_key_arg`` as in the sync
        client."""
        serialize = serialize or self.serialize
        deserialize = deserialize or self.deserialize
        on_borderline = on_borderline or self.on_borderline
        start = time.monotonic()
        wait_until = start + self.in_flight_timeout
        retry_of = None
        for _ in range(MAX_ROUNDS):
            try:
                resp = await self.check(tool, arguments, idempotency_key=idempotency_key,
                                        deadline_ms=deadline_ms, retry_of=retry_of,
                                        tenant=tenant, session=session)
            except IdemUnavailable as e:
                return await self._unavailable(tool, fn, e)
            retry_of = None
            _core.log_warnings(tool, resp)
            v = resp.verdict
            if v == pb2.NEW:
                if not resp.call_id:
                    return Outcome(await _maybe_await(fn()), "OFF", executed=True)
                return await self._execute(resp.call_id, fn, serialize, cost,
                                           _core.action_of(resp), action_key_arg)
            if v == pb2.BORDERLINE:
                if on_borderline is None:
                    raise BorderlineError(resp.call_id, resp.matched.score, resp.reason)
                decision = await _maybe_await(on_borderline(borderline_from(resp, tool, arguments)))
                if not borderline_says_duplicate(decision):
                    retry_of = resp.call_id
                    continue
                rec = await self.get_call(resp.call_id)
                status, call_id = rec.status, rec.call_id
                result_json = rec.result_json if rec.HasField("result_json") else None
            else:
                status = resp.status
                result_json = resp.result_json if resp.HasField("result_json") else None
                call_id = resp.call_id
            verdict = _core.VERDICT_NAMES.get(v, str(v))
            if status == pb2.SUCCEEDED:
                return Outcome(deserialize(result_json), verdict, call_id, replayed=True,
                               result_json=result_json)
            if status == pb2.FAILED:
                if v == pb2.BORDERLINE:
                    retry_of = call_id
                    continue
                raise ReplayError(f"call {call_id} matched an earlier call that failed: {resp.reason}")
            remaining = max(0.0, wait_until - time.monotonic())
            try:
                rec = await self.wait_for(call_id, timeout=remaining)
            except IdemUnavailable as e:
                return await self._unavailable(tool, fn, e)
            except InFlightTimeout:
                raise InFlightTimeout(call_id, time.monotonic() - start) from None
            if rec.status == pb2.SUCCEEDED:
                rj = rec.result_json if rec.HasField("result_json") else None
                return Outcome(deserialize(rj), verdict, call_id, replayed=True, result_json=rj)
        raise ReplayError(f"gave up on tool {tool!r} after {MAX_ROUNDS} rounds of checks")

    async def _unavailable(self, tool, fn, err: IdemUnavailable) -> Outcome:
        if not self.fail_open:
            raise err
        _core.warn_fail_open(tool, err)
        return Outcome(await _maybe_await(fn()), "UNAVAILABLE", executed=True)

    async def _execute(self, call_id: str, fn, serialize, cost, action=None,
                       action_key_arg=None) -> Outcome:
        attempt = action.attempt if action else None
        try:
            with _core.action_context(action):
                value = await _maybe_await(fn(**_core.action_kwargs(action, action_key_arg)))
        except ToolFailed as e:
            await self._complete_quietly(call_id, error=e.error, attempt=attempt)
            raise
        except BaseException as e:  # includes CancelledError: the retry may run again
            await asyncio.shield(self._complete_quietly(call_id, error=_core.error_text(e),
                                                        attempt=attempt))
            raise
        try:
            rj = serialize(value)
        except Exception as e:
            _core.log.warning("idem: cannot serialize the result of call %s (%s); storing its repr", call_id, e)
            rj = _core.default_serialize(repr(value))
        await self._complete_quietly(call_id, result_json=rj, cost=cost(value) if cost else None,
                                     attempt=attempt)
        return Outcome(value, "NEW", call_id, executed=True, result_json=rj,
                       action_key=action.key if action else "", attempt=attempt or 0)

    async def _complete_quietly(self, call_id: str, *, result_json=None, error=None, cost=None,
                                attempt=None) -> None:
        try:
            await self.complete(call_id, error=error, result_json=result_json, cost=cost,
                                attempt=attempt)
        except Exception as e:
            _core.log.warning("idem: could not Complete call %s (%s); a retry after its lease "
                              "expires may run the tool again", call_id, e)
