"""A simulated storage node: the production leaderless code, wired as
`kvstore.server.node` wires it, over the simulated network and an
in-memory engine.

`SimNode` is the machine: a name, a disk (the `MemoryEngine`, which
outlives crashes), a wall clock with its own skew, and the process running
on it now, if any. Each start makes a new `NodeProcess` incarnation: its
Merkle trees rebuilt from the disk, a `LocalReplica` over a `SimStore`, and
the real `Liveness` (phi accrual on virtual time), `HintReplayer`,
`AntiEntropy` with its `TombstoneCollector`, and `Coordinator`, all reaching
the other nodes through `SimPeers`. A crash cancels every task of the
incarnation at once and forgets everything it held in memory; a wipe also
replaces the disk with an empty one.

What differs from a real node, on purpose: no gRPC (`SimPeers` and the
`serve_*` methods stand in for `kvstore.rpc.peers.Peers` and
`ReplicaService`, one message per operation instead of batches), no
metrics, and no KV service: the simulated clients call the coordinator
directly, across the network.
"""

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from chaos.sim.network import Network
from chaos.sim.process import SimProcess
from chaos.sim.store import SimStore
from kvstore.causality.hlc import HybridLogicalClock
from kvstore.causality.versions import DVVSet
from kvstore.health.liveness import Liveness
from kvstore.leaderless.anti_entropy import AntiEntropy, ReplicaTrees
from kvstore.leaderless.coordinator import Coordinator
from kvstore.leaderless.handoff import HintReplayer
from kvstore.leaderless.hints import HintPolicy
from kvstore.leaderless.replica import LocalReplica
from kvstore.leaderless.tombstones import TombstoneCollector
from kvstore.placement.membership import ClusterSpec
from kvstore.storage.memory_engine import MemoryEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

# Wall clocks start here (2027-01-15), so timestamps look like real ones.
EPOCH_MS = 1_800_000_000_000


@dataclass(frozen=True)
class NodeSettings:
    """The node's configuration, scaled down so a run exercises every loop."""

    call_timeout: float = 0.5  # one replica operation (the nodes' replica_timeout)
    heartbeat_interval: float = 0.5  # as in production
    anti_entropy_interval: float = 1.0
    anti_entropy_keys_per_second: float = 2000.0
    hint_replay_interval: float = 0.5
    hint_replay_rate: float = 500.0
    tombstone_grace_seconds: float = 2.0
    request_id_ttl_ms: int = 600_000
    min_commit_seconds: float = 0.0005
    max_commit_seconds: float = 0.003


class SimClock:
    """A node's clocks on virtual time: monotonic is the loop's time; the
    wall clock is that plus the node's skew."""

    def __init__(self, skew_ms: int) -> None:
        self.skew_ms = skew_ms

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def wall_clock_ms(self) -> int:
        return EPOCH_MS + self.skew_ms + int(asyncio.get_running_loop().time() * 1000)


class SimNode:
    def __init__(self, node_id: str, spec: ClusterSpec, network: Network,
                 settings: NodeSettings, rng: random.Random, skew_ms: int) -> None:
        self.node_id = node_id
        self.spec = spec
        self.clock = SimClock(skew_ms)
        self.settings = settings
        self._network = network
        self._rng = rng
        self.engine = self._new_disk()
        self.process: NodeProcess | None = None
        self.starts = 0

    def _new_disk(self) -> MemoryEngine:
        return MemoryEngine(request_id_ttl_ms=self.settings.request_id_ttl_ms,
                            clock_ms=self.clock.wall_clock_ms)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> None:
        assert self.process is None, f"{self.node_id} is running already"
        self.starts += 1
        self.process = NodeProcess(self, self._network, self._rng)
        self.process.start()

    async def crash(self) -> None:
        """Kill the process: it stops at once, and only what it committed stays."""
        process, self.process = self.process, None
        assert process is not None, f"{self.node_id} is not running"
        await process.kill()

    def wipe(self) -> None:
        """The disk is lost (replaced by an empty one); only while crashed."""
        assert self.process is None, "wipe a crashed node"
        self.engine = self._new_disk()

    def pause(self) -> None:
        assert self.process is not None
        self.process.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.paused = False
        self._network.resume(self.node_id)


class NodeProcess(SimProcess):
    """One incarnation of a node: everything it holds in memory."""

    def __init__(self, node: SimNode, network: Network, rng: random.Random) -> None:
        super().__init__(node.node_id, network)
        self.node = node
        self._rng = rng
        self.coordinator: Coordinator | None = None
        self.replica: LocalReplica | None = None
        self.trees = ReplicaTrees()

    async def _run(self) -> None:
        node, settings, spec = self.node, self.node.settings, self.node.spec
        clock = node.clock
        replicated = spec.replicas > 1
        if replicated:
            self.trees.rebuild(node.engine, range(spec.partitions))
        commit_seconds = lambda: self._rng.uniform(  # noqa: E731
            settings.min_commit_seconds, settings.max_commit_seconds)
        async with SimStore(node.engine, commit_seconds,
                            on_applied=self.trees.track if replicated else None) as store:
            replica = LocalReplica(
                node.node_id, store, HybridLogicalClock(clock.wall_clock_ms), spec.partitions,
                last_write_wins=spec.last_write_wins,
                hint_policy=HintPolicy(replay_rate_per_second=settings.hint_replay_rate))
            replica.load_hints()
            self.replica = replica
            peers = SimPeers(self, self._network, settings.call_timeout)
            async with Liveness(
                peers.pingers(), clock=clock, interval=settings.heartbeat_interval,
            ) as liveness, HintReplayer(
                replica, peers, liveness.is_up, clock=clock,
                rate_per_second=settings.hint_replay_rate,
                interval=settings.hint_replay_interval,
            ), AntiEntropy(
                node.node_id, spec, replica, self.trees, peers, liveness.is_up, clock=clock,
                interval=settings.anti_entropy_interval,
                keys_per_second=settings.anti_entropy_keys_per_second,
                collector=TombstoneCollector(
                    node.node_id, spec, replica, self.trees.trees, self.trees.tombstoned, peers,
                    liveness.is_up, clock=clock,
                    grace_seconds=settings.tombstone_grace_seconds),
            ), Coordinator(spec, peers, self_id=node.node_id,
                           is_up=liveness.is_up) as coordinator:
                self.coordinator = coordinator
                self.is_up = liveness.is_up
                self._ready = True
                await asyncio.Event().wait()  # until killed

    # -- what the replica service answers -----------------------------------------

    @property
    def _replica(self) -> LocalReplica:
        assert self.replica is not None
        return self.replica

    async def serve_read(self, key: bytes) -> DVVSet | None:
        return self._replica.read(key)

    async def serve_apply(self, key: bytes, value: bytes, tombstone: bool, context: bytes,
                          request_id: bytes) -> DVVSet:
        state, _duplicate = await self._replica.apply(key, value, tombstone, context, request_id)
        return state

    async def serve_merge(self, key: bytes, state: DVVSet, request_id: bytes,
                          hint_for: str) -> None:
        if hint_for:
            await self._replica.store_hint(hint_for, key, state)
        else:
            await self._replica.merge(key, state, request_id)

    async def serve_tree_hashes(self, partition: int, level: int,
                                indices: list[int]) -> list[bytes]:
        return self.trees.trees.tree(partition).node_hashes(level, indices)

    async def serve_roots(self, partitions: list[int]) -> list[bytes]:
        return [self.trees.trees.root(partition) for partition in partitions]

    async def serve_bucket(self, partition: int, bucket: int) -> dict[bytes, bytes]:
        return dict(self.trees.trees.tree(partition).keys_in_bucket(bucket))

    async def serve_purge(self, key: bytes, digest: bytes) -> bool:
        return await self._replica.purge(key, digest)

    async def serve_hints_held(self, partition: int) -> int:
        return self._replica.hints_held(partition)

    async def serve_ping(self) -> None:
        return None


class SimPeers:
    """`PeerOps` for one process: its own replica directly (as `Peers` does),
    every other node across the network."""

    def __init__(self, process: NodeProcess, network: Network, timeout: float) -> None:
        self._process = process
        self._network = network
        self._timeout = timeout
        self._self = process.name

    def _call(self, node_id: str, what: str,
              work: Callable[[NodeProcess], Awaitable[T]]) -> Awaitable[T]:
        return self._network.call(self._process, node_id, work, self._timeout, what)

    def pingers(self) -> Mapping[str, Callable[[], Awaitable[None]]]:
        others = [m.node_id for m in self._process.node.spec.members if m.node_id != self._self]
        return {node_id: functools.partial(self._call, node_id, "ping", NodeProcess.serve_ping)
                for node_id in others}

    async def read(self, node_id: str, key: bytes) -> DVVSet | None:
        if node_id == self._self:
            return await self._process.serve_read(key)
        return await self._call(node_id, "read", lambda p: p.serve_read(key))

    async def apply(self, node_id: str, key: bytes, value: bytes, tombstone: bool,
                    context: bytes, request_id: bytes) -> DVVSet:
        if node_id == self._self:
            return await self._process.serve_apply(key, value, tombstone, context, request_id)
        return await self._call(node_id, "apply", lambda p: p.serve_apply(
            key, value, tombstone, context, request_id))

    async def merge(self, node_id: str, key: bytes, state: DVVSet,
                    request_id: bytes = b"", hint_for: str = "") -> None:
        if node_id == self._self:
            return await self._process.serve_merge(key, state, request_id, hint_for)
        return await self._call(node_id, "merge", lambda p: p.serve_merge(
            key, state, request_id, hint_for))

    async def tree_hashes(self, node_id: str, partition: int, level: int,
                          indices: list[int]) -> list[bytes]:
        return await self._call(node_id, "tree_hashes",
                                lambda p: p.serve_tree_hashes(partition, level, indices))

    async def roots(self, node_id: str, partitions: list[int]) -> list[bytes]:
        return await self._call(node_id, "roots", lambda p: p.serve_roots(partitions))

    async def bucket(self, node_id: str, partition: int, bucket: int) -> dict[bytes, bytes]:
        return await self._call(node_id, "bucket", lambda p: p.serve_bucket(partition, bucket))

    async def purge(self, node_id: str, key: bytes, digest: bytes) -> bool:
        return await self._call(node_id, "purge", lambda p: p.serve_purge(key, digest))

    async def hints_held(self, node_id: str, partition: int) -> int:
        return await self._call(node_id, "hints_held", lambda p: p.serve_hints_held(partition))
