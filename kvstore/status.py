"""The one table from the store's errors to gRPC status codes.

Servicers catch `KVStoreError`s and abort the call with the mapped code and the
error's message; anything else becomes INTERNAL (logged), never a crash.
"""

import grpc

from kvstore import errors

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
        code = STATUS_OF_ERROR.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
