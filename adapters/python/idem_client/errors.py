"""Exceptions raised by idem_client."""

from __future__ import annotations


class IdemError(Exception):
    """Base class of every error idem_client raises itself."""


class IdemUnavailable(IdemError):
    """idem could not be reached (or did not answer in time) and the policy is fail closed."""


class IdemRpcError(IdemError):
    """idem answered with an error status (bad arguments, key reuse, payload too large, ...)."""

    def __init__(self, code, details: str):
        super().__init__(f"idem {getattr(code, 'name', code)}: {details}")
        self.code = code
        self.details = details


class InFlightTimeout(IdemError):
    """The original call is still running after the configured wait; it was not run again."""

    def __init__(self, call_id: str, waited: float):
        super().__init__(
            f"call {call_id} is still in flight after waiting {waited:.1f}s; "
            "not running it again (raise in_flight_timeout or retry later)"
        )
        self.call_id = call_id
        self.waited = waited


class BorderlineError(IdemError):
    """idem answered BORDERLINE and no on_borderline callback was configured."""

    def __init__(self, call_id: str, score: float, reason: str):
        super().__init__(
            f"possible repeat of call {call_id} (score {score:.3f}) and no on_borderline "
            f"callback is configured: {reason}"
        )
        self.call_id = call_id
        self.score = score
        self.reason = reason


class ReplayError(IdemError):
    """A duplicate's original has no result to replay (it did not succeed)."""


class ToolFailed(Exception):
    """Raise from a tool body to have the call recorded FAILED while handing back a value.

    Adapters use it for frameworks that turn tool errors into results (a LangChain ToolMessage
    with status "error"): the call is recorded as FAILED, so a retry runs again, and the adapter
    returns ``value`` to the framework.
    """

    def __init__(self, error: str, value=None):
        super().__init__(error)
        self.error = error
        self.value = value
