"""The one table from the store's errors to gRPC status codes.

Servicers catch `KVStoreError`s and abort the call with the mapped code and the
error's message; anything else becomes INTERNAL (logged), never a crash.
"""

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from kvclient.pb import kv_pb2
from kvstore import errors

log = logging.getLogger(__name__)

# ErrorInfo.domain of every error the store reports.
ERROR_DOMAIN = "kvstore"

STATUS_OF_ERROR: dict[type[errors.KVStoreError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}


def status_of(error: errors.KVStoreError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_OF_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


_ERROR_OF_STATUS = {code: error for error, code in STATUS_OF_ERROR.items()}


def error_of(code: int | grpc.StatusCode, message: str) -> errors.KVStoreError:
    """The store's error for a status received from a peer (the reverse of
    `status_of`); codes with no error of their own become Unavailable."""
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return _ERROR_OF_STATUS.get(code, errors.Unavailable)(message)


def rich_status(error: errors.KVStoreError) -> status_pb2.Status:
    """The `google.rpc.Status` of `error`: its code and message, an
    `ErrorInfo` (its reason and fields) when it has a reason, and a
    `RetryInfo` when it has a `retry_after`. A failed call
    carries it in its trailing metadata (`status_details`); a failed
    operation of a KV.Session stream carries it in its result."""
    status = status_pb2.Status(code=status_of(error).value[0], message=str(error))
    if error.reason is not None:
        status.details.add().Pack(error_details_pb2.ErrorInfo(
            reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(error.retry_after * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def status_details(error: errors.KVStoreError) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying the `rich_status` of an error that has a
    reason or a retry delay; empty otherwise. gRPC's rich error model:
    grpcio-status reads it back."""
    if error.reason is None and error.retry_after is None:
        return ()
    return (("grpc-status-details-bin", rich_status(error).SerializeToString()),)


def item_status(error: BaseException | None) -> kv_pb2.ItemStatus:
    """The status of one item of a batch (or of a replica operation): OK for
    None, the error's code, message, reason and fields otherwise; anything
    but a store error is INTERNAL (and logged)."""
    if error is None:
        return kv_pb2.ItemStatus()
    if isinstance(error, errors.KVStoreError):
        return kv_pb2.ItemStatus(code=status_of(error).value[0], message=str(error),
                                 reason=error.reason or "", metadata=error.metadata)
    log.error("unexpected error in a batch item", exc_info=error)
    return kv_pb2.ItemStatus(
        code=grpc.StatusCode.INTERNAL.value[0],
        message=f"internal error ({type(error).__name__}: {error}); see the log",
    )
