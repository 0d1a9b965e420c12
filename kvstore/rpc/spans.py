"""The spans of a server process's side of each hop, as `kvclient.tracing`
names them: a KV operation it serves (SERVER: a unary call, or an operation
of a KV.Session stream), a replica operation it receives (SERVER: from
Replica.Stream or Replica.Batch), and one it sends (CLIENT, to another
node; INTERNAL, to its own replica).

In leader mode, a request forwarded to the partition's leader (or to a
replica, for a read) is a replica operation like the others (`leader_write`,
`leader_read`: CLIENT on the sender, SERVER on the receiver), and the node
that carries it out adds an INTERNAL span for its wait on Raft: a write's
proposal until its entry is committed and applied (`kvstore.raft/propose`,
with the entry's index and term and the outcome), a linearizable read's
ReadIndex round until the replica has applied that far and read the key
(`kvstore.raft/read_index`). Raft's own messages are shared by every
request of the groups they serve and are never traced.

Owns their names, attributes and outcomes, and where each takes its parent
from (the call's metadata, the operation's `trace` field, the current
span). Called only by a process that traces: every caller tests its
`Tracing` for None first, so a process that does not trace runs none of
this. A replica operation is traced only when its sender traced it (it
carries a trace context): heartbeats, anti-entropy, hint replay and Raft's
envelopes never are; nor is the Raft wait of a request outside any trace.
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

    from kvstore.leader.state_machine import Outcome
    from kvstore.leader.waiters import ReadValue

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
                         attributes=_replica_attributes(kind, op=op))
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
                         attributes=_replica_attributes(kind, node_id, op))
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


def _replica_attributes(kind: str, node_id: str | None = None,
                        op: replica_pb2.ReplicaOp | None = None) -> dict[str, Any]:
    """A replica operation travels in a message of Replica.Stream (or
    Batch) with others: the operation is `kvstore.operation`, not the
    gRPC method. A leader-mode request names its partition."""
    attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.service": REPLICA_SERVICE,
                                  "kvstore.operation": kind}
    if node_id is not None:
        attributes["kvstore.replica"] = node_id
    if op is not None and kind in _PARTITIONED:
        attributes["kvstore.partition"] = getattr(op, kind).partition
    return attributes


_PARTITIONED = frozenset({"leader_write", "leader_read"})


# -- leader mode: the wait on Raft -------------------------------------------

PROPOSE_SPAN = "kvstore.raft/propose"
READ_INDEX_SPAN = "kvstore.raft/read_index"


async def proposal(tracing: Tracing, partition: int, work: Awaitable[Outcome],
                   entry_term: Callable[[int, int], int | None]) -> Outcome:
    """`work`, a write's proposal on this node until its entry is applied,
    in its INTERNAL span, within the current trace: the outcome
    (`applied`, `version_mismatch`, or the refusal's reason, as
    kvstore_raft_proposals_total counts them), the entry's index and, while
    this node's log still holds it, its term (`entry_term(partition,
    index)`). A retry recognised by its request id says `duplicate`: the
    index is then the first entry's."""
    def described(outcome: Outcome) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "kvstore.raft.outcome": outcome.status.value, "kvstore.raft.index": outcome.index,
            "kvstore.raft.duplicate": outcome.duplicate}
        term = entry_term(partition, outcome.index)
        if term is not None:
            attributes["kvstore.raft.term"] = term
        return attributes

    return await _raft_wait(tracing, PROPOSE_SPAN, partition, work, described)


async def read_index(tracing: Tracing, partition: int, work: Awaitable[ReadValue]) -> ReadValue:
    """`work`, a linearizable read on this node (its ReadIndex round, the
    wait for this replica to apply that far, the read of the key), in its
    INTERNAL span within the current trace: the outcome (`read`, or the
    refusal's reason) and the version read (0: absent)."""
    return await _raft_wait(tracing, READ_INDEX_SPAN, partition, work, lambda value: {
        "kvstore.raft.outcome": "read", "kvstore.version": value.version})


async def _raft_wait(tracing: Tracing, name: str, partition: int, work: Awaitable[T],
                     described: Callable[[T], dict[str, Any]]) -> T:
    """`work` in the INTERNAL span `name`: its result `described`, or its
    refusal's reason as the outcome."""
    with tracing.span(name, code_of=code_of, attributes={"kvstore.partition": partition}) as span:
        try:
            result = await work
        except KVStoreError as error:
            span.set_attribute("kvstore.raft.outcome", error.reason or type(error).__name__)
            raise
        span.set_attributes(described(result))
        return result
