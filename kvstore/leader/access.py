"""`LeaderAccess`: how a node or a coordinator carries out one leader-mode
request, the asyncio shell of `route.Route`: send each attempt through the
`LeaderOps` seam (this node's `LocalLeader`, or another process over its
peer link), feed the answer back to the route, and keep the process's
`LeaderBook` up to date with what the answers say.

    access = LeaderAccess(spec, ops, self_id="n1", leader_timeout=2.5, clock=SYSTEM_CLOCK)
    outcome = await access.write(partition, Put(key, value, request_id), timeout=5.0)
    value = await access.read(partition, key, stale=False, timeout=5.0)

A pause (no replica knows a leader yet) ends early when a leader of the
partition is learnt (`learn`, which the node's Raft driver calls on every
leader change of its groups).
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from kvstore.clock import Clock
from kvstore.errors import KVStoreError
from kvstore.leader.commands import Command
from kvstore.leader.leaders import LeaderBook
from kvstore.leader.raft.messages import NodeId
from kvstore.leader.route import Attempt, GiveUp, Kind, Pause, Route
from kvstore.leader.state_machine import Outcome
from kvstore.leader.waiters import ReadValue
from kvstore.placement.membership import ClusterSpec

T = TypeVar("T")


class LeaderOps(Protocol):
    """One attempt at one node: this one directly, another over its link.
    A refusal raises the node's error; a node that does not answer raises
    `Unreachable`."""

    def write(self, node: NodeId, partition: int, command: Command,
              timeout: float) -> Awaitable[Outcome]: ...

    def read(self, node: NodeId, partition: int, key: bytes, stale: bool,
             timeout: float) -> Awaitable[ReadValue]: ...


class Unreachable(Exception):
    """The node did not answer: its link failed, or no answer came in time.
    (A request it took may still be carried out.)"""


class LeaderAccess:
    def __init__(self, spec: ClusterSpec, ops: LeaderOps, *, self_id: NodeId | None,
                 leader_timeout: float, clock: Clock) -> None:
        self.book = LeaderBook()
        self._ops = ops
        self._self_id = self_id
        self._leader_timeout = leader_timeout
        self._clock = clock
        self._replicas = [tuple(spec.ring.preference_list(p, spec.replicas))
                          for p in range(spec.partitions)]
        self._learnt: dict[int, asyncio.Event] = {}

    @property
    def partitions(self) -> int:
        return len(self._replicas)

    def replicas(self, partition: int) -> tuple[NodeId, ...]:
        return self._replicas[partition]

    def learn(self, partition: int, leader: NodeId | None, term: int = 0) -> None:
        """Someone reported `partition`'s leader (None: it knows none)."""
        if self.book.learn(partition, leader, term) and leader is not None:
            event = self._learnt.pop(partition, None)
            if event is not None:
                event.set()

    def leader_elsewhere(self, partition: int) -> NodeId | None:
        """The leader this process knows for `partition` when it is another
        process (a coordinator's is always another): the hint an answer
        gives a client that routes by key, so that its next calls go there."""
        leader = self.book.leader_of(partition)
        return None if leader == self._self_id else leader

    async def wait_for_leader(self, partition: int, wanted: Callable[[NodeId | None], bool],
                              timeout: float) -> bool:
        """Whether the known leader of `partition` satisfies `wanted` within `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not wanted(self.book.leader_of(partition)):
            left = deadline - loop.time()
            if left <= 0:
                return False
            await self._learning(partition, left)
        return True

    async def write(self, partition: int, command: Command, *, timeout: float) -> Outcome:
        def attempt(node: NodeId, seconds: float) -> Awaitable[Outcome]:
            return self._ops.write(node, partition, command, seconds)

        outcome = await self._run(partition, Kind.WRITE, timeout, attempt)
        return outcome

    async def read(self, partition: int, key: bytes, *, stale: bool,
                   timeout: float) -> ReadValue:
        def attempt(node: NodeId, seconds: float) -> Awaitable[ReadValue]:
            return self._ops.read(node, partition, key, stale, seconds)

        return await self._run(partition, Kind.STALE_READ if stale else Kind.READ, timeout,
                               attempt)

    async def _run(self, partition: int, kind: Kind, timeout: float,
                   attempt: Callable[[NodeId, float], Awaitable[T]]) -> T:
        route = Route(partition, self._replicas[partition], kind, self_id=self._self_id,
                      leader=self.book.leader_of(partition),
                      last_known=self.book.last_known(partition),
                      now=self._clock.monotonic(), timeout=timeout,
                      leader_timeout=self._leader_timeout)
        while True:
            step = route.next(self._clock.monotonic())
            if isinstance(step, GiveUp):
                raise step.error
            if isinstance(step, Pause):
                await self._learning(partition, step.seconds)
                continue
            assert isinstance(step, Attempt)
            try:
                answer = await attempt(step.node, step.timeout)
            except KVStoreError as error:
                route.refused(step.node, error)
                hint = error.metadata.get("leader")
                if error.reason == "NOT_LEADER" and hint:
                    self.learn(partition, hint)
                continue
            except Unreachable:
                route.unanswered(step.node)
                self.book.forget(partition, step.node)
                continue
            if kind is Kind.WRITE:
                self.learn(partition, step.node)  # it applied the write: it led
            return answer

    async def _learning(self, partition: int, seconds: float) -> None:
        """Wait `seconds`, or less if a leader of `partition` is learnt."""
        event = self._learnt.get(partition)
        if event is None:
            event = self._learnt[partition] = asyncio.Event()
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            pass
