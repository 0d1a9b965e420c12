"""Leaderless quorum coordination of one request (Dynamo, section 4.5).

A read asks R replicas of the key's preference list (another for each that
fails), answers once R have replied (their states merged), and when the last
of them has answered repairs those that showed less than the merged state
(read repair), off the answer's path. Replicas a read did not ask are
brought up to date by later reads and by replication of later writes. A write goes through one replica (the write's origin: this node when it
is in the preference list, else the first that answers), which adds the value
with a new dot; the resulting state is merged into the other replicas, and
the write is acknowledged once W replicas hold it durably.

Work that outlives a request (repair, replication past W) is owned by the
coordinator's task group and awaited on close. The quorum arithmetic is in
`kvstore.leaderless.quorum`, the transport behind `ReplicaOps`.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from kvstore.errors import (
    DataLoss, DeadlineExceeded, FailedPrecondition, InvalidArgument, KVStoreError,
    ResourceExhausted, Unavailable,
)
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc.peers import ReplicaOps
from kvstore.leaderless.quorum import ReadQuorum, WriteQuorum
from kvstore.causality.versions import DVVSet

log = logging.getLogger(__name__)

# Errors that are the request's fault: trying another replica cannot help.
_REQUEST_ERRORS = (InvalidArgument, FailedPrecondition)


class Coordinator:
    """`async with Coordinator(spec, ops, self_id=...) as coordinator:`"""

    def __init__(self, spec: ClusterSpec, ops: ReplicaOps, *, self_id: str | None = None,
                 on_repair: Callable[[int], None] | None = None,
                 is_up: Callable[[str], bool] = lambda node_id: True) -> None:
        self.spec = spec
        self._ops = ops
        self._self_id = self_id
        self._is_up = is_up
        self._on_repair = on_repair
        self._tasks = asyncio.TaskGroup()

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._tasks.__aexit__(exc_type, exc, tb)

    # -- reads -----------------------------------------------------------------

    async def get(self, key: bytes, r: int, timeout: float) -> DVVSet | None:
        """The merged state of `key` once `r` replicas answered."""
        replicas = self.spec.preference_list(key)
        if r == 1 and replicas[0] == self._self_id:
            # This node holds the key and one answer is enough: its own, with
            # no quorum to keep; a failure falls through to asking the others.
            try:
                return await self._ops.read(self._self_id, key)
            except KVStoreError:
                if len(replicas) == 1:
                    raise
        quorum = ReadQuorum(replicas, r, lww=self.spec.last_write_wins)
        corrupt: list[str] = []
        failures: list[KVStoreError] = []
        settled = asyncio.Event()

        # Ask R replicas (this node first when it holds the key: no network
        # hop), and one more for each that fails, as Cassandra does: asking
        # all N would cost every replica a read for an answer not waited for.
        candidates = iter(self._by_locality(replicas))

        async def ask(node_id: str) -> None:
            try:
                state = await self._ops.read(node_id, key)
            except KVStoreError as exc:
                if isinstance(exc, DataLoss):
                    corrupt.append(node_id)
                failures.append(exc)
                quorum.fail(node_id, str(exc))
                if not quorum.failed:
                    self._tasks.create_task(ask(next(candidates)))
            else:
                quorum.reply(node_id, state)
            if quorum.settled:
                settled.set()
            if len(quorum.replies) + len(quorum.failures) == asked():
                # The last answer of those asked: repair what the others showed.
                self._repair(key, quorum, corrupt)

        first = [next(candidates) for _ in range(r)]
        asked = lambda: len(first) + len(failures)  # noqa: E731
        local = first[0] if first[0] == self._self_id else None
        for node_id in first:
            if node_id != local:
                self._tasks.create_task(ask(node_id))
        if local is not None:
            await ask(local)  # no network hop: answers at once, no task needed
        if not quorum.settled:
            await self._wait(settled, timeout, quorum.error_message)
        if quorum.failed:
            raise _quorum_error(quorum.error_message(), failures)
        return quorum.merged()

    def _repair(self, key: bytes, quorum: ReadQuorum, corrupt: list[str]) -> None:
        """Bring the replicas that answered with less than the merged state,
        or with a corrupt copy, up to it, in the background."""
        merged = quorum.merged()
        if merged is None:
            return
        targets = [*quorum.stale(merged), *corrupt]
        if targets:
            self._tasks.create_task(self._merge_into(key, merged, targets))

    async def _merge_into(self, key: bytes, merged: DVVSet, targets: list[str]) -> None:
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
        quorum = WriteQuorum(replicas, w)
        failures: list[KVStoreError] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        state = await self._apply_at_origin(
            replicas, quorum, failures, deadline,
            lambda origin: self._ops.apply(origin, key, value, tombstone, context, request_id),
        )
        settled = asyncio.Event()
        if quorum.settled:
            settled.set()

        async def hint(node_id: str, stand_in: str) -> None:
            """Have `stand_in` keep the state as a hint for `node_id`; one that
            cannot be reached hands the hint on to the next stand-in, if any.
            (One whose hint bound is full fails the write: that is back-pressure.)"""
            while True:
                try:
                    await self._ops.merge(stand_in, key, state, request_id, hint_for=node_id)
                    return
                except KVStoreError as exc:
                    unreachable = isinstance(exc, (Unavailable, DeadlineExceeded))
                    following = next(stand_ins, None) if unreachable else None
                    if following is None:
                        raise type(exc)(f"via {stand_in}: {exc}") from exc
                    log.info("stand-in %s for %s failed (%s); trying %s",
                             stand_in, node_id, exc, following)
                    stand_in = following

        async def replicate(node_id: str, stand_in: str | None = None) -> None:
            try:
                if stand_in is None:
                    try:
                        await self._ops.merge(node_id, key, state, request_id)
                    except (Unavailable, DeadlineExceeded):
                        # Down but not yet convicted: hint it like one that is.
                        stand_in = next(stand_ins, None)
                        if stand_in is None:
                            raise
                if stand_in is not None:
                    await hint(node_id, stand_in)
            except KVStoreError as exc:
                failures.append(exc)
                quorum.fail(node_id, str(exc))
            else:
                quorum.ack(node_id)
            if quorum.settled:
                settled.set()

        stand_ins = iter(self._stand_ins(key, replicas) if sloppy else ())
        for node_id in quorum.pending:
            if self._is_up(node_id):
                self._tasks.create_task(replicate(node_id))
            elif (stand_in := next(stand_ins, None)) is not None:
                self._tasks.create_task(replicate(node_id, stand_in))
            else:  # convicted by the failure detector: do not wait for it
                failures.append(Unavailable(f"{node_id} is down"))
                quorum.fail(node_id, "down (failure detector)")
        if not quorum.settled:
            await self._wait(settled, deadline - loop.time(), quorum.error_message)
        if quorum.failed:
            raise _quorum_error(quorum.error_message(), failures)
        return state

    async def _apply_at_origin(self, replicas: Sequence[str], quorum: WriteQuorum,
                               failures: list[KVStoreError], deadline: float,
                               apply: Callable[[str], Awaitable[DVVSet]]) -> DVVSet:
        loop = asyncio.get_running_loop()
        # The origin is the first replica that is up, whoever coordinates: a
        # retried write (same request id) reaches the same origin, which
        # recognises it, through any coordinator.
        for origin in self._up_first(replicas):
            try:
                async with asyncio.timeout_at(deadline):
                    state = await apply(origin)
            except _REQUEST_ERRORS:
                raise
            except TimeoutError:
                raise DeadlineExceeded(
                    f"w={quorum.required}: the write's origin replica {origin} did not answer "
                    f"in time; the write may or may not have been applied"
                ) from None
            except KVStoreError as exc:
                failures.append(exc)
                quorum.fail(origin, str(exc))
                if quorum.failed or loop.time() >= deadline:
                    raise _quorum_error(quorum.error_message(), failures) from exc
                continue
            quorum.ack(origin)
            return state
        raise _quorum_error(quorum.error_message(), failures)

    def _stand_ins(self, key: bytes, replicas: Sequence[str]) -> list[str]:
        """Healthy nodes after the preference list along the ring walk: who
        takes hints for replicas that are down (Dynamo's sloppy quorum)."""
        walk = self.spec.ring.preference_list(self.spec.partition_of(key),
                                              len(self.spec.members))
        return [n for n in walk if n not in replicas and self._is_up(n)]

    def _up_first(self, replicas: Sequence[str]) -> list[str]:
        """The replicas in preference order, those the failure detector has
        convicted last."""
        up = [n for n in replicas if self._is_up(n)]
        return up + [n for n in replicas if n not in up]

    def _by_locality(self, replicas: Sequence[str]) -> list[str]:
        """This node first when it holds the key (no network hop), then the
        others that are up, in preference order; peers the failure detector
        has convicted last, tried only when nothing else is left."""
        local = [n for n in replicas if n == self._self_id]
        others = [n for n in replicas if n != self._self_id]
        up = [n for n in others if self._is_up(n)]
        return local + up + [n for n in others if n not in up]

    @staticmethod
    async def _wait(settled: asyncio.Event, timeout: float, describe: Callable[[], str]) -> None:
        """Until the quorum settles; DeadlineExceeded (saying who answered) after `timeout`."""
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await settled.wait()
        except TimeoutError:
            raise DeadlineExceeded(f"deadline passed before the quorum was reached; {describe()}") from None


def _quorum_error(message: str, failures: Sequence[KVStoreError]) -> KVStoreError:
    """Unavailable, unless every replica failed the same way for a reason of
    its own (a full store, a corrupt record): then that reason's error, so a
    one-replica cluster reports RESOURCE_EXHAUSTED or DATA_LOSS as a node does."""
    kinds = {type(failure) for failure in failures}
    if len(kinds) == 1:
        (kind,) = kinds
        if kind in (ResourceExhausted, DataLoss):
            return kind(message)
    return Unavailable(message)
