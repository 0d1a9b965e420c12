"""Tombstone collection, on a real LMDB store with the other replicas and
nodes played by a fake: a tombstone is purged only when every replica holds
exactly it, every node is up and holds no hint for its partition, and its
grace period has passed; the other replicas are purged before this one."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kvstore import causal_context
from kvstore.causality import versions
from kvstore.leaderless.anti_entropy import ReplicaTrees
from kvstore.errors import Unavailable
from kvstore.causality.hlc import HybridLogicalClock
from kvstore.placement.membership import ClusterMember, ClusterSpec
from kvstore.leaderless.hints import HintPolicy
from kvstore.leaderless.replica import LocalReplica, state_digest
from kvstore.placement.ring import partition_of
from kvstore.storage.lmdb_engine import LmdbEngine
from kvstore.storage.store import Store
from kvstore.leaderless.tombstones import TombstoneCollector

pytestmark = pytest.mark.timeout(30)

HOUR_MS = 3_600_000
NOW_MS = 1_900_000_000_000  # the wall clock "now" of every test
SPEC = ClusterSpec(tuple(ClusterMember(f"n{i}", f"127.0.0.1:{7100 + i}") for i in (1, 2, 3, 4)),
                   replicas=3, partitions=8)


@dataclass
class FakePeers:
    """The other nodes: what each holds (key -> state digest), its hints per
    partition, and the purges asked of it, in order."""

    held: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    hints: dict[str, dict[int, int]] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)
    purges: list[tuple[str, bytes]] = field(default_factory=list)

    def _reach(self, node_id: str) -> None:
        if node_id in self.unreachable:
            raise Unavailable(f"{node_id} is unreachable")

    async def bucket(self, node_id: str, partition: int, bucket: int) -> dict[bytes, bytes]:
        self._reach(node_id)
        return dict(self.held.get(node_id, {}))  # more keys than the bucket's: harmless

    async def purge(self, node_id: str, key: bytes, digest: bytes) -> bool:
        self._reach(node_id)
        self.purges.append((node_id, key))
        held = self.held.get(node_id, {})
        if held.get(key) == digest:
            del held[key]
            return True
        return False

    async def hints_held(self, node_id: str, partition: int) -> int:
        self._reach(node_id)
        return self.hints.get(node_id, {}).get(partition, 0)


@dataclass
class SetClock:
    """Both readings follow one settable wall clock, in ms."""

    now_ms: list[int]

    def monotonic(self) -> float:
        return self.now_ms[0] / 1000

    def wall_clock_ms(self) -> int:
        return self.now_ms[0]


@dataclass
class Setup:
    replica: LocalReplica
    trees: ReplicaTrees
    peers: FakePeers
    down: set[str]
    clock_ms: list[int]  # [now]: the replica's HLC and the collector read it

    def collector(self, node_id: str = "n1", grace_seconds: float = 3600) -> TombstoneCollector:
        return TombstoneCollector(node_id, SPEC, self.replica, self.trees.trees,
                                  self.trees.tombstoned, self.peers, lambda n: n not in self.down,  # type: ignore[arg-type]
                                  clock=SetClock(self.clock_ms), grace_seconds=grace_seconds)

    async def deleted(self, key: bytes) -> tuple[int, list[str], bytes]:
        """Put then delete `key` here, an hour and a second ago; the key's
        partition, its other replicas, and the tombstone's digest."""
        now = self.clock_ms[0]
        self.clock_ms[0] = now - HOUR_MS - 1000
        state, _ = await self.replica.apply(key, b"deleted value", False, b"", b"")
        await self.replica.apply(key, b"", True, b"", b"")
        self.clock_ms[0] = now
        record = self.replica.read_record(key)
        assert record is not None and record.tombstone
        partition = partition_of(key, SPEC.partitions)
        return partition, SPEC.ring.preference_list(partition, 3)[1:], state_digest(record.value)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    engine = LmdbEngine(tmp_path / "db", map_size=1 << 26, sync=False)
    trees = ReplicaTrees()
    clock_ms = [NOW_MS]
    try:
        async with Store(engine, on_applied=trees.track) as store:
            replica = LocalReplica("n1", store, HybridLogicalClock(lambda: clock_ms[0]),
                                   SPEC.partitions)
            yield Setup(replica, trees, FakePeers(), set(), clock_ms)
    finally:
        engine.close()


def key_where(replicas_are: Callable[[list[str]], bool]) -> bytes:
    """A key whose partition's replicas pass `replicas_are`."""
    for i in range(10_000):
        key = b"key-%d" % i
        if replicas_are(SPEC.ring.preference_list(partition_of(key, SPEC.partitions), 3)):
            return key
    raise AssertionError("no such key")


def led_key() -> bytes:
    """A key whose partition n1 is the first replica of."""
    return key_where(lambda replicas: replicas[0] == "n1")


async def test_a_tombstone_every_replica_holds_is_purged_others_first(setup: Setup) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {peer: {key: digest} for peer in others}
    assert await setup.collector().collect(partition, others) == 1
    assert setup.replica.read_record(key) is None
    assert setup.trees.trees.tree(partition).get(key) is None  # the tree follows the purge
    assert setup.peers.purges == [(peer, key) for peer in others]
    assert all(key not in held for held in setup.peers.held.values())


async def test_a_replica_holding_another_state_keeps_every_copy(setup: Setup) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {others[0]: {key: digest}, others[1]: {key: b"the old value's digest"}}
    assert await setup.collector().collect(partition, others) == 0
    assert setup.peers.purges == []
    assert setup.replica.read_record(key) is not None


async def test_a_replica_missing_the_key_keeps_every_copy(setup: Setup) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {others[0]: {key: digest}}  # others[1] never got the delete nor the put
    assert await setup.collector().collect(partition, others) == 0
    assert setup.replica.read_record(key) is not None


async def test_a_young_tombstone_is_kept(setup: Setup) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {peer: {key: digest} for peer in others}
    assert await setup.collector(grace_seconds=7200).collect(partition, others) == 0
    assert setup.replica.read_record(key) is not None


@pytest.mark.parametrize("where", ["n4", "here"])
async def test_a_hint_for_the_partition_anywhere_keeps_the_tombstone(setup: Setup,
                                                                     where: str) -> None:
    # n4 replicates nothing of this partition, yet a hint it keeps may carry
    # the deleted value for a replica that was down: replayed after a purge,
    # it would bring the value back.
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {peer: {key: digest} for peer in others}
    outsider = next(m.node_id for m in SPEC.members if m.node_id not in (*others, "n1"))
    if where == "here":
        await setup.replica.store_hint(others[0], key, setup.replica.read(key))  # type: ignore[arg-type]
        assert setup.replica.hints_held(partition) == 1
    else:
        setup.peers.hints = {outsider: {partition: 1}}
    assert await setup.collector().collect(partition, others) == 0
    assert setup.replica.read_record(key) is not None and setup.peers.purges == []


async def test_a_node_down_or_unreachable_keeps_the_tombstone(setup: Setup) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {peer: {key: digest} for peer in others}
    outsider = next(m.node_id for m in SPEC.members if m.node_id not in (*others, "n1"))
    setup.down = {outsider}
    assert await setup.collector().collect(partition, others) == 0
    setup.down = set()
    setup.peers.unreachable = {outsider}
    assert await setup.collector().collect_next({partition: set(others)}) == 0
    assert setup.replica.read_record(key) is not None and setup.peers.purges == []


async def test_collect_next_needs_every_replica_to_have_agreed(setup: Setup) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {peer: {key: digest} for peer in others}
    collector = setup.collector()
    turns = len([p for p in range(SPEC.partitions)
                 if SPEC.ring.preference_list(p, 3)[0] == "n1"])
    for _ in range(turns):  # a whole turn round the partitions n1 leads
        assert await collector.collect_next({partition: {others[0]}}) == 0
    assert setup.replica.read_record(key) is not None
    purged = [await collector.collect_next({partition: set(others)}) for _ in range(turns)]
    assert sum(purged) == 1 and setup.replica.read_record(key) is None


async def test_only_the_first_replica_collects(setup: Setup) -> None:
    key = key_where(lambda replicas: "n1" in replicas[1:])
    partition, others, digest = await setup.deleted(key)
    setup.peers.held = {peer: {key: digest} for peer in SPEC.ring.preference_list(partition, 3)}
    collector = setup.collector()
    everyone = {p: {m.node_id for m in SPEC.members} for p in range(SPEC.partitions)}
    for _ in range(SPEC.partitions):
        assert await collector.collect_next(everyone) == 0
    assert setup.replica.read_record(key) is not None


async def test_a_context_read_before_the_delete_cannot_replace_a_write_after_the_purge(
        setup: Setup) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    # Read just before the purge.
    stale = causal_context.encode(versions.join(setup.replica.read(key)))
    setup.peers.held = {peer: {key: digest} for peer in others}
    assert await setup.collector().collect(partition, others) == 1
    await setup.replica.apply(key, b"written after the purge", False, b"", b"")
    state, _ = await setup.replica.apply(key, b"from a stale context", False, stale, b"")
    assert sorted(state.values) == [b"from a stale context", b"written after the purge"]


async def test_the_trees_know_which_keys_hold_only_tombstones(setup: Setup,
                                                              tmp_path: Path) -> None:
    key = led_key()
    partition, others, digest = await setup.deleted(key)
    assert setup.trees.tombstoned(partition) == [key]
    await setup.replica.apply(key, b"back", False, b"", b"")  # written again
    assert setup.trees.tombstoned(partition) == []
    await setup.replica.apply(key, b"", True, b"", b"")
    assert setup.trees.tombstoned(partition) == [key]
    record = setup.replica.read_record(key)
    assert record is not None and state_digest(record.value) != digest  # a new tombstone
    setup.peers.held = {peer: {key: state_digest(record.value)} for peer in others}
    setup.clock_ms[0] += 2 * HOUR_MS
    assert await setup.collector().collect(partition, others) == 1
    assert setup.trees.tombstoned(partition) == []


def test_a_rebuild_finds_the_keys_holding_only_tombstones(tmp_path: Path) -> None:
    from kvstore.storage.record import Record
    from kvstore.storage.engine import Write

    engine = LmdbEngine(tmp_path / "db", map_size=1 << 24, sync=False)
    try:
        engine.commit([Write(3, b"gone", lambda _: Record(b"", 1, True, b"")),
                       Write(3, b"here", lambda _: Record(b"", 1, False, b"v"))])
        trees = ReplicaTrees()
        trees.rebuild(engine, range(SPEC.partitions))
        assert trees.tombstoned(3) == [b"gone"] and trees.tombstoned(4) == []
        assert len(trees.trees.tree(3)) == 2
    finally:
        engine.close()


async def test_hints_stored_together_at_the_bound_are_all_counted_and_released(
        tmp_path: Path) -> None:
    """Two hints that pass the bound check together are both stored: both
    must be counted, or the partition's hint count never returns to zero and
    its tombstones are never collected."""
    engine = LmdbEngine(tmp_path / "db", map_size=1 << 26, sync=False)
    try:
        async with Store(engine) as store:
            replica = LocalReplica("n1", store, HybridLogicalClock(lambda: NOW_MS),
                                   SPEC.partitions, hint_policy=HintPolicy(max_hints_per_target=1))
            state = versions.update(None, versions.VersionVector(), "n2", b"v", False, 1)
            key = led_key()
            await asyncio.gather(replica.store_hint("n3", key, state),
                                 replica.store_hint("n3", key, state))
            partition = partition_of(key, SPEC.partitions)
            hints = replica.hints()
            assert len(hints) == 2 and replica.hint_book.pending("n3").count == 2
            for hint in hints:
                await replica.remove_hint(hint)
            assert replica.hints_held(partition) == 0
            assert replica.hint_book.pending("n3").count == 0
    finally:
        engine.close()
