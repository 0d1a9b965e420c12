"""Leaderless coordination of one request: the asyncio driver of the read and
write machines.

What a read or a write does, and in which order, is decided by the pure
machines `kvstore.leaderless.read_request.ReadRequest` and
`kvstore.leaderless.write_request.WriteRequest`; this module only carries
their actions out on the replicas (through `PeerOps`), feeds the outcomes
back, and owns the deadline.

No task per replica and operation: an action's outcome is an asyncio Future
(the gRPC transport returns its own, settled when the answer arrives), and
a done-callback feeds it to the machine. A transport that returns
coroutines instead (the simulation's) has each run as a task of this
coordinator's group, its outcome in a Future too. Work that outlives a
request (read repair, replication past W) is waited for on close, whether
it is the transport's Futures or this group's tasks.
"""

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from kvstore.background import Background
from kvstore.causality.versions import DVVSet
from kvstore.errors import KVStoreError, Unavailable
from kvstore.leaderless import read_request as read
from kvstore.leaderless import write_request as write
from kvstore.leaderless.peer_ops import PeerOps
from kvstore.placement.membership import ClusterSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


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
        self._outstanding: set[asyncio.Future[Any]] = set()  # the transport's, not yet done

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        # The transport's Futures are no tasks of ours: wait for them before
        # the group closes (their callbacks may start more, or tasks).
        while self._outstanding:
            await asyncio.wait(tuple(self._outstanding))
        await super().__aexit__(exc_type, exc, tb)

    def _then(self, work: Awaitable[T], callback: Callable[["asyncio.Future[T]"], None]) -> None:
        """Call `callback` with the outcome of `work` (a PeerOps call) once
        it is known: at once if it already is (a local read)."""
        if isinstance(work, asyncio.Future):
            future: asyncio.Future[T] = work
            if not future.done():
                self._outstanding.add(future)
                future.add_done_callback(self._outstanding.discard)
        else:
            future = self._future_of(work)
        if future.done():
            callback(future)
        else:
            future.add_done_callback(callback)

    # -- reads -----------------------------------------------------------------

    async def get(self, key: bytes, r: int, timeout: float) -> DVVSet | None:
        """The merged state of `key` once `r` replicas answered."""
        request = read.ReadRequest(self.spec.preference_list(key), r, self_id=self._self_id,
                                   is_up=self._is_up, lww=self.spec.last_write_wins)
        answer: asyncio.Future[DVVSet | None] = asyncio.get_running_loop().create_future()
        # A local read answers at once: with r=1 on a replica, no timer is needed.
        self._carry_out_read(key, request, request.start(), answer)
        if not answer.done():
            try:
                async with asyncio.timeout(max(timeout, 0)):
                    return await asyncio.shield(answer)
            except TimeoutError:
                self._carry_out_read(key, request, request.deadline(), answer)
        return answer.result()

    def _carry_out_read(self, key: bytes, request: read.ReadRequest,
                        actions: list[read.ReadAction],
                        answer: "asyncio.Future[DVVSet | None]") -> None:
        for action in actions:
            match action:
                case read.Ask(node_id):
                    self._then(self._ops.read(node_id, key),
                               functools.partial(self._asked, key, request, node_id, answer))
                case read.Repair(targets, state):
                    for node_id in targets:
                        self._then(self._ops.merge(node_id, key, state),
                                   functools.partial(self._repaired, key, node_id))
                case read.Answer(state):
                    answer.set_result(state)
                case read.Fail(error):
                    answer.set_exception(error)

    def _asked(self, key: bytes, request: read.ReadRequest, node_id: str,
               answer: "asyncio.Future[DVVSet | None]",
               outcome: "asyncio.Future[DVVSet | None]") -> None:
        if outcome.cancelled():  # the coordinator is going down
            return
        error = _failure(outcome, "read")
        if error is None:
            actions = request.reply(node_id, outcome.result())
        else:
            actions = request.failure(node_id, error)
        self._carry_out_read(key, request, actions, answer)

    def _repaired(self, key: bytes, node_id: str, outcome: "asyncio.Future[None]") -> None:
        if outcome.cancelled():
            return
        error = _failure(outcome, "read repair")
        if error is not None:
            log.info("read repair of %r on %s failed: %s", key[:64], node_id, error)
        elif self._on_repair is not None:
            self._on_repair(1)

    # -- writes ----------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, tombstone: bool, context: bytes, w: int,
                  request_id: bytes, timeout: float, *, sloppy: bool = True,
                  on_settled: Callable[[], None] = lambda: None) -> DVVSet:
        """Write through an origin replica; the state it produced, once `w`
        replicas hold it durably. With `sloppy`, a replica that is down is
        stood in for by the next healthy node along the ring, which keeps the
        state as a durable hint and hands it over when the replica is back
        (its acknowledgement counts for that replica). `on_settled` is
        called once every replica (or stand-in) has answered or failed,
        which may be after this returns: what the write holds until then
        (its value, and the state on its way to each replica) counts in the
        process's admission bounds."""
        outstanding = _Outstanding(on_settled)
        try:
            return await self._put(key, value, tombstone, context, w, request_id, timeout,
                                   sloppy, outstanding)
        finally:
            outstanding.done()

    async def _put(self, key: bytes, value: bytes, tombstone: bool, context: bytes, w: int,
                   request_id: bytes, timeout: float, sloppy: bool,
                   outstanding: "_Outstanding") -> DVVSet:
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
        operation = _WriteOperation(key, value, tombstone, context, request_id, outstanding)
        origin = self._carry_out_write(operation, request, request.start(), answer)
        try:
            async with asyncio.timeout_at(deadline):
                # The origin is applied here, not in a callback: the other
                # replicas follow only once it has produced the state.
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
                    operation.outstanding.start()
                    self._then(self._ops.merge(node_id, operation.key, state,
                                               operation.request_id),
                               functools.partial(self._replicated, operation, request, node_id,
                                                 answer))
                case write.Hint(owner, via, state):
                    operation.outstanding.start()
                    self._then(self._ops.merge(via, operation.key, state, operation.request_id,
                                               hint_for=owner),
                               functools.partial(self._hinted, operation, request, owner, via,
                                                 answer))
                case write.Answer(state):
                    answer.set_result(state)
                case write.Fail(error):
                    answer.set_exception(error)
        return origin

    def _replicated(self, operation: "_WriteOperation", request: write.WriteRequest,
                    node_id: str, answer: "asyncio.Future[DVVSet]",
                    outcome: "asyncio.Future[None]") -> None:
        operation.outstanding.done()
        if outcome.cancelled():
            return
        error = _failure(outcome, "replication")
        if error is None:
            actions = request.replicated(node_id)
        else:
            actions = request.replicate_failed(node_id, error)
        self._carry_out_write(operation, request, actions, answer)

    def _hinted(self, operation: "_WriteOperation", request: write.WriteRequest,
                owner: str, via: str, answer: "asyncio.Future[DVVSet]",
                outcome: "asyncio.Future[None]") -> None:
        operation.outstanding.done()
        if outcome.cancelled():
            return
        error = _failure(outcome, "hint")
        if error is None:
            actions = request.hinted(owner, via)
        else:
            log.info("stand-in %s for %s failed: %s", via, owner, error)
            actions = request.hint_failed(owner, via, error)
        self._carry_out_write(operation, request, actions, answer)


def _failure(outcome: "asyncio.Future[Any]", what: str) -> KVStoreError | None:
    """The KVStoreError a replica's operation failed with, if it did. Any
    other error is a bug: logged, and counted as that replica failing (for
    an apply, one whose outcome is unknown)."""
    error = outcome.exception()
    if error is None or isinstance(error, KVStoreError):
        return error
    log.error("%s failed unexpectedly", what, exc_info=error)
    return Unavailable(f"internal error in the {what} ({type(error).__name__}: {error})")


class _Outstanding:
    """What of one write is still running: the request itself, and each
    replication or hint it started; `settled` is called when none is."""

    __slots__ = ("_count", "_settled")

    def __init__(self, settled: Callable[[], None]) -> None:
        self._count = 1  # the request
        self._settled = settled

    def start(self) -> None:
        self._count += 1

    def done(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._settled()


@dataclass(frozen=True, slots=True)
class _WriteOperation:
    """The client's write, as the replicas are asked to apply or merge it."""

    key: bytes
    value: bytes
    tombstone: bool
    context: bytes
    request_id: bytes
    outstanding: _Outstanding
