"""How a coordinator reaches the replicas of a key: its own `LocalReplica`
directly, every other node through a `PeerLink` (one long-lived stream each,
carrying batches of operations and the heartbeats).

Every operation returns an asyncio Future (never a coroutine), so the
coordinator can follow it with a callback instead of a task: a remote
operation's Future is the link's own, settled when its answer arrives; a
local write runs as a task of this object's group. Every task a link starts
is owned by the same group and ended on exit.
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from kvclient.pb import replica_pb2
from kvclient.tracing import Tracing
from kvstore.background import Background
from kvstore.causality import versions
from kvstore.causality.versions import DVVSet
from kvstore.errors import KVStoreError
from kvstore.leaderless.replica import LocalReplica
from kvstore.rpc import spans
from kvstore.rpc.peer_link import LinkSettings, PeerLink

__all__ = ["LinkSettings", "PeerLink", "Peers"]

T = TypeVar("T")


class Peers(Background):
    """`kvstore.leaderless.peer_ops.PeerOps` over the cluster: local calls for
    this node, links for the rest.

    `async with Peers(...) as peers:` owns the links' tasks and channels.
    """

    def __init__(self, addresses: Mapping[str, str], local: LocalReplica | None,
                 settings: LinkSettings = LinkSettings(),
                 on_message: Callable[[str, int], None] = lambda direction, items: None, *,
                 self_id: str | None = None, tracing: Tracing | None = None) -> None:
        """`self_id`: this node's, when it has no `local` replica (leader
        mode's nodes), so that it is not among the peers; `tracing`: an
        operation asked within a trace (a client's request being
        coordinated) goes in a span of its own, which it carries."""
        super().__init__()
        self._addresses = dict(addresses)
        self._local = local
        self._self_id = local.node_id if local is not None else self_id
        self._settings = settings
        self._on_message = on_message  # each link's messages: ("sent" or "received", items)
        self._links: dict[str, PeerLink] = {}
        self._tracing = tracing

    async def _stop(self) -> None:
        for link in self._links.values():
            link.stop()

    async def _close(self) -> None:
        for link in self._links.values():
            await link.close()

    def renew_channels(self) -> None:
        """Every link reconnects with its credentials' files as they are now
        (this process's certificate was rotated)."""
        for link in self._links.values():
            link.renew()

    def link(self, node_id: str) -> PeerLink:
        link = self._links.get(node_id)
        if link is None:
            link = PeerLink(node_id, self._addresses[node_id], self._settings, self._tasks,
                            self._on_message)
            self._links[node_id] = link
        return link

    def pingers(self, timeout: float) -> dict[str, Callable[[], Awaitable[None]]]:
        """node id -> a function pinging it over its link, for every peer but this node."""
        return {
            node_id: functools.partial(self.link(node_id).ping, timeout)
            for node_id in self._addresses if not self._is_local(node_id)
        }

    def submit(self, node_id: str, op: replica_pb2.ReplicaOp,
               convert: Callable[[replica_pb2.ReplicaResult], T], timeout: float | None = None,
               *, any_answer: bool = False) -> "asyncio.Future[T]":
        """`PeerLink.submit` on the link to `node_id`, in a span when traced."""
        tracing = self._tracing
        if tracing is None or not tracing.in_trace():
            return self.link(node_id).submit(op, convert, timeout, any_answer=any_answer)
        span = spans.sending(tracing, op.WhichOneof("op") or "unknown", node_id, op)
        return spans.follow(tracing, span, self.link(node_id).submit(
            op, convert, timeout, any_answer=any_answer))

    def _here(self, kind: str, work: Coroutine[Any, Any, T]) -> "asyncio.Future[T]":
        """`work` on this node's own replica, as a task (in a span when traced)."""
        tracing = self._tracing
        if tracing is not None and tracing.in_trace():
            return self._future_of(spans.locally(tracing, kind, self._self_id or "", work))
        return self._future_of(work)

    def _is_local(self, node_id: str) -> bool:
        return node_id == self._self_id

    def _replica(self) -> LocalReplica:
        assert self._local is not None
        return self._local

    def read(self, node_id: str, key: bytes) -> "asyncio.Future[DVVSet | None]":
        if self._is_local(node_id):
            if self._tracing is not None and self._tracing.in_trace():
                with self._tracing.span("replica.read", code_of=spans.code_of, attributes={
                        "kvstore.operation": "read", "kvstore.replica": node_id}):
                    return _settled_now(self._replica().read, key)
            return _settled_now(self._replica().read, key)
        op = replica_pb2.ReplicaOp(read=replica_pb2.ReplicaRead(key=key))
        return self.submit(node_id, op, _found_state)

    def apply(self, node_id: str, key: bytes, value: bytes, tombstone: bool,
              context: bytes, request_id: bytes) -> "asyncio.Future[DVVSet]":
        if self._is_local(node_id):
            return self._here("apply", self._apply_here(key, value, tombstone, context,
                                                        request_id))
        op = replica_pb2.ReplicaOp(apply=replica_pb2.ReplicaApply(
            key=key, value=value, tombstone=tombstone, context=context, request_id=request_id))
        return self.submit(node_id, op, _state)

    async def _apply_here(self, key: bytes, value: bytes, tombstone: bool, context: bytes,
                          request_id: bytes) -> DVVSet:
        state, _duplicate = await self._replica().apply(key, value, tombstone, context,
                                                        request_id)
        return state

    def merge(self, node_id: str, key: bytes, state: DVVSet,
              request_id: bytes = b"", hint_for: str = "") -> "asyncio.Future[None]":
        """Merge `state` into the replica `node_id`; with `hint_for`, have
        `node_id` keep it as a hint for that (down) node instead."""
        if self._is_local(node_id):
            return self._here("merge", self._merge_here(key, state, request_id, hint_for))
        op = replica_pb2.ReplicaOp(merge=replica_pb2.ReplicaMerge(
            key=key, state=versions.encode(state), request_id=request_id, hint_for=hint_for))
        return self.submit(node_id, op, _nothing)

    async def _merge_here(self, key: bytes, state: DVVSet, request_id: bytes,
                          hint_for: str) -> None:
        if hint_for:
            await self._replica().store_hint(hint_for, key, state)
        else:
            await self._replica().merge(key, state, request_id)

    def tree_hashes(self, node_id: str, partition: int, level: int,
                    indices: list[int]) -> "asyncio.Future[list[bytes]]":
        """Hashes of nodes of a peer's Merkle tree of `partition` (anti-entropy)."""
        op = replica_pb2.ReplicaOp(tree_hashes=replica_pb2.ReplicaTreeHashes(
            partition=partition, level=level, indices=indices))
        return self.link(node_id).submit(op, _hashes)

    def roots(self, node_id: str, partitions: list[int]) -> "asyncio.Future[list[bytes]]":
        """The roots of a peer's Merkle trees of `partitions`, in that order."""
        op = replica_pb2.ReplicaOp(roots=replica_pb2.ReplicaRoots(partitions=partitions))
        return self.link(node_id).submit(op, _hashes)

    def bucket(self, node_id: str, partition: int,
               bucket: int) -> "asyncio.Future[dict[bytes, bytes]]":
        """key -> state digest of one bucket of a peer's tree of `partition`."""
        op = replica_pb2.ReplicaOp(bucket=replica_pb2.ReplicaBucket(
            partition=partition, bucket=bucket))
        return self.link(node_id).submit(op, _entries)

    def purge(self, node_id: str, key: bytes, digest: bytes) -> "asyncio.Future[bool]":
        """Have a peer drop `key` if it holds exactly that tombstone state;
        True if it did."""
        op = replica_pb2.ReplicaOp(purge=replica_pb2.ReplicaPurge(key=key, digest=digest))
        return self.link(node_id).submit(op, _found)

    def hints_held(self, node_id: str, partition: int) -> "asyncio.Future[int]":
        """How many hints a peer keeps for keys of `partition`."""
        op = replica_pb2.ReplicaOp(hints_held=replica_pb2.ReplicaHintsHeld(partition=partition))
        return self.link(node_id).submit(op, _hints)


def _settled_now(read: Callable[[bytes], T], key: bytes) -> "asyncio.Future[T]":
    """A local read answers at once: a Future already settled."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    try:
        future.set_result(read(key))
    except KVStoreError as exc:
        future.set_exception(exc)
    return future


# What each kind of answer means to the caller (run as the answer arrives).

def _found_state(result: replica_pb2.ReplicaResult) -> DVVSet | None:
    return versions.decode(result.state) if result.found else None


def _state(result: replica_pb2.ReplicaResult) -> DVVSet:
    return versions.decode(result.state)


def _nothing(result: replica_pb2.ReplicaResult) -> None:
    return None


def _hashes(result: replica_pb2.ReplicaResult) -> list[bytes]:
    return list(result.hashes)


def _entries(result: replica_pb2.ReplicaResult) -> dict[bytes, bytes]:
    return {entry.key: entry.digest for entry in result.entries}


def _found(result: replica_pb2.ReplicaResult) -> bool:
    return result.found


def _hints(result: replica_pb2.ReplicaResult) -> int:
    return result.hints
