"""The typed exceptions of kvclient, one per gRPC status code.

This module owns the only table from status codes to client exceptions
(`ERROR_BY_CODE`) and the only function that turns a `grpc.RpcError`, sync or
asyncio, into one of them (`from_rpc_error`). It must never do I/O: it is
shared by both clients and by the pure request/retry modules.

Every exception carries `.code` (a `grpc.StatusCode`) and `.details` (the
server's message, which says what to change); `str(e)` shows both. Where the
server sent gRPC's rich error details (a `google.rpc.Status` in the trailing
metadata, or in a KV.Session result), `.reason` names the case (e.g.
`QUORUM_NOT_REACHED`, `NOT_LEADER`), `.metadata` holds its fields, `.outcome` says what a
failed write did (`"not_applied"`: nothing was applied; `"unknown"`: it may
have been applied and may still appear), `.required` and `.acknowledged`
count the replicas of a quorum not reached, and `.retry_after` says how long
to wait before retrying (seconds). A failed compare-and-set is
`VersionMismatch` (a FailedPrecondition) with `.current_version`.
`DeadlineExceeded` is also a TimeoutError,
`Unavailable` a ConnectionError and `InvalidArgument` a ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "KVError",
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
    "VersionMismatch",
    "ERROR_BY_CODE",
    "error_for",
    "from_rpc_error",
    "from_status",
    "status_of",
    "status_code_from_int",
]


class KVError(Exception):
    """Base of every error a kvclient call can raise (besides TypeError).

    `code` is the gRPC status; `details` is the server's message (or the
    client's, for errors found before anything was sent).
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str = "", code: grpc.StatusCode | None = None, *,
                 reason: str | None = None, metadata: Mapping[str, str] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after

    @property
    def outcome(self) -> str | None:
        """For a failed write: "not_applied" or "unknown", when the server said."""
        return self.metadata.get("outcome")

    @property
    def required(self) -> int | None:
        """For a quorum not reached: how many replicas had to acknowledge."""
        return self._count("required")

    @property
    def acknowledged(self) -> int | None:
        """For a quorum not reached: how many replicas did acknowledge."""
        return self._count("acknowledged")

    def _count(self, field: str) -> int | None:
        text = self.metadata.get(field, "")
        return int(text) if text.isdigit() else None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name


class Cancelled(KVError):
    """The call was cancelled, usually by the caller."""

    code = grpc.StatusCode.CANCELLED


class Unknown(KVError):
    """The server failed in a way it could not classify."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(KVError, ValueError):
    """The request is wrong: bad key, value, option or context.

    Also raised locally, before sending, for an unknown consistency level or a
    non-positive timeout; it is a ValueError too, so either can be caught.
    """

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(KVError, TimeoutError):
    """The call's overall deadline (retries included) passed. A TimeoutError
    too, so code that handles timeouts in general catches it."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(KVError):
    """Something the request names does not exist (not used for absent keys)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(KVError):
    """Something the request would create already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(KVError):
    """The caller may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(KVError):
    """A capacity limit was hit (store full, message too large)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(KVError):
    """The request is well formed but the store's state forbids it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class VersionMismatch(FailedPrecondition):
    """Leader mode: a compare-and-set (`if_version`) found the key at another
    version; nothing was written. `.current_version` is the key's version
    (0: absent): read it again and decide. Never retried by the client."""

    @property
    def current_version(self) -> int | None:
        return self._count("current_version")


class Aborted(KVError):
    """The operation was aborted (e.g. a conflict); retried by the client."""

    code = grpc.StatusCode.ABORTED


class OutOfRange(KVError):
    """A value in the request is outside the range the server accepts."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(KVError):
    """The server does not implement this call."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(KVError):
    """A bug on the server, or a response the client could not make sense of."""

    code = grpc.StatusCode.INTERNAL


class Unavailable(KVError, ConnectionError):
    """No server could take the call: starting, stopping, unreachable, or too
    few replicas answered. Raised once the client's retries are used up. A
    ConnectionError too, as redis-py's and requests' connection errors are."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(KVError):
    """A stored record failed its checksum; it is reported, never returned."""

    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(KVError):
    """The caller did not prove who it is."""

    code = grpc.StatusCode.UNAUTHENTICATED


# The one table from status code to exception class; OK has no entry.
ERROR_BY_CODE: dict[grpc.StatusCode, type[KVError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}

# The ErrorInfo reason of a failed compare-and-set (FAILED_PRECONDITION).
VERSION_MISMATCH = "VERSION_MISMATCH"

_CODE_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_for(code: grpc.StatusCode, details: str, *, reason: str | None = None,
              metadata: Mapping[str, str] | None = None,
              retry_after: float | None = None) -> KVError:
    """The typed exception for `code`, carrying `details` (and the rich details)."""
    extras = {"reason": reason, "metadata": metadata, "retry_after": retry_after}
    cls = ERROR_BY_CODE.get(code)
    if cls is FailedPrecondition and reason == VERSION_MISMATCH:
        cls = VersionMismatch
    if cls is None:
        return KVError(details, code, **extras)  # type: ignore[arg-type]
    return cls(details, **extras)  # type: ignore[arg-type]


def status_of(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call; UNKNOWN when the error has none."""
    code = getattr(error, "code", None)
    status = code() if callable(code) else None
    return status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def from_rpc_error(error: grpc.RpcError) -> KVError:
    """The typed exception for a failed sync or asyncio call.

    Callers raise it `from` the RpcError so the transport detail stays in the
    traceback.
    """
    details = getattr(error, "details", None)
    message = details() if callable(details) else None
    trailing = getattr(error, "trailing_metadata", None)
    reason, metadata, retry_after = rich_details(trailing() if callable(trailing) else None)
    return error_for(status_of(error), message or "", reason=reason, metadata=metadata,
                     retry_after=retry_after)


_DETAILS_KEY = "grpc-status-details-bin"


def rich_details(
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> tuple[str | None, dict[str, str], float | None]:
    """(reason, metadata, retry_after) from the `google.rpc.Status` a server
    put in a call's trailing metadata; (None, {}, None) when there is none or
    it cannot be read (the status code and message still stand)."""
    found: tuple[str | None, dict[str, str], float | None] = (None, {}, None)
    for key, value in trailing_metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # malformed details: ignore them, never fail the error
            continue
        found = details_of(status)
    return found


def details_of(status: status_pb2.Status) -> tuple[str | None, dict[str, str], float | None]:
    """(reason, metadata, retry_after) from a `google.rpc.Status`'s details:
    its `ErrorInfo` and `RetryInfo`, where it has them."""
    reason: str | None = None
    metadata: dict[str, str] = {}
    retry_after: float | None = None
    for detail in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason or None, dict(info.metadata)
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToTimedelta().total_seconds()
    return reason, metadata, retry_after


def from_status(status: status_pb2.Status) -> KVError:
    """The typed exception for a `google.rpc.Status`: that of a failed
    operation of a KV.Session stream, which carries what a failed call
    carries (code, message, details)."""
    reason, metadata, retry_after = details_of(status)
    return error_for(status_code_from_int(status.code), status.message, reason=reason,
                     metadata=metadata, retry_after=retry_after)


def status_code_from_int(number: int) -> grpc.StatusCode:
    """The StatusCode with this number (as in a batch's ItemStatus.code)."""
    return _CODE_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
