"""A simulated leader-mode storage node: the production Raft code, wired as
`kvstore/server/leader_node.py` wires it, over the simulated network and an
in-memory Raft store.

`LeaderMachine` is the machine: a name, a disk (`MemoryRaftStore`, which
has `LmdbRaftStore`'s contract and outlives crashes), a wall clock with its
own skew, a tick period of its own (clock drift), and the process running on
it now, if any. Each start makes a new `LeaderProcess` incarnation: a
`MultiRaft` host with a group per partition the node replicates, loaded from
the disk; the real `RaftDriver` (its ticks on an `IntervalTicker`, on
virtual time) with `SimRaftLinks` as its transport and `SimPassWriter`
persisting its passes; `LocalLeader`; `LeaderAccess` over `SimLeaderPeers`;
and `LeaderKV`, which the simulated clients call across the network as the
KV service would.

A pass's write takes a seeded commit time of virtual time and only then
reaches the disk, after the pass's first envelopes left (what Raft lets a
leader send before persisting): a crash in that time is a crash between
sending and persisting. `crash_while_persisting` arranges one for the next
pass that writes anything. Every write is shown to the `RaftOracle`, which
checks Raft's safety properties against what the disks hold.

What differs from a real node, on purpose: no gRPC (envelopes go as
simulated one-way messages, in their wire form; forwarded writes and reads
as simulated calls), no metrics, no coordinator tier, no admin service.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from chaos.sim.network import Network
from chaos.sim.process import SimProcess
from chaos.sim.node import SimClock
from kvclient.pb import kv_pb2
from kvstore.errors import KVStoreError
from kvstore.leader import wire
from kvstore.leader.access import LeaderAccess, Unreachable
from kvstore.leader.commands import Command
from kvstore.leader.driver import IntervalTicker, RaftDriver
from kvstore.leader.envelopes import Envelope
from kvstore.leader.host import LeaderChange, MultiRaft
from kvstore.leader.local import LocalLeader
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.restore_fence import fence_store
from kvstore.leader.persistence import PassResult, PassWrite, RaftStore
from kvstore.leader.raft.messages import NodeId
from kvstore.leader.settings import HostSettings
from kvstore.leader.state_machine import Outcome
from kvstore.leader.waiters import ReadValue
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc.leader_kv import LeaderKV
from kvstore.rpc.validation import Limits

if TYPE_CHECKING:
    from chaos.sim.leader.oracle import RaftOracle

log = logging.getLogger(__name__)

T = TypeVar("T")

# A forwarded operation's link waits this much longer than the node's own
# deadline, so that its answer (say, that it ran out of time) comes first
# (as `kvstore.rpc.leader_peers` does).
ANSWER_GRACE_SECONDS = 0.1

LIMITS = Limits(max_key_bytes=1024, max_value_bytes=1 << 20, max_batch_items=1000)


@dataclass(frozen=True)
class LeaderNodeSettings:
    """The node's configuration, scaled down so a run sees many elections."""

    host: HostSettings
    tick_seconds: float = 0.05
    # A paused process's clock stops too (a GC pause, SIGSTOP): it misses
    # the ticks of the pause, as a real one does. Not with lease reads,
    # whose safety assumes every clock runs (at a bounded drift).
    pause_stops_clock: bool = True
    leader_timeout: float = 1.0  # a request gives up this long after it found no leader
    max_request_timeout: float = 1.2  # what a forwarded operation may take here
    min_commit_seconds: float = 0.0005
    max_commit_seconds: float = 0.003


class LeaderMachine:
    def __init__(self, node_id: str, spec: ClusterSpec, network: Network,
                 settings: LeaderNodeSettings, rng: random.Random, skew_ms: int,
                 drift: float, oracle: RaftOracle) -> None:
        self.node_id = node_id
        self.spec = spec
        self.clock = SimClock(skew_ms)
        self.settings = settings
        self.tick_seconds = settings.tick_seconds * (1 + drift)
        self.oracle = oracle
        self._network = network
        self._rng = rng
        self.store = MemoryRaftStore()
        self.backup: MemoryRaftStore | None = None  # the latest `take_backup`
        self.process: LeaderProcess | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> None:
        assert self.process is None, f"{self.node_id} is running already"
        self.starts += 1
        self.process = LeaderProcess(self, self._network, self._rng.getrandbits(64))
        self.process.start()

    async def crash(self) -> None:
        """Kill the process: it stops at once, and only what it persisted stays."""
        process, self.process = self.process, None
        assert process is not None, f"{self.node_id} is not running"
        await process.kill()

    def commit_seconds(self) -> float:
        """How long the next pass's write takes (its fsync)."""
        return self._rng.uniform(self.settings.min_commit_seconds,
                                 self.settings.max_commit_seconds)

    def crash_while_persisting(self, crash: bool = True) -> None:
        """Crash at the next pass that writes, after its first envelopes
        left (`crash` False: no longer)."""
        if self.process is not None:
            self.process.crash_at_next_write = crash

    def take_backup(self) -> None:
        """`kvstore admin snapshot`: a copy of what the store holds now."""
        self.backup = self.store.copy()

    def restore(self, highest_term: int) -> int:
        """`kvstore admin restore` of the latest backup into the stopped
        node, fenced above `highest_term` (`restore_fence`); the groups fenced."""
        assert self.process is None and self.backup is not None
        store = self.backup.copy()
        groups = [p for p in range(self.spec.partitions)
                  if self.node_id in self.spec.ring.preference_list(p, self.spec.replicas)]
        fenced = fence_store(store, highest_term, groups)
        self.store = store
        self.oracle.restored(self.node_id, store, highest_term)
        return fenced

    def wipe(self) -> None:
        raise AssertionError("a Raft voter never loses its disk without leaving its groups "
                             "(leader mode's nemesis does not wipe)")

    def pause(self) -> None:
        assert self.process is not None
        self.process.paused = True

    def transfer_leadership(self, group: int, to: str) -> None:
        """Ask this node's leader of `group` to hand over to `to` (an operator's
        `kvstore admin transfer-leader`)."""
        if self.process is not None and self.process.driver is not None:
            self.process.driver.transfer_leadership(group, to)

    def resume(self) -> None:
        assert self.process is not None
        self.process.paused = False
        self._network.resume(self.node_id)


class LeaderProcess(SimProcess):
    """One incarnation of a leader-mode node: everything it holds in memory."""

    def __init__(self, machine: LeaderMachine, network: Network, seed: int) -> None:
        super().__init__(machine.node_id, network)
        self.machine = machine
        self.crash_at_next_write = False
        self._seed = seed
        self.host: MultiRaft | None = None
        self.driver: RaftDriver | None = None
        self.local: LocalLeader | None = None
        self.access: LeaderAccess | None = None
        self.kv: LeaderKV | None = None

    def crash_now(self) -> None:
        """Crash from inside one of this incarnation's own tasks."""
        if self.machine.process is self:
            self.machine.oracle.say(f"FAULT crash-persisting {self.name} (after sending, "
                                    "before persisting)")
            asyncio.get_running_loop().create_task(self.machine.crash())

    async def _run(self) -> None:
        machine, spec = self.machine, self.machine.spec
        settings = machine.settings
        host = MultiRaft(self.name, machine.store, settings.host,
                         clock_ms=machine.clock.wall_clock_ms, seed=self._seed)
        for partition in range(spec.partitions):
            voters = tuple(spec.ring.preference_list(partition, spec.replicas))
            if self.name in voters:
                host.add_group(partition, voters)
        self.host = host
        access: LeaderAccess | None = None

        def on_leader_change(change: LeaderChange) -> None:
            machine.oracle.leader_changed(self.name, change)
            assert access is not None
            access.learn(change.group, change.leader, change.term)

        driver = RaftDriver(
            host, machine.store, SimRaftLinks(self, self._network),
            _Ticks(self, IntervalTicker(machine.tick_seconds)), on_leader_change=on_leader_change,
            writer=lambda store: SimPassWriter(self, store))
        self.driver = driver
        self.local = LocalLeader(self.name, driver)
        access = LeaderAccess(spec, SimLeaderPeers(self, self._network, self.local),
                              self_id=self.name, leader_timeout=settings.leader_timeout,
                              clock=machine.clock)
        self.access = access
        self.kv = LeaderKV(access, spec, LIMITS)
        async with driver:
            self._ready = True
            await asyncio.Event().wait()  # until killed

    # -- what the node serves to its peers ---------------------------------------------

    def receive(self, data: bytes) -> None:
        """An envelope from a peer, in its wire form."""
        assert self.driver is not None
        try:
            envelope = wire.decode(data)
        except KVStoreError as exc:
            log.warning("refused a Raft envelope: %s", exc)
            return
        self.driver.receive(envelope)

    def unreachable(self, peer: NodeId) -> None:
        if self.driver is not None and self.running:
            self.driver.report_unreachable(peer)

    async def serve_leader_write(self, partition: int, command: Command,
                                 timeout: float) -> _Answer[Outcome]:
        assert self.local is not None
        return await _answer(self.local.write(
            partition, command, min(timeout, self.machine.settings.max_request_timeout)))

    async def serve_leader_read(self, partition: int, key: bytes, stale: bool,
                                timeout: float) -> _Answer[ReadValue]:
        assert self.local is not None
        if stale:
            return _Answer(self.local.read_stale(partition, key))
        return await _answer(self.local.read(
            partition, key, min(timeout, self.machine.settings.max_request_timeout)))

    # -- the KV service, as the clients call it ---------------------------------------

    def leader_of(self, partition: int) -> str | None:
        """The leader this node knows of `partition` (as its topology says)."""
        return None if self.access is None else self.access.book.leader_of(partition)

    async def serve_get(self, request: kv_pb2.GetRequest,
                        timeout: float) -> kv_pb2.GetResponse:
        assert self.kv is not None
        return await self.kv.get(request, timeout)

    async def serve_put(self, request: kv_pb2.PutRequest,
                        timeout: float) -> kv_pb2.PutResponse:
        assert self.kv is not None
        return await self.kv.put(request, timeout)

    async def serve_delete(self, request: kv_pb2.DeleteRequest,
                           timeout: float) -> kv_pb2.DeleteResponse:
        assert self.kv is not None
        return await self.kv.delete(request, timeout)


class _Ticks:
    """The driver's `Ticker`: the machine's interval, but none while the
    process is paused, if a pause stops its clock."""

    def __init__(self, process: LeaderProcess, interval: IntervalTicker) -> None:
        self._process = process
        self._interval = interval

    async def wait(self) -> None:
        while True:
            await self._interval.wait()
            if not (self._process.paused and self._process.machine.settings.pause_stops_clock):
                return


@dataclass(frozen=True)
class _Answer(Generic[T]):
    """A forwarded operation's answer, or the node's refusal: carried as a
    value, so that whatever the network itself raises means no answer."""

    result: T | None = None
    error: KVStoreError | None = None

    def unwrap(self) -> T:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


async def _answer(work: Awaitable[T]) -> _Answer[T]:
    try:
        return _Answer(await work)
    except KVStoreError as exc:
        return _Answer(error=exc)


class SimRaftLinks:
    """The driver's `Transport` (as `RaftLinks`): each envelope a one-way
    message in its wire form; one that finds its receiver not running tells
    the host the peer is unreachable once the refusal comes back."""

    def __init__(self, process: LeaderProcess, network: Network) -> None:
        self._process = process
        self._network = network

    def send(self, envelope: Envelope) -> None:
        data = wire.encode(envelope)
        peer = envelope.to
        self._process.machine.oracle.sent(len(envelope.messages) + len(envelope.heartbeats)
                                          + len(envelope.heartbeat_responses))
        self._network.post(self._process, peer, lambda host: host.receive(data),
                           refused=lambda: self._process.unreachable(peer))


class SimLeaderPeers:
    """`access.LeaderOps` for one process (as `LeaderPeers`): its own
    `LocalLeader` directly, another node across the network; a node's
    refusal raises its error, no answer raises `Unreachable`."""

    def __init__(self, process: LeaderProcess, network: Network, local: LocalLeader) -> None:
        self._process = process
        self._network = network
        self._local = local

    async def write(self, node: NodeId, partition: int, command: Command,
                    timeout: float) -> Outcome:
        if node == self._local.node_id:
            return await self._local.write(partition, command, timeout)
        answer: _Answer[Outcome] = await self._ask(
            node, "leader_write", timeout,
            lambda p: p.serve_leader_write(partition, command, timeout))
        return answer.unwrap()

    async def read(self, node: NodeId, partition: int, key: bytes, stale: bool,
                   timeout: float) -> ReadValue:
        if node == self._local.node_id:
            if stale:
                return self._local.read_stale(partition, key)
            return await self._local.read(partition, key, timeout)
        answer: _Answer[ReadValue] = await self._ask(
            node, "leader_read", timeout,
            lambda p: p.serve_leader_read(partition, key, stale, timeout))
        return answer.unwrap()

    async def _ask(self, node: NodeId, what: str, timeout: float,
                   work: Callable[[Any], Awaitable[T]]) -> T:
        try:
            return await self._network.call(self._process, node, work,
                                            timeout + ANSWER_GRACE_SECONDS, what)
        except KVStoreError as error:
            raise Unreachable(f"{node}: {error}") from error


class SimPassWriter:
    """The driver's `PassWriter`: a pass's write takes a seeded commit time
    of virtual time, then reaches the disk at once and whole (a crash in
    between loses all of it), and is shown to the oracle."""

    def __init__(self, process: LeaderProcess, store: RaftStore) -> None:
        self._process = process
        self._store = store

    async def write(self, batch: PassWrite) -> PassResult:
        process = self._process
        if process.crash_at_next_write:
            process.crash_now()
            await asyncio.Event().wait()  # the crash cancels this
        await asyncio.sleep(process.machine.commit_seconds())
        result = self._store.write(batch)
        assert process.host is not None
        process.machine.oracle.persisted(process.name, process.host, process.machine.store,
                                         batch, result)
        return result

    async def close(self) -> None:
        pass
