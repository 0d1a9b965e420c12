"""The spans of a server process's side of each hop, as `kvclient.tracing`
names them: a KV operation it serves (SERVER: a unary call, or an operation
of a KV.Session stream), a replica operation it receives (SERVER: from
Replica.Stream or Replica.Batch), and one it sends (CLIENT, to another
node; INTERNAL, to its own replica).

Owns their names, attributes and outcomes, and where each takes its parent
from (the call's metadata, the operation's `trace` field, the current
span). Called only by a process that traces: every caller tests its
`Tracing` for None first, so a process that does not trace runs none of
this. A replica operation is traced only when its sender traced it (it
carries a trace context): heartbeats, anti-entropy and hint replay never
are.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from kvclient.pb import kv_pb2, replica_pb2
from kvclient.tracing import KV_SERVICE, REPLICA_SERVICE, Tracing, rpc_attributes, status_code_of
from kvstore.errors import KVStoreError
from kvstore.rpc.replica_stream import Started
from kvstore.rpc.status import status_of

if TYPE_CHECKING:
    from opentelemetry.trace import Span

T = TypeVar("T")


def code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status an error of a server ends a call with."""
    if isinstance(error, KVStoreError):
        return status_of(error)
    if isinstance(error, (asyncio.CancelledError, TimeoutError)):
        return (grpc.StatusCode.CANCELLED if isinstance(error, asyncio.CancelledError)
                else grpc.StatusCode.DEADLINE_EXCEEDED)
    return status_code_of(error)


# -- KV operations -----------------------------------------------------------


async def unary_operation(tracing: Tracing, method: str, metadata: Sequence[tuple[str, Any]],
                          work: Awaitable[T]) -> T:
    """`work`, a unary KV call's, in its SERVER span: a child of the
    caller's span when the call's metadata carries one."""
    with tracing.span(f"{KV_SERVICE}/{method}", "server",
                      parent=tracing.incoming_metadata(metadata), server=True, code_of=code_of,
                      attributes=rpc_attributes(KV_SERVICE, method,
                                                **{"kvstore.transport": "unary"})) as span:
        response = await work
        tracing.ended_with(span, grpc.StatusCode.OK, server=True)
        return response


async def session_operation(tracing: Tracing, method: str, operation: kv_pb2.SessionOperation,
                            work: Awaitable[kv_pb2.SessionResult]) -> kv_pb2.SessionResult:
    """`work`, an operation of a KV.Session stream, in its SERVER span: a
    child of the span the operation carries; its outcome is the result's."""
    parent = tracing.incoming(operation.trace) if operation.HasField("trace") else None
    with tracing.span(f"{KV_SERVICE}/{method}", "server", parent=parent, server=True,
                      code_of=code_of,
                      attributes=rpc_attributes(KV_SERVICE, method,
                                                **{"kvstore.transport": "session"})) as span:
        result = await work
        if result.WhichOneof("outcome") == "error":
            tracing.ended_with(span, result.error.code, result.error.message, server=True)
        else:
            tracing.ended_with(span, grpc.StatusCode.OK, server=True)
        return result


# -- replica operations, received --------------------------------------------


def received(tracing: Tracing, op: replica_pb2.ReplicaOp,
             start: Callable[[replica_pb2.ReplicaOp], Started]) -> Started:
    """`start(op)` in the SERVER span of a replica operation whose sender
    traced it: ended at once with an answer given at once, else when the
    coroutine returned ends (the span is current while it runs, so the
    storage write it makes is its child)."""
    kind = op.WhichOneof("op") or "unknown"
    span = tracing.start(f"replica.{kind}", "server", parent=tracing.incoming(op.trace),
                         attributes=_replica_attributes(kind))
    with tracing.use(span, end=False):
        started = start(op)
    if isinstance(started, replica_pb2.ReplicaResult):
        _answered(tracing, span, started)
        span.end()
        return started
    return _run_in(tracing, span, started)


async def _run_in(tracing: Tracing, span: Span,
                  work: Awaitable[replica_pb2.ReplicaResult]) -> replica_pb2.ReplicaResult:
    with tracing.use(span, end=True):
        result = await work
        _answered(tracing, span, result)
        return result


def _answered(tracing: Tracing, span: Span, result: replica_pb2.ReplicaResult) -> None:
    tracing.ended_with(span, result.status.code, result.status.message, server=True)


# -- replica operations, sent ------------------------------------------------


def sending(tracing: Tracing, kind: str, node_id: str, op: replica_pb2.ReplicaOp) -> Span:
    """The CLIENT span of a replica operation sent to `node_id` within the
    current trace; `op` carries it. End it with `answered`."""
    span = tracing.start(f"replica.{kind}", "client",
                         attributes=_replica_attributes(kind, node_id))
    op.trace.CopyFrom(tracing.outgoing(span))
    return span


def answered(tracing: Tracing, span: Span, outcome: asyncio.Future[Any]) -> None:
    """End a replica operation's span with its outcome (a done-callback)."""
    if outcome.cancelled():
        tracing.ended_with(span, grpc.StatusCode.CANCELLED)
    elif outcome.exception() is not None:
        error = outcome.exception()
        assert error is not None
        tracing.failed(span, error, code_of(error))
    else:
        result = outcome.result()
        if isinstance(result, replica_pb2.ReplicaResult):  # a refusal comes as an answer
            tracing.ended_with(span, result.status.code, result.status.message)
        else:
            tracing.ended_with(span, grpc.StatusCode.OK)
    span.end()


def follow(tracing: Tracing, span: Span, future: asyncio.Future[T]) -> asyncio.Future[T]:
    """`future`, with `span` ended by its outcome."""
    future.add_done_callback(functools.partial(answered, tracing, span))
    return future


async def locally(tracing: Tracing, kind: str, node_id: str, work: Awaitable[T]) -> T:
    """`work`, an operation on this process's own replica, in its INTERNAL span."""
    with tracing.span(f"replica.{kind}", code_of=code_of,
                      attributes={"kvstore.operation": kind, "kvstore.replica": node_id}):
        return await work


def _replica_attributes(kind: str, node_id: str | None = None) -> dict[str, Any]:
    """A replica operation travels in a message of Replica.Stream (or
    Batch) with others: the operation is `kvstore.operation`, not the
    gRPC method."""
    attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": REPLICA_SERVICE,
                                  "kvstore.operation": kind}
    if node_id is not None:
        attributes["kvstore.replica"] = node_id
    return attributes
