"""gRPC servicers of a storage node: translate protobuf to calls on
`LocalReplica` and back, and errors to statuses. No logic of their own.

Every KV operation has one implementation, called by its unary method and
by the KV.Session stream (`kvstore.rpc.session`) alike, and counted in the
metrics under its method's name either way.
"""

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, NamedTuple, TypeVar

import grpc

from kvclient.pb import kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvclient.tracing import Tracing
from kvstore.rpc import spans, validation
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.rpc import status_pb2

from kvstore.background import Background
from kvstore.errors import (
    DataLoss, DeadlineExceeded, FailedPrecondition, InvalidArgument, KVStoreError, Unavailable,
)
from kvstore import causal_context
from kvstore.causality import versions
from kvstore.server.cache import LruCache
from kvstore.leaderless.coordinator import Coordinator
from kvstore.leaderless.merkle import PartitionTrees
from kvstore.server.metrics import RequestMetrics
from kvstore.leaderless.replica import LocalReplica
from kvclient import framing
from kvstore.rpc.admission import Admission, AdmissionLimits, Gate, Ticket
from kvstore.rpc.leader_kv import LeaderKV
from kvstore.rpc.leader_replica import KINDS as LEADER_KINDS
from kvstore.rpc.leader_replica import LeaderReplicaOps
from kvstore.rpc.replica_stream import METHOD as STREAM_METHOD
from kvstore.rpc.replica_stream import Started, StreamSession, StreamSettings
from kvstore.rpc.session import STOPPING, SessionStream
from kvstore.rpc.status import item_status, rich_status, status_details, status_of
from kvstore.causality.versions import DVVSet

log = logging.getLogger(__name__)

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Response]]


class MalformedRequest:
    """Stands in for a request whose bytes are not the expected message."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error


def _lenient_deserializer(message_class: Any) -> Callable[[bytes], Any]:
    # gRPC answers INTERNAL when a deserializer raises; a malformed request is
    # the client's mistake, so the handler turns it into INVALID_ARGUMENT.
    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(message_class.DESCRIPTOR.full_name, str(exc))

    return deserialize


_HANDLER_KINDS = {  # (client streams, server streams) -> handler factory
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _serialize(response: Any) -> bytes:
    # A streaming handler may write a message it put together itself (see
    # kvstore.rpc.batches): bytes go out as they are.
    return response if type(response) is bytes else response.SerializeToString()


def register(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Add `servicer`'s methods to `server` (as the generated add_*_to_server
    does, with lenient request decoding)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        method.name: _HANDLER_KINDS[(method.client_streaming, method.server_streaming)](
            getattr(servicer, method.name),
            request_deserializer=_lenient_deserializer(
                message_factory.GetMessageClass(method.input_type)
            ),
            response_serializer=_serialize,
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


async def counted(metrics: RequestMetrics, method: str, work: Awaitable[Response],
                  on_ok: Callable[[float], None] | None = None) -> Response:
    """`work`'s response, its time and outcome counted under `method`; the
    seconds it took also to `on_ok` when it succeeded."""
    start = time.perf_counter()

    def observe(code: str) -> None:
        # Before the status goes out: a client that has its answer must
        # find the request counted when it scrapes.
        metrics.observe_request(method, code, time.perf_counter() - start)

    try:
        response = await work
    except KVStoreError as exc:
        observe(status_of(exc).name)
        raise
    except asyncio.CancelledError:
        observe("CANCELLED")
        raise
    except Exception:
        observe("INTERNAL")
        log.exception("unexpected error in %s", method)
        raise
    observe("OK")
    if on_ok is not None:
        on_ok(time.perf_counter() - start)
    return response


def _internal_message(error: BaseException) -> str:
    return f"internal error ({type(error).__name__}: {error}); see the node's log"


def rpc(method: str, on_ok: Callable[[Any, float], None] | None = None,
        ) -> Callable[[Handler[Response]], Handler[Response]]:
    """Time the call, count it by status, and turn errors into statuses;
    `on_ok(servicer, seconds)` after each that succeeded."""

    def decorate(handler: Handler[Response]) -> Handler[Response]:
        async def checked(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Response:
            if type(request) is MalformedRequest:
                raise InvalidArgument(
                    f"request is not a valid {request.type_name} message: {request.error}"
                )
            return await handler(self, request, context)

        @functools.wraps(handler)
        async def run(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Response:
            done = None if on_ok is None else functools.partial(on_ok, self)
            try:
                return await counted(self.metrics, method, checked(self, request, context),
                                     done)
            except KVStoreError as exc:
                await context.abort(status_of(exc), str(exc), trailing_metadata=status_details(exc))
            except Exception as exc:
                await context.abort(grpc.StatusCode.INTERNAL, _internal_message(exc))
            raise AssertionError("unreachable: abort raises")

        return run

    return decorate


_item_status = item_status


def _get_response(state: DVVSet | None) -> kv_pb2.GetResponse:
    if state is None:
        return kv_pb2.GetResponse(found=False)
    context = causal_context.encode(versions.join(state))
    if state.absent:  # deleted: no value, but the context still counts
        return kv_pb2.GetResponse(found=False, context=context, timestamp=state.timestamp)
    live = sorted(state.live, key=lambda s: (s.timestamp, s.dot))  # oldest first
    return kv_pb2.GetResponse(
        found=True, siblings=[s.value for s in live], context=context, timestamp=state.timestamp,
    )


def _put_response(state: DVVSet) -> kv_pb2.PutResponse:
    return kv_pb2.PutResponse(context=causal_context.encode(versions.join(state)),
                              timestamp=state.timestamp)


def _batch_items(item: Any, outcomes: list[Any], respond: Callable[[Any], Any]) -> list[Any]:
    """One batch response item per outcome: its status, and its result when it succeeded."""
    return [
        item(status=_item_status(outcome)) if isinstance(outcome, BaseException)
        else item(status=_item_status(None), result=respond(outcome))
        for outcome in outcomes
    ]


# How long past an operation's deadline the stream's backstop waits.
_BACKSTOP_GRACE_SECONDS = 0.05


# What CPython holds for a decoded state besides its values' bytes, so that
# the cache's bound is its memory: measured with tracemalloc on 3.11, about
# 450 bytes per state and 220 per sibling (its dot, timestamp, version and
# the bytes object's header). Counted at 64 per sibling, a cache of 100-byte
# values held twice its cache_bytes.
_STATE_BYTES = 448
_SIBLING_BYTES = 256


class _Absent:
    """Cached answer for a key no replica holds (so misses are cached too)."""


_ABSENT = _Absent()


class _Operation(NamedTuple):
    """A kind of SessionOperation: the method it is counted under, and its
    implementation (service, request, timeout in seconds, admission ticket)
    -> response."""

    method: str
    run: Callable[[Any, Any, float, Ticket], Awaitable[Any]]


def _unary(method: str, operation: Callable[[Any, Any, float, Ticket], Awaitable[Response]],
           ) -> Handler[Response]:
    """The unary method `method` of an operation: admitted (or refused) by
    the process's bounds, its deadline from the call's."""

    async def admitted(self: "KVService", request: Any, timeout: float) -> Response:
        ticket = self.admission.admit(request.ByteSize(), deadline=timeout)
        try:
            return await operation(self, request, timeout, ticket)
        finally:
            ticket.release()

    @rpc(method, on_ok=lambda self, seconds: self.admission.observe_latency(seconds))
    async def call(self: "KVService", request: Any, context: Any) -> Response:
        work = admitted(self, request, self._timeout(context))
        if self.tracing is None:
            return await work
        return await spans.unary_operation(self.tracing, method, context.invocation_metadata(),
                                           work)

    call.__name__ = call.__qualname__ = method
    return call


class KVService(kv_pb2_grpc.KVServicer):
    """The public KV service: validate, coordinate the quorum, answer.

    With a cache (coordinator processes), reads below r=N may be answered from
    it; every write through this service updates its key there
    (read-your-writes), and entries older than the cache's ttl are never
    served. Strong reads (r=N) always go to the replicas.

    Each operation is written once (`get`, `put`, ...: request and timeout
    in, response out, errors raised); the unary methods and `Session` both
    call it. In leader mode (`leader` given, no coordinator) the operations
    are `LeaderKV`'s, and it holds the cache.
    """

    def __init__(self, coordinator: Coordinator | None, limits: validation.Limits,
                 metrics: RequestMetrics, *, request_timeout: float,
                 topology: kv_pb2.TopologyResponse | Callable[[], kv_pb2.TopologyResponse],
                 cache: LruCache | None = None,
                 admission: AdmissionLimits = AdmissionLimits(),
                 message_batch_bytes: int = framing.MESSAGE_BUDGET_BYTES,
                 message_batch_operations: int = framing.MESSAGE_MAX_ITEMS,
                 admit: Callable[[str], status_pb2.Status | None] | None = None,
                 leader: LeaderKV | None = None, tracing: Tracing | None = None) -> None:
        """`topology`: what `KV.Topology` answers (`rpc.topology`), or what
        makes it (leader mode's leaders change); `admit(kind)`: whether the
        caller of a Session may run an operation of that kind
        (`kvstore.rpc.access`), None or the status to answer it with;
        `tracing`: each operation in a span (`kvstore.rpc.spans`)."""
        if (coordinator is None) == (leader is None):
            raise ValueError("a KVService needs a leaderless coordinator or leader mode's LeaderKV")
        self._admit = admit
        self._coordinator = coordinator
        self.leader = leader
        self._topology = topology
        self.limits = limits
        self.metrics = metrics
        self.replicas = coordinator.spec.replicas if coordinator is not None else 0
        self.request_timeout = request_timeout
        self.cache = cache
        self.admission = Admission(admission, metrics.observe_overload)
        metrics.watch_admission(self.admission.process)
        self._message_batch_bytes = message_batch_bytes
        self._message_batch_operations = message_batch_operations
        self._sessions: set[SessionStream] = set()
        self._stopping = False
        self.tracing = tracing

    # -- the operations ----------------------------------------------------------

    @property
    def coordinator(self) -> Coordinator:
        assert self._coordinator is not None, "leader mode has no leaderless coordinator"
        return self._coordinator

    async def get(self, request: kv_pb2.GetRequest, timeout: float,
                  ticket: Ticket) -> kv_pb2.GetResponse:
        if self.leader is not None:
            return await self.leader.get(request, timeout)
        validation.check_key(request.key, self.limits)
        validation.refuse_leader_fields(request)
        r = validation.replica_count(request.r, self.replicas, "r")
        return _get_response(await self._read(request.key, r, timeout))

    async def put(self, request: kv_pb2.PutRequest, timeout: float,
                  ticket: Ticket) -> kv_pb2.PutResponse:
        if self.leader is not None:
            return await self.leader.put(request, timeout)
        self._check_put(request, "")
        w = validation.replica_count(request.w, self.replicas, "w")
        state = await self._write(request.key, request.value, False, request.context, w,
                                  request.request_id, timeout, ticket,
                                  sloppy=not request.strict_quorum)
        return _put_response(state)

    async def delete(self, request: kv_pb2.DeleteRequest, timeout: float,
                     ticket: Ticket) -> kv_pb2.DeleteResponse:
        if self.leader is not None:
            return await self.leader.delete(request, timeout)
        validation.check_key(request.key, self.limits)
        validation.refuse_leader_fields(request)
        validation.check_write_extras(request.context, request.request_id)
        w = validation.replica_count(request.w, self.replicas, "w")
        state = await self._write(request.key, b"", True, request.context, w,
                                  request.request_id, timeout, ticket,
                                  sloppy=not request.strict_quorum)
        return kv_pb2.DeleteResponse(context=causal_context.encode(versions.join(state)))

    async def get_many(self, request: kv_pb2.GetManyRequest, timeout: float,
                       ticket: Ticket) -> kv_pb2.GetManyResponse:
        if self.leader is not None:
            return await self.leader.get_many(request, timeout)
        validation.check_batch(request.keys, self.limits, "keys")
        validation.refuse_leader_fields(request)
        for index, key in enumerate(request.keys):
            validation.check_key(key, self.limits, f"keys[{index}]")
        r = validation.replica_count(request.r, self.replicas, "r")
        states = await asyncio.gather(
            *(self._read(key, r, timeout) for key in request.keys), return_exceptions=True
        )
        return kv_pb2.GetManyResponse(
            items=_batch_items(kv_pb2.GetManyResponse.Item, states, _get_response))

    async def put_many(self, request: kv_pb2.PutManyRequest, timeout: float,
                       ticket: Ticket) -> kv_pb2.PutManyResponse:
        if self.leader is not None:
            return await self.leader.put_many(request, timeout)
        validation.check_batch(request.puts, self.limits, "puts")
        for index, put in enumerate(request.puts):
            self._check_put(put, f"puts[{index}].")
        w = validation.replica_count(request.w, self.replicas, "w")
        states = await asyncio.gather(
            *(self._write(put.key, put.value, False, put.context, w, put.request_id, timeout,
                          ticket, sloppy=not put.strict_quorum)
              for put in request.puts),
            return_exceptions=True,
        )
        return kv_pb2.PutManyResponse(
            items=_batch_items(kv_pb2.PutManyResponse.Item, states, _put_response))

    async def ping(self, request: kv_pb2.PingRequest, timeout: float,
                   ticket: Ticket) -> kv_pb2.PingResponse:
        return kv_pb2.PingResponse(payload=request.payload)

    async def topology(self, request: kv_pb2.TopologyRequest, timeout: float,
                       ticket: Ticket) -> kv_pb2.TopologyResponse:
        return self._topology() if callable(self._topology) else self._topology

    # -- the unary methods -------------------------------------------------------

    Get = _unary("Get", get)
    Put = _unary("Put", put)
    Delete = _unary("Delete", delete)
    GetMany = _unary("GetMany", get_many)
    PutMany = _unary("PutMany", put_many)
    Ping = _unary("Ping", ping)
    Topology = _unary("Topology", topology)

    # -- the stream ----------------------------------------------------------------

    async def Session(self, requests: AsyncIterator[Any],
                      context: grpc.aio.ServicerContext) -> None:
        """Many operations over one stream (see `kvstore.rpc.session`)."""
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, STOPPING)
        limits = self.admission.limits
        stream = SessionStream(
            self._perform,
            admit=functools.partial(self._admit_operation, self.admission.session_gate()),
            # Room for as many refusals as admitted operations: past that, a
            # client that sends more than it reads is held back by not reading.
            max_unanswered=2 * limits.session_max_requests,
            message_budget=self._message_batch_bytes,
            message_max_items=self._message_batch_operations,
            on_message=functools.partial(self.metrics.observe_stream_message, "KV.Session"))
        self._sessions.add(stream)
        try:
            await stream.serve(requests, context)
        finally:
            self._sessions.discard(stream)

    def stop_sessions(self) -> None:
        """The server is stopping: every stream reads no more, answers what it
        started and ends UNAVAILABLE; new streams are refused."""
        self._stopping = True
        for stream in self._sessions:
            stream.stop()

    _OPERATIONS: dict[str, _Operation] = {
        "get": _Operation("Get", get),
        "put": _Operation("Put", put),
        "delete": _Operation("Delete", delete),
        "get_many": _Operation("GetMany", get_many),
        "put_many": _Operation("PutMany", put_many),
        "ping": _Operation("Ping", ping),
    }

    def _admit_operation(self, session: Gate,
                         operation: kv_pb2.SessionOperation) -> Ticket | kv_pb2.SessionResult:
        """Admit one operation of a stream under its stream's bounds and the
        process's, or its refusal, counted as its unary call's would be."""
        try:
            return self.admission.admit(operation.ByteSize(), session,
                                        deadline=self._operation_timeout(operation))
        except KVStoreError as refusal:
            kind = operation.WhichOneof("kind")
            method = self._OPERATIONS[kind].method if kind in self._OPERATIONS else "Session"
            self.metrics.observe_request(method, status_of(refusal).name, 0.0)
            return kv_pb2.SessionResult(error=rich_status(refusal))

    async def _perform(self, operation: kv_pb2.SessionOperation,
                       ticket: Ticket) -> kv_pb2.SessionResult:
        """One admitted operation of a stream, as its unary method would run
        it; every error becomes the result's status. Traced: in its span."""
        work = self._run_operation(operation, ticket)
        kind = operation.WhichOneof("kind")
        if self.tracing is None or kind not in self._OPERATIONS:
            return await work
        return await spans.session_operation(self.tracing, self._OPERATIONS[kind].method,
                                             operation, work)

    async def _run_operation(self, operation: kv_pb2.SessionOperation,
                             ticket: Ticket) -> kv_pb2.SessionResult:
        kind = operation.WhichOneof("kind")
        if kind is None:
            return kv_pb2.SessionResult(error=status_pb2.Status(
                code=grpc.StatusCode.UNIMPLEMENTED.value[0],
                message="the operation sets no kind this server knows (get, put, delete, "
                        "get_many, put_many, ping); send it as its unary call"))
        known = self._OPERATIONS[kind]
        if self._admit is not None:
            refused = self._admit(kind)
            if refused is not None:
                code = next(c for c in grpc.StatusCode if c.value[0] == refused.code)
                self.metrics.observe_request(known.method, code.name, 0.0)
                return kv_pb2.SessionResult(error=refused)
        timeout = self._operation_timeout(operation)
        try:
            # A backstop, for work with no deadline of its own (a one-replica
            # write waits for its commit only): the operations' own timers,
            # which say how far they got, go first, as they do before gRPC
            # cancels a unary call at its deadline.
            async with asyncio.timeout(timeout + _BACKSTOP_GRACE_SECONDS):
                response = await counted(self.metrics, known.method,
                                         known.run(self, getattr(operation, kind), timeout,
                                                   ticket), self.admission.observe_latency)
        except KVStoreError as exc:
            return kv_pb2.SessionResult(error=rich_status(exc))
        except TimeoutError:
            # As gRPC ends a unary call at its deadline: no details (a write
            # stopped there may or may not have been applied).
            return kv_pb2.SessionResult(error=rich_status(DeadlineExceeded(
                f"the operation's deadline ({timeout * 1000:.0f} ms) passed before it completed")))
        except Exception as exc:
            return kv_pb2.SessionResult(error=status_pb2.Status(
                code=grpc.StatusCode.INTERNAL.value[0], message=_internal_message(exc)))
        return kv_pb2.SessionResult(**{kind: response})

    def _operation_timeout(self, operation: kv_pb2.SessionOperation) -> float:
        """The seconds a stream's operation may take: its own deadline, at
        most the server's."""
        if operation.timeout_ms:
            return min(self.request_timeout, operation.timeout_ms / 1000)
        return self.request_timeout

    def _timeout(self, context: Any) -> float:
        remaining = context.time_remaining()
        return self.request_timeout if remaining is None else min(remaining, self.request_timeout)

    def _check_put(self, put: kv_pb2.PutRequest, prefix: str) -> None:
        validation.check_key(put.key, self.limits, f"{prefix}key")
        validation.check_value(put.value, self.limits, f"{prefix}value")
        validation.check_write_extras(put.context, put.request_id, prefix)
        validation.refuse_leader_fields(put, prefix)

    async def _read(self, key: bytes, r: int, timeout: float) -> DVVSet | None:
        strong = r >= self.replicas
        if self.cache is not None and not strong:
            cached = self.cache.get(key)
            if cached is not None:
                return None if cached is _ABSENT else cached  # type: ignore[return-value]
        state = await self.coordinator.get(key, r, timeout)
        self._remember(key, state)
        return state

    async def _write(self, key: bytes, value: bytes, tombstone: bool, context: bytes, w: int,
                     request_id: bytes, timeout: float, ticket: Ticket, *,
                     sloppy: bool) -> DVVSet:
        if self.cache is not None:
            # Until the write's outcome is known, no older answer may be served.
            self.cache.invalidate(key)
        # The ticket is held until the replication past W is done too.
        state = await self.coordinator.put(key, value, tombstone, context, w, request_id, timeout,
                                           sloppy=sloppy, on_settled=ticket.hold())
        self._remember(key, state)
        return state

    def _remember(self, key: bytes, state: DVVSet | None) -> None:
        if self.cache is None:
            return
        if state is None:
            self.cache.put(key, _ABSENT, 0)
        else:
            self.cache.put(key, state, _STATE_BYTES + sum(len(s.value) + _SIBLING_BYTES
                                                          for s in state.siblings))


class ReplicaService(replica_pb2_grpc.ReplicaServicer, Background):
    """The internal replica service: batches of reads, applies and merges,
    one call each (`Batch`) or many over a long-lived stream (`Stream`),
    through the same per-operation code.

    `async with ReplicaService(...) as replicas:` around the server: it owns
    the writes streams have started, and leaving waits for them.
    `end_streams()`, before the server stops, has every stream answer what
    it read and end, so the server's grace period is not spent waiting for
    streams that would never end by themselves.
    """

    def __init__(self, replica: LocalReplica | None, limits: validation.Limits,
                 metrics: RequestMetrics, trees: PartitionTrees | None = None,
                 repair: Callable[[int], Awaitable[int]] | None = None,
                 partitions: int = 1, streams: StreamSettings = StreamSettings(),
                 leader: LeaderReplicaOps | None = None, tracing: Tracing | None = None) -> None:
        """`replica`: a leaderless node's; `leader`: a leader-mode node's
        operations (`leader_replica`) instead; `tracing`: each operation
        whose sender traced it in a span (`kvstore.rpc.spans`)."""
        Background.__init__(self)
        self._replica = replica
        self._leader = leader
        self.limits = limits
        self.metrics = metrics
        self.trees = trees if trees is not None else PartitionTrees()
        self.repair = repair
        self.partitions = partitions
        self._stream_settings = streams
        self._sessions: set[StreamSession] = set()
        self._tracing = tracing

    @rpc("Replica.Batch")
    async def Batch(self, request: replica_pb2.ReplicaBatchRequest,
                    context: Any) -> replica_pb2.ReplicaBatchResponse:
        # Reads are answered at once; writes run together so they share
        # group commits.
        results: list[replica_pb2.ReplicaResult | None] = []
        writes: list[tuple[int, Coroutine[Any, Any, replica_pb2.ReplicaResult]]] = []
        for op in request.ops:
            started = self._start_op(op)
            if isinstance(started, replica_pb2.ReplicaResult):
                results.append(started)
            else:
                writes.append((len(results), started))
                results.append(None)
        if writes:
            outcomes = await asyncio.gather(*(w for _, w in writes))
            for (index, _), outcome in zip(writes, outcomes):
                results[index] = outcome
        # Every None was replaced by its write's outcome above.
        return replica_pb2.ReplicaBatchResponse(results=results)  # type: ignore[arg-type]

    async def Stream(self, requests: AsyncIterator[Any], context: Any) -> None:
        """Counted per message read (`Replica.Stream`), once all its
        operations are answered; not per stream, which lives for as long as
        the two processes do."""
        if self._stopping.is_set():
            stopping = Unavailable("this node is stopping; use another replica")
            await context.abort(status_of(stopping), str(stopping))
        session = StreamSession(
            self._start_op, self._tasks.create_task, self._stream_settings,
            self.metrics.observe_request,
            functools.partial(self.metrics.observe_stream_message, STREAM_METHOD))
        self._sessions.add(session)
        try:
            refusal = await session.serve(_well_formed(requests), context)
        finally:
            self._sessions.discard(session)
        if refusal is not None:
            self.metrics.observe_request(STREAM_METHOD, status_of(refusal).name, 0.0)
            await context.abort(status_of(refusal), str(refusal),
                                trailing_metadata=status_details(refusal))

    def end_streams(self) -> None:
        """Refuse new streams; have every open one answer what it read and end."""
        self._stopping.set()
        for session in self._sessions:
            session.stop()

    def _start_op(self, op: replica_pb2.ReplicaOp) -> Started:
        """Validate and start one operation: its result at once (reads, tree
        questions, pings, refusals), or a coroutine returning it (writes),
        which never raises: a failure is the result's status. In a span
        when its sender traced it."""
        if self._tracing is not None and op.HasField("trace"):
            return spans.received(self._tracing, op, self._start_untraced)
        return self._start_untraced(op)

    def _start_untraced(self, op: replica_pb2.ReplicaOp) -> Started:
        try:
            kind = op.WhichOneof("op")
            if kind == "ping":
                return replica_pb2.ReplicaResult()
            if kind in LEADER_KINDS:
                if self._leader is None:
                    raise FailedPrecondition(f"this node runs in leaderless mode: {kind} "
                                             "operations (Raft, leader mode) do not apply")
                return self._leader.start(op)
            if self._leader is not None:
                raise FailedPrecondition(f"this node runs in leader mode: the leaderless "
                                         f"replica operation {kind} does not apply")
            if kind == "read":
                return self._read(op.read)
            if kind in ("tree_hashes", "bucket", "roots"):
                return self._tree(op)
            if kind == "hints_held":
                return self._hints_held(op.hints_held.partition)
            return _settled(self._write(kind, op))
        except KVStoreError as exc:
            return replica_pb2.ReplicaResult(status=_item_status(exc))

    @property
    def replica(self) -> LocalReplica:
        assert self._replica is not None, "leader mode has no leaderless replica"
        return self._replica

    def _tree(self, op: replica_pb2.ReplicaOp) -> replica_pb2.ReplicaResult:
        """Anti-entropy's questions about this replica's Merkle trees."""
        try:
            if op.WhichOneof("op") == "roots":
                return replica_pb2.ReplicaResult(found=True, hashes=[
                    self.trees.root(self._partition(p)) for p in op.roots.partitions])
            if op.WhichOneof("op") == "tree_hashes":
                ask = op.tree_hashes
                tree = self.trees.tree(self._partition(ask.partition))
                return replica_pb2.ReplicaResult(
                    found=True, hashes=tree.node_hashes(ask.level, list(ask.indices)))
            tree = self.trees.tree(self._partition(op.bucket.partition))
            entries = tree.keys_in_bucket(op.bucket.bucket)
        except (ValueError, IndexError) as exc:
            raise InvalidArgument(f"bad anti-entropy question: {exc}") from exc
        return replica_pb2.ReplicaResult(found=True, entries=[
            replica_pb2.KeyDigest(key=key, digest=digest) for key, digest in entries.items()])

    def _partition(self, partition: int) -> int:
        """`partition` if the ring has it, else InvalidArgument: so no question
        about a partition that does not exist creates a tree."""
        if partition >= self.partitions:
            raise InvalidArgument(f"partition {partition} does not exist; "
                                  f"use 0..{self.partitions - 1}")
        return partition

    def _hints_held(self, partition: int) -> replica_pb2.ReplicaResult:
        return replica_pb2.ReplicaResult(
            found=True, hints=self.replica.hints_held(self._partition(partition)))

    def _read(self, read: replica_pb2.ReplicaRead) -> replica_pb2.ReplicaResult:
        validation.check_key(read.key, self.limits)
        record = self.replica.read_record(read.key)
        if record is None:
            return replica_pb2.ReplicaResult(found=False)
        return replica_pb2.ReplicaResult(found=True, state=record.value)

    def _write(self, kind: str | None,
               op: replica_pb2.ReplicaOp) -> Coroutine[Any, Any, replica_pb2.ReplicaResult]:
        if kind == "apply":
            apply = op.apply
            validation.check_key(apply.key, self.limits)
            validation.check_value(apply.value, self.limits)
            validation.check_write_extras(apply.context, apply.request_id)
            return self._apply(apply)
        if kind == "repair":
            return self._repair(op.repair.partition)
        if kind == "purge":
            validation.check_key(op.purge.key, self.limits)
            return self._purge(op.purge.key, op.purge.digest)
        if kind == "merge":
            validation.check_key(op.merge.key, self.limits)
            validation.check_write_extras(b"", op.merge.request_id)
            try:
                incoming = versions.decode(op.merge.state)
            except DataLoss as exc:
                raise InvalidArgument(f"merge of a malformed state: {exc}") from exc
            if op.merge.hint_for:
                return self._hint(op.merge.hint_for, op.merge.key, incoming)
            return self._merge(op.merge.key, incoming, op.merge.request_id)
        raise InvalidArgument("a replica operation must set one of its kinds (read, merge, ...)")

    async def _apply(self, apply: replica_pb2.ReplicaApply) -> replica_pb2.ReplicaResult:
        state, _duplicate = await self.replica.apply(
            apply.key, apply.value, apply.tombstone, apply.context, apply.request_id)
        return replica_pb2.ReplicaResult(found=True, state=versions.encode(state))

    async def _purge(self, key: bytes, digest: bytes) -> replica_pb2.ReplicaResult:
        return replica_pb2.ReplicaResult(found=await self.replica.purge(key, digest))

    async def _repair(self, partition: int) -> replica_pb2.ReplicaResult:
        if self.repair is None:
            raise FailedPrecondition("this node has no other replicas to repair with")
        return replica_pb2.ReplicaResult(
            found=True, repaired=await self.repair(self._partition(partition)))

    async def _hint(self, target: str, key: bytes,
                    incoming: DVVSet) -> replica_pb2.ReplicaResult:
        await self.replica.store_hint(target, key, incoming)
        return replica_pb2.ReplicaResult(found=True)

    async def _merge(self, key: bytes, incoming: DVVSet,
                     request_id: bytes) -> replica_pb2.ReplicaResult:
        await self.replica.merge(key, incoming, request_id)
        return replica_pb2.ReplicaResult(found=True)


async def _settled(write: Awaitable[replica_pb2.ReplicaResult]) -> replica_pb2.ReplicaResult:
    try:
        return await write
    except Exception as exc:
        return replica_pb2.ReplicaResult(status=_item_status(exc))


async def _well_formed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if type(request) is MalformedRequest:
            raise InvalidArgument(
                f"stream message is not a valid {request.type_name} message: {request.error}")
        yield request
