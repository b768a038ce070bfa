"""Synchronous idem client and the check / run / complete dance."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, cast

import grpc

from . import _core
from ._core import (
    FAIL_CLOSED,
    FAIL_OPEN,
    Outcome,
    borderline_from,
    borderline_says_duplicate,
    pb2,
    pb2_grpc,
)
from .errors import BorderlineError, IdemRpcError, IdemUnavailable, InFlightTimeout, ReplayError, ToolFailed

MAX_ROUNDS = 8


class _Base:
    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        tenant: Optional[str] = None,
        session: str = "default",
        on_unavailable: str = FAIL_CLOSED,
        rpc_timeout: float = 5.0,
        deadline_ms: Optional[int] = None,
        in_flight_timeout: float = 30.0,
        poll_interval: float = 0.05,
        poll_max_interval: float = 1.0,
        on_borderline: Optional[Callable[[_core.Borderline], Any]] = None,
        serialize: _core.Serializer = _core.default_serialize,
        deserialize: _core.Deserializer = _core.default_deserialize,
        overload_retries: int = 3,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
    ):
        if on_unavailable not in _core._POLICIES:
            raise ValueError(f"on_unavailable must be one of {_core._POLICIES}, got {on_unavailable!r}")
        self.target = _core.normalize_target(target)
        # API token of a server with [auth] (default: $IDEM_TOKEN), sent on every RPC as
        # ``authorization: Bearer TOKEN``; ca_file (default: $IDEM_CA_FILE) makes the channel TLS.
        token = token if token is not None else os.environ.get("IDEM_TOKEN") or None
        self._metadata: Optional[tuple] = (("authorization", f"Bearer {token}"),) if token else None
        self.ca_file = ca_file if ca_file is not None else os.environ.get("IDEM_CA_FILE") or None
        # Without a tenant: the token's (an empty tenant), or "default" on a server without auth.
        self.tenant = tenant if tenant is not None else ("" if self._metadata else "default")
        self.session = session
        self.on_unavailable = on_unavailable
        self.rpc_timeout = rpc_timeout
        self.deadline_ms = deadline_ms
        self.in_flight_timeout = in_flight_timeout
        self.poll_interval = poll_interval
        self.poll_max_interval = poll_max_interval
        self.on_borderline = on_borderline
        self.serialize = serialize
        self.deserialize = deserialize
        # Retries of a check idem shed as overloaded (RESOURCE_EXHAUSTED) before it counts as
        # unreachable and ``on_unavailable`` decides.
        self.overload_retries = overload_retries

    def _credentials(self) -> Optional[grpc.ChannelCredentials]:
        """TLS credentials trusting ``ca_file``, or None for plaintext."""
        if not self.ca_file:
            return None
        with open(self.ca_file, "rb") as f:
            return grpc.ssl_channel_credentials(root_certificates=f.read())

    @property
    def fail_open(self) -> bool:
        return self.on_unavailable == FAIL_OPEN


class IdemClient(_Base):
    """Blocking client for the ``idem.v1.Idem`` service.

    ``run(tool, arguments, fn)`` is the whole dance: check, run ``fn`` on NEW and Complete with
    its result (or FAILED, re-raising its error), replay on DUPLICATE, wait on IN_FLIGHT, ask
    ``on_borderline`` on BORDERLINE; when idem is unreachable ``on_unavailable`` decides
    (``"fail_closed"`` raises IdemUnavailable, ``"fail_open"`` runs ``fn`` and logs a warning).
    """

    def __init__(self, target: str = "127.0.0.1:50051", *, channel: Optional[grpc.Channel] = None, **kw):
        super().__init__(target, **kw)
        creds = self._credentials()
        self._channel = channel or (
            grpc.secure_channel(self.target, creds) if creds else grpc.insecure_channel(self.target)
        )
        self._stub = pb2_grpc.IdemStub(self._channel)

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, req, what: str):
        try:
            return method(req, timeout=self.rpc_timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _core.rpc_error(e, what) from e

    # -- RPCs -----------------------------------------------------------------------------
    def check(
        self,
        tool: str,
        arguments: Any,
        *,
        idempotency_key: Optional[str] = None,
        deadline_ms: Optional[int] = None,
        retry_of: Optional[str] = None,
        tenant: Optional[str] = None,
        session: Optional[str] = None,
    ):
        """CheckAndRecord; returns the CheckResponse message. ``retry_of`` asks for RESAMPLE."""
        req = _core.build_check(
            tenant or self.tenant,
            session or self.session,
            tool,
            arguments,
            idempotency_key,
            deadline_ms if deadline_ms is not None else self.deadline_ms,
            retry_of,
        )
        for attempt in range(self.overload_retries + 1):
            try:
                return self._call(self._stub.CheckAndRecord, req, "CheckAndRecord")
            except IdemRpcError as e:
                if not _core.is_overloaded(e):
                    raise
                if attempt == self.overload_retries:
                    raise _core.overloaded_unavailable(e, "CheckAndRecord") from e
                time.sleep(_core.overload_pause(attempt))

    def complete(self, call_id: str, result: Any = None, *, error: Optional[str] = None,
                 cost: Optional[float] = None, result_json: Optional[str] = None,
                 attempt: Optional[int] = None, compensation_json: Optional[str] = None):
        """Report SUCCEEDED with ``result`` (serialized to JSON), or FAILED when ``error`` is set.
        ``attempt`` (the check's) makes a Complete of an attempt that was taken over fail
        (FAILED_PRECONDITION) instead of landing; ``compensation_json`` says how to undo it."""
        if error is None and result_json is None:
            result_json = self.serialize(result)
        req = _core.build_complete(call_id, result_json, error, cost, attempt, compensation_json)
        return self._call(self._stub.Complete, req, "Complete").call

    def get_call(self, call_id: str):
        return self._call(self._stub.GetCall, pb2.GetCallRequest(call_id=call_id), "GetCall")

    def list_calls(self, *, status: Optional[int] = None, page_size: int = 100, page_token: str = "",
                   tenant: Optional[str] = None, session: Optional[str] = None):
        req = pb2.ListCallsRequest(tenant=tenant or self.tenant, session=session or self.session,
                                   page_size=page_size, page_token=page_token)
        if status is not None:
            req.status = cast("pb2.CallStatus.ValueType", status)
        return self._call(self._stub.ListCalls, req, "ListCalls")

    def get_stats(self, *, tenant: Optional[str] = None, session: Optional[str] = None):
        req = pb2.GetStatsRequest(tenant=tenant or self.tenant)
        if session is not None:
            req.session = session
        return self._call(self._stub.GetStats, req, "GetStats")

    def server_version(self) -> "pb2.VersionInfo":
        """GetVersion: the server's ``version`` (also the API's and this package's when they
        match, see ``idem_client.__version__``) and its ``api`` package, ``"idem.v1"``."""
        return self._call(self._stub.GetVersion, pb2.GetVersionRequest(), "GetVersion")

    def configure_session(self, *, tenant: Optional[str] = None, session: Optional[str] = None, **fields):
        """ConfigureSession. Fields are SessionConfig's (``deadline_ms=2000``, ``borderline_policy="ask"``,
        ``tools={"search": "off", "send_email": {"mode": "semantic", "identity_fields": ["to"]}}``)."""
        cfg = _core.build_session_config(tenant or self.tenant, session or self.session, fields)
        return self._call(self._stub.ConfigureSession, pb2.ConfigureSessionRequest(config=cfg),
                          "ConfigureSession")

    def get_session(self, *, tenant: Optional[str] = None, session: Optional[str] = None):
        req = pb2.GetSessionRequest(tenant=tenant or self.tenant, session=session or self.session)
        return self._call(self._stub.GetSession, req, "GetSession")

    def report_feedback(self, call_id: str, correct: bool, note: str = ""):
        req = pb2.FeedbackRequest(call_id=call_id, correct=correct, note=note)
        return self._call(self._stub.ReportFeedback, req, "ReportFeedback")

    # -- waiting --------------------------------------------------------------------------
    def wait_for_call(self, call_id: str, timeout: float):
        """WaitForCall: the server answers as soon as the call leaves IN_PROGRESS (or is taken
        over), or after ``timeout`` seconds with the record as it is."""
        req = pb2.WaitForCallRequest(call_id=call_id, timeout_ms=max(1, int(timeout * 1000)))
        try:
            return self._stub.WaitForCall(req, timeout=timeout + self.rpc_timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _core.rpc_error(e, "WaitForCall") from e

    def wait_for(self, call_id: str, timeout: Optional[float] = None):
        """Wait until the call is no longer running, its lease expired or it was taken over:
        on the server (WaitForCall), or polling GetCall with backoff against an older server.

        Returns the CallRecord; raises InFlightTimeout when ``timeout`` (default
        ``in_flight_timeout``) passes first."""
        timeout = self.in_flight_timeout if timeout is None else timeout
        start = time.monotonic()
        until = start + timeout
        backoff = _core.Backoff(self.poll_interval, self.poll_max_interval, until)
        server_side = True
        while True:
            rec = None
            if server_side:
                try:
                    rec = self.wait_for_call(call_id, max(0.001, min(until - time.monotonic(), 30.0)))
                except IdemRpcError as e:
                    if not _core.is_unimplemented(e):
                        raise
                    server_side = False
            if rec is None:
                rec = self.get_call(call_id)
            if rec.HasField("superseded_by"):
                return rec  # taken over: a new check decides
            if rec.status != pb2.IN_PROGRESS:
                return rec
            if rec.lease_until_ms and rec.lease_until_ms <= _core.now_ms():
                return rec  # lease expired: a new check takes over
            if time.monotonic() >= until:
                raise InFlightTimeout(call_id, time.monotonic() - start)
            if not server_side:
                time.sleep(backoff.delay())

    # -- the dance ------------------------------------------------------------------------
    def run(self, tool: str, arguments: Any, fn: Callable[[], Any], **kw) -> Any:
        """Run ``fn()`` at most once for this call; see the class doc. Returns its (or the replayed)
        result."""
        return self.run_detailed(tool, arguments, fn, **kw).value

    def run_detailed(
        self,
        tool: str,
        arguments: Any,
        fn: Callable[[], Any],
        *,
        idempotency_key: Optional[str] = None,
        deadline_ms: Optional[int] = None,
        tenant: Optional[str] = None,
        session: Optional[str] = None,
        on_borderline: Optional[Callable[[_core.Borderline], Any]] = None,
        serialize: Optional[_core.Serializer] = None,
        deserialize: Optional[_core.Deserializer] = None,
        cost: Optional[Callable[[Any], Optional[float]]] = None,
        action_key_arg: Optional[str] = None,
    ) -> Outcome:
        """The dance, with details. While ``fn`` runs, ``idem_client.current_action()`` is its
        action (``key``: the downstream API's idempotency key, stable across lease take-overs);
        ``action_key_arg="idempotency_key"`` also passes the key to ``fn`` as that keyword."""
        serialize = serialize or self.serialize
        deserialize = deserialize or self.deserialize
        on_borderline = on_borderline or self.on_borderline
        start = time.monotonic()
        wait_until = start + self.in_flight_timeout
        retry_of = None
        for _ in range(MAX_ROUNDS):
            try:
                resp = self.check(tool, arguments, idempotency_key=idempotency_key,
                                  deadline_ms=deadline_ms, retry_of=retry_of,
                                  tenant=tenant, session=session)
            except IdemUnavailable as e:
                return self._unavailable(tool, fn, e)
            retry_of = None
            _core.log_warnings(tool, resp)
            v = resp.verdict
            if v == pb2.NEW:
                if not resp.call_id:  # the tool's mode is off: not recorded
                    return Outcome(fn(), "OFF", executed=True)
                return self._execute(resp.call_id, fn, serialize, cost, _core.action_of(resp),
                                     action_key_arg)
            if v == pb2.BORDERLINE:
                if on_borderline is None:
                    raise BorderlineError(resp.call_id, resp.matched.score, resp.reason)
                decision = on_borderline(borderline_from(resp, tool, arguments))
                if not borderline_says_duplicate(decision):
                    retry_of = resp.call_id  # run it: RESAMPLE linked to the match
                    continue
                rec = self.get_call(resp.call_id)
                status, result_json, call_id = rec.status, rec.result_json if rec.HasField("result_json") else None, rec.call_id
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
                    retry_of = call_id  # the original failed: run it
                    continue
                raise ReplayError(f"call {call_id} matched an earlier call that failed: {resp.reason}")
            # IN_PROGRESS: wait for the original, then replay it or check again.
            remaining = max(0.0, wait_until - time.monotonic())
            try:
                rec = self.wait_for(call_id, timeout=remaining)
            except IdemUnavailable as e:
                return self._unavailable(tool, fn, e)
            except InFlightTimeout:
                raise InFlightTimeout(call_id, time.monotonic() - start) from None
            if rec.status == pb2.SUCCEEDED:
                rj = rec.result_json if rec.HasField("result_json") else None
                return Outcome(deserialize(rj), verdict, call_id, replayed=True, result_json=rj)
            # FAILED, or its lease expired: a repeat may run again; check again.
        raise ReplayError(f"gave up on tool {tool!r} after {MAX_ROUNDS} rounds of checks")

    def _unavailable(self, tool: str, fn: Callable[[], Any], err: IdemUnavailable) -> Outcome:
        if not self.fail_open:
            raise err
        _core.warn_fail_open(tool, err)
        return Outcome(fn(), "UNAVAILABLE", executed=True)

    def _execute(self, call_id: str, fn, serialize, cost, action=None, action_key_arg=None) -> Outcome:
        attempt = action.attempt if action else None
        try:
            with _core.action_context(action):
                value = fn(**_core.action_kwargs(action, action_key_arg))
        except ToolFailed as e:
            self._complete_quietly(call_id, error=e.error, attempt=attempt)
            raise
        except BaseException as e:
            self._complete_quietly(call_id, error=_core.error_text(e), attempt=attempt)
            raise
        try:
            rj = serialize(value)
        except Exception as e:  # the tool ran: never lose its result over serialization
            _core.log.warning("idem: cannot serialize the result of call %s (%s); storing its repr", call_id, e)
            rj = _core.default_serialize(repr(value))
        self._complete_quietly(call_id, result_json=rj, cost=cost(value) if cost else None,
                               attempt=attempt)
        return Outcome(value, "NEW", call_id, executed=True, result_json=rj,
                       action_key=action.key if action else "", attempt=attempt or 0)

    def _complete_quietly(self, call_id: str, *, result_json=None, error=None, cost=None,
                          attempt=None) -> None:
        try:
            self.complete(call_id, error=error, result_json=result_json, cost=cost, attempt=attempt)
        except Exception as e:  # the tool already ran; its lease will expire and a retry takes over
            _core.log.warning("idem: could not Complete call %s (%s); a retry after its lease "
                              "expires may run the tool again", call_id, e)
