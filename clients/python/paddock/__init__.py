"""Python client for Paddock, self-hosted sandboxes for AI agents' tools.

    from paddock import Paddock

    with Paddock() as pd, pd.sessions.create(memory="1G", ttl="1h") as s:
        print(s.exec("echo hi").text)

`Paddock` blocks; `AsyncPaddock` is the asyncio twin. Errors are the typed
exceptions of `paddock.errors` (`NotFound`, `InvalidArgument`, ...), all
`PaddockError`. `paddock.anthropic` plugs sessions into the anthropic SDK.
"""

from . import errors
from ._async import AsyncPaddock, AsyncProcess, AsyncSession
from ._connect import DEFAULT_ADDR
from ._sync import Paddock, Process, Session
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PaddockError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .types import (
    CodeResult,
    ExecEvent,
    ExecResult,
    FileInfo,
    NetworkPolicy,
    NetworkStatus,
    ProcessEvent,
    ProcessInfo,
    SessionInfo,
    ToolResult,
    WatchEvent,
    parse_bytes,
    parse_seconds,
)

__version__ = "0.1.0"

__all__ = [
    "Paddock", "AsyncPaddock", "Session", "AsyncSession", "Process", "AsyncProcess", "DEFAULT_ADDR",
    "errors", "PaddockError", "NotFound", "PermissionDenied", "Unauthenticated", "FailedPrecondition",
    "InvalidArgument", "ResourceExhausted", "DeadlineExceeded", "AlreadyExists", "Internal", "Unavailable",
    "CodeResult", "ExecEvent", "ExecResult", "FileInfo", "NetworkPolicy", "NetworkStatus", "ProcessEvent",
    "ProcessInfo", "SessionInfo", "ToolResult", "WatchEvent", "parse_bytes", "parse_seconds",
]
