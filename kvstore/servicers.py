"""gRPC servicers of a storage node: translate protobuf to calls on
`LocalReplica` and back, and errors to statuses. No logic of their own.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from kvclient.pb import kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvstore import validation
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from kvstore.errors import InvalidArgument, KVStoreError
from kvstore.metrics import NodeMetrics
from kvstore.record import Record
from kvstore.replica import LocalReplica, ReadResult, WriteOutcome
from kvstore.status import status_of
from kvstore.versions import VersionVector

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


def register(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Add `servicer`'s unary methods to `server` (as the generated
    add_*_to_server does, with lenient request decoding)."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient_deserializer(
                message_factory.GetMessageClass(method.input_type)
            ),
            response_serializer=lambda response: response.SerializeToString(),
        )
        for method in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def rpc(method: str) -> Callable[[Handler[Response]], Handler[Response]]:
    """Time the call, count it by status, and turn errors into statuses."""

    def decorate(handler: Handler[Response]) -> Handler[Response]:
        @functools.wraps(handler)
        async def run(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Response:
            start = time.perf_counter()
            code = "OK"
            try:
                if isinstance(request, MalformedRequest):
                    raise InvalidArgument(
                        f"request is not a valid {request.type_name} message: {request.error}"
                    )
                return await handler(self, request, context)
            except KVStoreError as exc:
                status = status_of(exc)
                code = status.name
                await context.abort(status, str(exc))
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = "INTERNAL"
                log.exception("unexpected error in %s", method)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error ({type(exc).__name__}: {exc}); see the node's log",
                )
            finally:
                self.metrics.observe_request(method, code, time.perf_counter() - start)
            raise AssertionError("unreachable: abort raises")

        return run

    return decorate


def _get_response(result: ReadResult) -> kv_pb2.GetResponse:
    return kv_pb2.GetResponse(
        found=result.found, siblings=result.siblings,
        context=result.context, timestamp=result.timestamp,
    )


def _put_response(outcome: WriteOutcome) -> kv_pb2.PutResponse:
    return kv_pb2.PutResponse(context=outcome.context, timestamp=outcome.timestamp)


def _item_status(error: BaseException | None) -> kv_pb2.ItemStatus:
    if error is None:
        return kv_pb2.ItemStatus()
    if isinstance(error, KVStoreError):
        return kv_pb2.ItemStatus(code=status_of(error).value[0], message=str(error))
    log.error("unexpected error in a batch item", exc_info=error)
    return kv_pb2.ItemStatus(
        code=grpc.StatusCode.INTERNAL.value[0],
        message=f"internal error ({type(error).__name__}: {error}); see the node's log",
    )


class KVService(kv_pb2_grpc.KVServicer):
    """The public KV service on a single node (replication factor 1)."""

    REPLICAS = 1

    def __init__(
        self, replica: LocalReplica, limits: validation.Limits, metrics: NodeMetrics
    ) -> None:
        self.replica = replica
        self.limits = limits
        self.metrics = metrics

    @rpc("Get")
    async def Get(self, request: kv_pb2.GetRequest, context: Any) -> kv_pb2.GetResponse:
        validation.check_key(request.key, self.limits)
        validation.replica_count(request.r, self.REPLICAS, "r")
        return _get_response(self.replica.get(request.key))

    @rpc("Put")
    async def Put(self, request: kv_pb2.PutRequest, context: Any) -> kv_pb2.PutResponse:
        self._check_put(request, "")
        validation.replica_count(request.w, self.REPLICAS, "w")
        return _put_response(await self._put(request))

    @rpc("Delete")
    async def Delete(self, request: kv_pb2.DeleteRequest, context: Any) -> kv_pb2.DeleteResponse:
        validation.check_key(request.key, self.limits)
        validation.check_write_extras(request.context, request.request_id)
        validation.replica_count(request.w, self.REPLICAS, "w")
        outcome = await self.replica.delete(request.key, request.context, request.request_id)
        self._count_duplicate(outcome)
        return kv_pb2.DeleteResponse(context=outcome.context)

    @rpc("GetMany")
    async def GetMany(
        self, request: kv_pb2.GetManyRequest, context: Any
    ) -> kv_pb2.GetManyResponse:
        validation.check_batch(request.keys, self.limits, "keys")
        for index, key in enumerate(request.keys):
            validation.check_key(key, self.limits, f"keys[{index}]")
        validation.replica_count(request.r, self.REPLICAS, "r")
        items = []
        for key in request.keys:
            try:
                result = _get_response(self.replica.get(key))
                items.append(kv_pb2.GetManyResponse.Item(status=_item_status(None), result=result))
            except KVStoreError as exc:
                items.append(kv_pb2.GetManyResponse.Item(status=_item_status(exc)))
        return kv_pb2.GetManyResponse(items=items)

    @rpc("PutMany")
    async def PutMany(
        self, request: kv_pb2.PutManyRequest, context: Any
    ) -> kv_pb2.PutManyResponse:
        validation.check_batch(request.puts, self.limits, "puts")
        for index, put in enumerate(request.puts):
            self._check_put(put, f"puts[{index}].")
        validation.replica_count(request.w, self.REPLICAS, "w")
        # Issued together, the writes share group commits.
        outcomes = await asyncio.gather(
            *(self._put(put) for put in request.puts), return_exceptions=True
        )
        items = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                items.append(kv_pb2.PutManyResponse.Item(status=_item_status(outcome)))
            else:
                items.append(
                    kv_pb2.PutManyResponse.Item(
                        status=_item_status(None), result=_put_response(outcome)
                    )
                )
        return kv_pb2.PutManyResponse(items=items)

    @rpc("Ping")
    async def Ping(self, request: kv_pb2.PingRequest, context: Any) -> kv_pb2.PingResponse:
        return kv_pb2.PingResponse(payload=request.payload)

    def _check_put(self, put: kv_pb2.PutRequest, prefix: str) -> None:
        validation.check_key(put.key, self.limits, f"{prefix}key")
        validation.check_value(put.value, self.limits, f"{prefix}value")
        validation.check_write_extras(put.context, put.request_id, prefix)

    async def _put(self, put: kv_pb2.PutRequest) -> WriteOutcome:
        outcome = await self.replica.put(put.key, put.value, put.context, put.request_id)
        self._count_duplicate(outcome)
        return outcome

    def _count_duplicate(self, outcome: WriteOutcome) -> None:
        if outcome.duplicate:
            self.metrics.duplicate_writes.inc()


class ReplicaService(replica_pb2_grpc.ReplicaServicer):
    """The internal replica service: raw records between nodes."""

    def __init__(
        self, replica: LocalReplica, limits: validation.Limits, metrics: NodeMetrics
    ) -> None:
        self.replica = replica
        self.limits = limits
        self.metrics = metrics

    @rpc("Replica.Read")
    async def Read(
        self, request: replica_pb2.ReplicaReadRequest, context: Any
    ) -> replica_pb2.ReplicaReadResponse:
        validation.check_key(request.key, self.limits)
        record = self.replica.read_record(request.key)
        if record is None:
            return replica_pb2.ReplicaReadResponse(found=False)
        return replica_pb2.ReplicaReadResponse(
            found=True,
            record=replica_pb2.ReplicaRecord(
                key=request.key, version=record.version, timestamp=record.timestamp,
                tombstone=record.tombstone, value=record.value,
            ),
        )

    @rpc("Replica.Write")
    async def Write(
        self, request: replica_pb2.ReplicaWriteRequest, context: Any
    ) -> replica_pb2.ReplicaWriteResponse:
        incoming = request.record
        validation.check_key(incoming.key, self.limits, "record.key")
        validation.check_value(incoming.value, self.limits, "record.value")
        validation.check_write_extras(incoming.version, b"", "record.")
        VersionVector.from_bytes(incoming.version)  # InvalidArgument if malformed
        record = Record(incoming.version, incoming.timestamp, incoming.tombstone, incoming.value)
        applied = await self.replica.write_record(incoming.key, record)
        return replica_pb2.ReplicaWriteResponse(applied=applied)
