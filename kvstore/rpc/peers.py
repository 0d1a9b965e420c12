"""How a coordinator reaches the replicas of a key: its own `LocalReplica`
directly, every other node through a batching link over gRPC.

A `PeerLink` keeps one channel to one node and sends the operations queued
for it as one `Replica.Batch` call: while `max_in_flight` calls are out, new
operations wait, and the next call carries all of them. Under load many
operations share one call's cost, with no timer; an idle link sends at once.
Every task a link starts is owned by the `Peers` task group and awaited on
close.
"""

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import grpc

from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvstore.background import Background
from kvstore.causality import versions
from kvstore.errors import DeadlineExceeded, KVStoreError, Unavailable
from kvstore.leaderless.replica import LocalReplica
from kvstore.rpc.channels import open_aio_channel
from kvstore.rpc.status import error_of
from kvstore.causality.versions import DVVSet


@dataclass(frozen=True)
class LinkSettings:
    call_timeout: float = 2.0  # seconds for one batch call to a replica
    max_batch: int = 256  # operations in one call at most
    max_in_flight: int = 1  # calls outstanding to one replica at most (more: smaller batches)
    max_message_bytes: int = 64 * 1024 * 1024


class PeerLink:
    def __init__(self, node_id: str, address: str, settings: LinkSettings,
                 tasks: asyncio.TaskGroup) -> None:
        self.node_id = node_id
        self.address = address
        self._settings = settings
        self._tasks = tasks
        self._queue: deque[
            tuple[replica_pb2.ReplicaOp, asyncio.Future[replica_pb2.ReplicaResult]]] = deque()
        self._in_flight = 0
        # Its options include a reconnect backoff of at most a second: a
        # replica that restarts is reachable again soon.
        self._channel = open_aio_channel(address, settings.max_message_bytes)
        self._stub = replica_pb2_grpc.ReplicaStub(self._channel)

    async def submit(self, op: replica_pb2.ReplicaOp) -> replica_pb2.ReplicaResult:
        future: asyncio.Future[replica_pb2.ReplicaResult] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append((op, future))
        self._send_queued()
        result = await future
        if result.status.code:
            raise error_of(result.status.code, f"replica {self.node_id}: {result.status.message}")
        return result

    def _send_queued(self) -> None:
        while self._queue and self._in_flight < self._settings.max_in_flight:
            count = min(len(self._queue), self._settings.max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            batch = [(op, future) for op, future in batch if not future.done()]
            if batch:
                self._in_flight += 1
                self._tasks.create_task(self._call(batch))

    async def _call(
        self, batch: list[tuple[replica_pb2.ReplicaOp, asyncio.Future[replica_pb2.ReplicaResult]]]
    ) -> None:
        try:
            request = replica_pb2.ReplicaBatchRequest(ops=[op for op, _ in batch])
            response = await self._stub.Batch(request, timeout=self._settings.call_timeout)
            if len(response.results) != len(batch):
                raise Unavailable(f"replica {self.node_id} answered {len(response.results)} "
                                  f"results for {len(batch)} operations")
            for (_, future), result in zip(batch, response.results):
                if not future.done():
                    future.set_result(result)
        except (grpc.aio.AioRpcError, KVStoreError) as exc:
            error = self._call_error(exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        finally:
            self._in_flight -= 1
            self._send_queued()

    def _call_error(self, exc: Exception) -> KVStoreError:
        if isinstance(exc, KVStoreError):
            return exc
        assert isinstance(exc, grpc.aio.AioRpcError)
        where = f"replica {self.node_id} at {self.address}"
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(f"{where} did not answer within {self._settings.call_timeout}s")
        return Unavailable(f"{where}: {exc.code().name}: {exc.details()}")

    async def ping(self, timeout: float) -> None:
        """An empty batch: proves the replica answers on this channel."""
        try:
            await self._stub.Batch(replica_pb2.ReplicaBatchRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._call_error(exc) from exc

    async def close(self) -> None:
        await self._channel.close()


class Peers(Background):
    """`kvstore.leaderless.peer_ops.PeerOps` over the cluster: local calls for
    this node, links for the rest.

    `async with Peers(...) as peers:` owns the links' tasks and channels.
    """

    def __init__(self, addresses: Mapping[str, str], local: LocalReplica | None,
                 settings: LinkSettings = LinkSettings()) -> None:
        super().__init__()
        self._addresses = dict(addresses)
        self._local = local
        self._settings = settings
        self._links: dict[str, PeerLink] = {}

    async def _close(self) -> None:
        for link in self._links.values():
            await link.close()

    def _link(self, node_id: str) -> PeerLink:
        link = self._links.get(node_id)
        if link is None:
            link = PeerLink(node_id, self._addresses[node_id], self._settings, self._tasks)
            self._links[node_id] = link
        return link

    def pingers(self, timeout: float) -> dict[str, Callable[[], Awaitable[None]]]:
        """node id -> a function pinging it, for every peer but this node."""
        return {
            node_id: functools.partial(self._link(node_id).ping, timeout)
            for node_id in self._addresses if not self._is_local(node_id)
        }

    def _is_local(self, node_id: str) -> bool:
        return self._local is not None and node_id == self._local.node_id

    async def read(self, node_id: str, key: bytes) -> DVVSet | None:
        if self._is_local(node_id):
            assert self._local is not None
            return self._local.read(key)
        op = replica_pb2.ReplicaOp(read=replica_pb2.ReplicaRead(key=key))
        result = await self._link(node_id).submit(op)
        return versions.decode(result.state) if result.found else None

    async def apply(self, node_id: str, key: bytes, value: bytes, tombstone: bool,
                    context: bytes, request_id: bytes) -> DVVSet:
        if self._is_local(node_id):
            assert self._local is not None
            state, _duplicate = await self._local.apply(key, value, tombstone, context, request_id)
            return state
        op = replica_pb2.ReplicaOp(apply=replica_pb2.ReplicaApply(
            key=key, value=value, tombstone=tombstone, context=context, request_id=request_id))
        result = await self._link(node_id).submit(op)
        return versions.decode(result.state)

    async def merge(self, node_id: str, key: bytes, state: DVVSet,
                    request_id: bytes = b"", hint_for: str = "") -> None:
        """Merge `state` into the replica `node_id`; with `hint_for`, have
        `node_id` keep it as a hint for that (down) node instead."""
        if self._is_local(node_id):
            assert self._local is not None
            if hint_for:
                await self._local.store_hint(hint_for, key, state)
            else:
                await self._local.merge(key, state, request_id)
            return
        op = replica_pb2.ReplicaOp(merge=replica_pb2.ReplicaMerge(
            key=key, state=versions.encode(state), request_id=request_id, hint_for=hint_for))
        await self._link(node_id).submit(op)

    async def tree_hashes(self, node_id: str, partition: int, level: int,
                          indices: list[int]) -> list[bytes]:
        """Hashes of nodes of a peer's Merkle tree of `partition` (anti-entropy)."""
        op = replica_pb2.ReplicaOp(tree_hashes=replica_pb2.ReplicaTreeHashes(
            partition=partition, level=level, indices=indices))
        return list((await self._link(node_id).submit(op)).hashes)

    async def roots(self, node_id: str, partitions: list[int]) -> list[bytes]:
        """The roots of a peer's Merkle trees of `partitions`, in that order."""
        op = replica_pb2.ReplicaOp(roots=replica_pb2.ReplicaRoots(partitions=partitions))
        return list((await self._link(node_id).submit(op)).hashes)

    async def bucket(self, node_id: str, partition: int, bucket: int) -> dict[bytes, bytes]:
        """key -> state digest of one bucket of a peer's tree of `partition`."""
        op = replica_pb2.ReplicaOp(bucket=replica_pb2.ReplicaBucket(
            partition=partition, bucket=bucket))
        result = await self._link(node_id).submit(op)
        return {entry.key: entry.digest for entry in result.entries}

    async def purge(self, node_id: str, key: bytes, digest: bytes) -> bool:
        """Have a peer drop `key` if it holds exactly that tombstone state;
        True if it did."""
        op = replica_pb2.ReplicaOp(purge=replica_pb2.ReplicaPurge(key=key, digest=digest))
        return (await self._link(node_id).submit(op)).found

    async def hints_held(self, node_id: str, partition: int) -> int:
        """How many hints a peer keeps for keys of `partition`."""
        op = replica_pb2.ReplicaOp(hints_held=replica_pb2.ReplicaHintsHeld(partition=partition))
        return (await self._link(node_id).submit(op)).hints

