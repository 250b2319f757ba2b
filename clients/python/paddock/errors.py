"""Typed exceptions for the daemon's gRPC status codes.

Every failed call raises a subclass of `PaddockError` chosen by its status
code, carrying the code and the daemon's message (written for the person who
has to fix the call, e.g. ``limits.memory_bytes: 1 is below the minimum``).
"""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc

__all__ = [
    "PaddockError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "from_rpc_error",
]


class PaddockError(Exception):
    """A call to paddockd failed.

    Attributes:
        status: the gRPC status code (`grpc.StatusCode`).
        message: the daemon's explanation.
    """

    status: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, status: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    @property
    def code(self) -> str:
        """The status code's name, e.g. ``"NOT_FOUND"``."""
        return self.status.name

    def __str__(self) -> str:
        return f"{self.status.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def _cls(name: str, status: grpc.StatusCode, doc: str) -> Type[PaddockError]:
    return type(name, (PaddockError,), {"status": status, "__doc__": doc, "__module__": __name__})


Cancelled = _cls("Cancelled", grpc.StatusCode.CANCELLED, "The call was cancelled.")
Unknown = _cls("Unknown", grpc.StatusCode.UNKNOWN, "An error without a more specific code.")
InvalidArgument = _cls("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT, "Bad input; the message names the field.")
DeadlineExceeded = _cls("DeadlineExceeded", grpc.StatusCode.DEADLINE_EXCEEDED, "The call or command timed out.")
NotFound = _cls("NotFound", grpc.StatusCode.NOT_FOUND, "No such session, environment, file or process (or another tenant's).")
AlreadyExists = _cls("AlreadyExists", grpc.StatusCode.ALREADY_EXISTS, "The name is taken.")
PermissionDenied = _cls("PermissionDenied", grpc.StatusCode.PERMISSION_DENIED, "The caller may not do this (e.g. a tenant calling an admin's method).")
ResourceExhausted = _cls("ResourceExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED, "A limit was reached.")
FailedPrecondition = _cls("FailedPrecondition", grpc.StatusCode.FAILED_PRECONDITION, "The target is in the wrong state (e.g. a stopped session).")
Aborted = _cls("Aborted", grpc.StatusCode.ABORTED, "The operation was aborted.")
OutOfRange = _cls("OutOfRange", grpc.StatusCode.OUT_OF_RANGE, "A value is out of range.")
Unimplemented = _cls("Unimplemented", grpc.StatusCode.UNIMPLEMENTED, "The daemon does not implement this call.")
Internal = _cls("Internal", grpc.StatusCode.INTERNAL, "The daemon failed.")
Unavailable = _cls("Unavailable", grpc.StatusCode.UNAVAILABLE, "The daemon cannot be reached.")
DataLoss = _cls("DataLoss", grpc.StatusCode.DATA_LOSS, "Data was lost or corrupted.")
Unauthenticated = _cls("Unauthenticated", grpc.StatusCode.UNAUTHENTICATED, "A missing or bad token.")

_BY_STATUS: Dict[grpc.StatusCode, Type[PaddockError]] = {
    c.status: c
    for c in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied,
        ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal, Unavailable,
        DataLoss, Unauthenticated,
    )
}


def from_rpc_error(e: grpc.RpcError) -> PaddockError:
    """The typed exception for a failed call (sync `grpc.RpcError` or `grpc.aio.AioRpcError`)."""
    status = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    message = (e.details() if hasattr(e, "details") else None) or str(e)
    cls = _BY_STATUS.get(status, PaddockError)
    err = cls(message, status)
    return err
