"""idem_client: ask idem before an agent runs a tool, so each distinct call runs once.

- ``IdemClient`` / ``AsyncIdemClient``: the gRPC API and the whole check / run / complete dance
  (``run(tool, arguments, fn)``).
- ``dedup_tool``: a decorator for any function, sync or async.
- ``idem_client.langchain``: ``IdemMiddleware`` (LangChain 1.x agents) and ``idem_tool`` (any
  BaseTool).
- ``idem_client.openai_agents``: ``idem_function_tool`` and ``idem_tool_guardrails``.
"""

from ._core import DUPLICATE, FAIL_CLOSED, FAIL_OPEN, NEW, Action, Borderline, Outcome, current_action, pb2
from .aio import AsyncIdemClient
from .client import IdemClient
from .decorator import dedup_tool
from ._version import __version__
from .errors import (
    BorderlineError,
    IdemError,
    IdemRpcError,
    IdemUnavailable,
    InFlightTimeout,
    ReplayError,
    ToolFailed,
)

__all__ = [
    "Action",
    "AsyncIdemClient",
    "Borderline",
    "BorderlineError",
    "DUPLICATE",
    "FAIL_CLOSED",
    "FAIL_OPEN",
    "IdemClient",
    "IdemError",
    "IdemRpcError",
    "IdemUnavailable",
    "InFlightTimeout",
    "NEW",
    "Outcome",
    "ReplayError",
    "current_action",
    "ToolFailed",
    "dedup_tool",
    "__version__",
    "pb2",
]
