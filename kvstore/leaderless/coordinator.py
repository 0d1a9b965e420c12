"""Leaderless coordination of one request: the asyncio driver of the read and
write machines.

What a read or a write does, and in which order, is decided by the pure
machines `kvstore.leaderless.read_request.ReadRequest` and
`kvstore.leaderless.write_request.WriteRequest`; this module only carries
their actions out on the replicas (through `PeerOps`), feeds the outcomes
back, and owns the deadline. Work that outlives a request (read repair,
replication past W) is owned by the coordinator's task group and awaited on
close.
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kvstore.background import Background
from kvstore.causality.versions import DVVSet
from kvstore.errors import KVStoreError
from kvstore.leaderless import read_request as read
from kvstore.leaderless import write_request as write
from kvstore.leaderless.peer_ops import PeerOps
from kvstore.placement.membership import ClusterSpec

log = logging.getLogger(__name__)


class Coordinator(Background):
    """`async with Coordinator(spec, ops, self_id=...) as coordinator:`; leaving
    the block waits for the read repairs and replications still running."""

    def __init__(self, spec: ClusterSpec, ops: PeerOps, *, self_id: str | None = None,
                 on_repair: Callable[[int], None] | None = None,
                 is_up: Callable[[str], bool] = lambda node_id: True) -> None:
        super().__init__()
        self.spec = spec
        self._ops = ops
        self._self_id = self_id
        self._is_up = is_up
        self._on_repair = on_repair

    # -- reads -----------------------------------------------------------------

    async def get(self, key: bytes, r: int, timeout: float) -> DVVSet | None:
        """The merged state of `key` once `r` replicas answered."""
        request = read.ReadRequest(self.spec.preference_list(key), r, self_id=self._self_id,
                                   is_up=self._is_up, lww=self.spec.last_write_wins)
        answer: asyncio.Future[DVVSet | None] = asyncio.get_running_loop().create_future()
        local = self._carry_out_read(key, request, request.start(), answer)
        for node_id in local:  # no network hop: answers at once, no task needed
            await self._ask(key, request, node_id, answer)
        if not answer.done():
            try:
                async with asyncio.timeout(max(timeout, 0)):
                    return await asyncio.shield(answer)
            except TimeoutError:
                self._carry_out_read(key, request, request.deadline(), answer)
        return answer.result()

    def _carry_out_read(self, key: bytes, request: read.ReadRequest,
                        actions: list[read.ReadAction],
                        answer: "asyncio.Future[DVVSet | None]") -> list[str]:
        """Start the actions; the asks of this node itself are returned, for
        the caller to await in place."""
        local = []
        for action in actions:
            match action:
                case read.Ask(node_id) if node_id == self._self_id:
                    local.append(node_id)
                case read.Ask(node_id):
                    self._tasks.create_task(self._ask(key, request, node_id, answer))
                case read.Repair(targets, state):
                    self._tasks.create_task(self._merge_into(key, state, targets))
                case read.Answer(state):
                    answer.set_result(state)
                case read.Fail(error):
                    answer.set_exception(error)
        return local

    async def _ask(self, key: bytes, request: read.ReadRequest, node_id: str,
                   answer: "asyncio.Future[DVVSet | None]") -> None:
        try:
            state = await self._ops.read(node_id, key)
        except KVStoreError as exc:
            actions = request.failure(node_id, exc)
        else:
            actions = request.reply(node_id, state)
        for local in self._carry_out_read(key, request, actions, answer):
            self._tasks.create_task(self._ask(key, request, local, answer))

    async def _merge_into(self, key: bytes, merged: DVVSet, targets: tuple[str, ...]) -> None:
        results = await asyncio.gather(
            *(self._ops.merge(node_id, key, merged) for node_id in targets), return_exceptions=True
        )
        repaired = sum(1 for result in results if not isinstance(result, BaseException))
        if self._on_repair is not None and repaired:
            self._on_repair(repaired)
        for node_id, result in zip(targets, results):
            if isinstance(result, BaseException):
                log.info("read repair of %r on %s failed: %s", key[:64], node_id, result)

    # -- writes ----------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, tombstone: bool, context: bytes, w: int,
                  request_id: bytes, timeout: float, *, sloppy: bool = True) -> DVVSet:
        """Write through an origin replica; the state it produced, once `w`
        replicas hold it durably. With `sloppy`, a replica that is down is
        stood in for by the next healthy node along the ring, which keeps the
        state as a durable hint and hands it over when the replica is back
        (its acknowledgement counts for that replica)."""
        replicas = self.spec.preference_list(key)
        if len(replicas) == 1 and replicas[0] == self._self_id:
            # A one-replica cluster on this node: no quorum to keep, and no
            # timer either: the write waits only for the local commit, and
            # gRPC cancels the call if the client's deadline passes first.
            return await self._ops.apply(self._self_id, key, value, tombstone, context,
                                         request_id)
        ring_walk = self.spec.ring.preference_list(self.spec.partition_of(key),
                                                   len(self.spec.members))
        request = write.WriteRequest(replicas, w, ring_walk=ring_walk, is_up=self._is_up,
                                     sloppy=sloppy)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        answer: asyncio.Future[DVVSet] = loop.create_future()
        operation = _WriteOperation(key, value, tombstone, context, request_id)
        origin = self._carry_out_write(operation, request, request.start(), answer)
        try:
            async with asyncio.timeout_at(deadline):
                # The origin is applied here, not in a task: the other replicas
                # follow only once it has produced the state.
                while origin is not None:
                    origin = await self._apply(operation, request, origin, answer, deadline)
                if not answer.done():
                    await asyncio.shield(answer)
        except TimeoutError:
            self._carry_out_write(operation, request, request.deadline(), answer)
        return answer.result()

    async def _apply(self, operation: "_WriteOperation", request: write.WriteRequest,
                     origin: str, answer: "asyncio.Future[DVVSet]",
                     deadline: float) -> str | None:
        """Apply at `origin`; the next origin to try, if any."""
        try:
            state = await self._ops.apply(origin, operation.key, operation.value,
                                          operation.tombstone, operation.context,
                                          operation.request_id)
        except KVStoreError as exc:
            past_deadline = asyncio.get_running_loop().time() >= deadline
            actions = request.apply_failed(origin, exc, past_deadline=past_deadline)
        else:
            actions = request.applied(origin, state)
        return self._carry_out_write(operation, request, actions, answer)

    def _carry_out_write(self, operation: "_WriteOperation", request: write.WriteRequest,
                         actions: list[write.WriteAction],
                         answer: "asyncio.Future[DVVSet]") -> str | None:
        """Start the actions; an origin to apply at is returned, for the
        caller to await in place."""
        origin = None
        for action in actions:
            match action:
                case write.Apply(node_id):
                    origin = node_id
                case write.Replicate(node_id, state):
                    self._tasks.create_task(self._replicate(operation, request, node_id, state,
                                                            answer))
                case write.Hint(owner, via, state):
                    self._tasks.create_task(self._hint(operation, request, owner, via, state,
                                                       answer))
                case write.Answer(state):
                    answer.set_result(state)
                case write.Fail(error):
                    answer.set_exception(error)
        return origin

    async def _replicate(self, operation: "_WriteOperation", request: write.WriteRequest,
                         node_id: str, state: DVVSet, answer: "asyncio.Future[DVVSet]") -> None:
        try:
            await self._ops.merge(node_id, operation.key, state, operation.request_id)
        except KVStoreError as exc:
            actions = request.replicate_failed(node_id, exc)
        else:
            actions = request.replicated(node_id)
        self._carry_out_write(operation, request, actions, answer)

    async def _hint(self, operation: "_WriteOperation", request: write.WriteRequest,
                    owner: str, via: str, state: DVVSet,
                    answer: "asyncio.Future[DVVSet]") -> None:
        try:
            await self._ops.merge(via, operation.key, state, operation.request_id,
                                  hint_for=owner)
        except KVStoreError as exc:
            log.info("stand-in %s for %s failed: %s", via, owner, exc)
            actions = request.hint_failed(owner, via, exc)
        else:
            actions = request.hinted(owner, via)
        self._carry_out_write(operation, request, actions, answer)


@dataclass(frozen=True, slots=True)
class _WriteOperation:
    """The client's write, as the replicas are asked to apply or merge it."""

    key: bytes
    value: bytes
    tombstone: bool
    context: bytes
    request_id: bytes
