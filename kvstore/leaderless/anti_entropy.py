"""Merkle anti-entropy: replicas of a partition compare trees and repair the
keys that differ, so replicas converge without anyone reading the keys.

`ReplicaTrees` keeps one Merkle tree (`kvstore.leaderless.merkle`) per partition of
this node, updated incrementally on the event loop as each write commits (in
commit order) and rebuilt from LMDB at start. Every `interval` seconds
`AntiEntropy` runs a round: it asks each other node that is up for the roots
of all the partitions both replicate (one call per peer), and where a root
differs (and `ExchangePlanner` picks it: differences that settled since the
last round, and one still moving) descends into differing branches,
fetches the differing buckets' keys, and for each differing key merges both
states and writes the merge to whichever side lacked something. So replicas
that agree cost one hash per partition and round, and a settled difference
is repaired within two rounds. Repairs are rate limited. Every task is
owned by its task group and stops on exit.
"""

import logging
from collections.abc import Callable

from kvstore.background import Background
from kvstore.causality import versions
from kvstore.clock import Clock
from kvstore.errors import DataLoss, FailedPrecondition, KVStoreError
from kvstore.leaderless.hints import ReplayLimiter
from kvstore.placement.membership import ClusterSpec
from kvstore.leaderless.merkle import MerkleTree, PartitionTrees, TreeComparison, diff_keys
from kvstore.leaderless.peer_ops import PeerOps
from kvstore.leaderless.replica import LocalReplica, state_digest
from kvstore.schedule import pause
from kvstore.storage.engine import Change, Engine, Write, WriteResult
from kvstore.leaderless.tombstones import TombstoneCollector
from kvstore.causality.versions import DVVSet

log = logging.getLogger(__name__)


class ReplicaTrees:
    """The node's Merkle trees, and which keys hold only tombstones (so
    tombstone collection reads those keys, not whole partitions)."""

    def __init__(self) -> None:
        self.trees = PartitionTrees()
        self._tombstones: dict[int, set[bytes]] = {}  # partition -> tombstone-only keys

    def rebuild(self, engine: Engine, partitions: range) -> None:
        """From what the engine holds (at start); a corrupt record is left out, so
        the next exchange finds it and repairs it."""
        for partition in partitions:
            entries = []
            for key, record in engine.scan_partition(partition, on_corrupt=_left_out):
                entries.append((key, state_digest(record.value)))
                if record.tombstone:
                    self._tombstones.setdefault(partition, set()).add(key)
            if entries:
                self.trees.replace(partition, MerkleTree.build(entries))

    def track(self, change: Change, result: WriteResult) -> None:
        """Called by the store on the event loop, in commit order, per applied write."""
        if isinstance(change, Write) and result.applied:
            tree = self.trees.tree(change.partition)
            record = result.record  # None: the key was purged
            tree.update(change.key, tree.get(change.key),
                        None if record is None else state_digest(record.value))
            if record is not None and record.tombstone:
                self._tombstones.setdefault(change.partition, set()).add(change.key)
            else:
                self._tombstones.get(change.partition, set()).discard(change.key)

    def tombstoned(self, partition: int) -> list[bytes]:
        """The keys of `partition` whose state is only tombstones, now."""
        return sorted(self._tombstones.get(partition, ()))


class ExchangePlanner:
    """Which differing partitions a round exchanges (pure).

    Under load, replicas' roots differ most of the time only because the
    latest writes are still on their way to the other replicas; descending
    into every such partition every round costs far more than it repairs.
    So a round exchanges every *settled* difference, one seen unchanged (the
    same local and remote roots) since the previous round: no write touched
    either side, so it is real (a replica that was down, a wiped disk) and
    it is repaired within two rounds. Of the partitions still moving, it
    exchanges just one, the one exchanged longest ago, so a partition that
    never stops taking writes is still compared, in turn.
    """

    def __init__(self) -> None:
        self._round = 0
        self._seen: dict[tuple[str, int], tuple[bytes, bytes]] = {}  # last round's roots
        self._last_exchange: dict[tuple[str, int], int] = {}  # (peer, partition) -> round
        self._settled: list[tuple[str, int]] = []
        self._moving: list[tuple[str, int]] = []

    def start_round(self) -> None:
        self._round += 1
        self._settled, self._moving = [], []

    def observe(self, peer: str, partition: int, local_root: bytes, remote_root: bytes) -> bool:
        """Record one comparison of this round; True if the roots agree."""
        pair = (peer, partition)
        previous = self._seen.get(pair)
        self._seen[pair] = (local_root, remote_root)
        if local_root == remote_root:
            return True
        (self._settled if previous == (local_root, remote_root) else self._moving).append(pair)
        return False

    def exchanges(self) -> list[tuple[int, str]]:
        """(partition, peer) to exchange this round: every settled difference
        and the moving one exchanged longest ago."""
        chosen = list(self._settled)
        if self._moving:
            chosen.append(min(self._moving, key=lambda pair: self._last_exchange.get(pair, 0)))
        for pair in chosen:
            self._last_exchange[pair] = self._round
        return [(partition, peer) for peer, partition in chosen]


class AntiEntropy(Background):
    def __init__(self, node_id: str, spec: ClusterSpec, replica: LocalReplica,
                 trees: ReplicaTrees, peers: PeerOps, is_up: Callable[[str], bool], *,
                 clock: Clock, interval: float = 1.0, keys_per_second: float = 1000.0,
                 on_round: Callable[[], None] = lambda: None,
                 on_exchange: Callable[[], None] = lambda: None,
                 on_repaired: Callable[[int], None] = lambda count: None,
                 on_bytes_sent: Callable[[int], None] = lambda count: None,
                 collector: TombstoneCollector | None = None) -> None:
        super().__init__()
        self._on_bytes_sent = on_bytes_sent
        self._collector = collector
        self._node_id = node_id
        self._spec = spec
        self._replica = replica
        self._trees = trees
        self._peers = peers
        self._is_up = is_up
        self._interval = interval
        self._clock = clock
        self._on_round = on_round
        self._on_exchange = on_exchange
        self._on_repaired = on_repaired
        self._limiter = ReplayLimiter(keys_per_second, max(1.0, keys_per_second))
        self._partitions = [p for p in range(spec.partitions)
                            if node_id in spec.ring.preference_list(p, spec.replicas)]
        self._shared = _shared_partitions(node_id, spec)
        self._planner = ExchangePlanner()

    def _start(self) -> None:
        if self._partitions and self._spec.replicas > 1:
            self._tasks.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await pause(self._interval, self._stopping)
            if self._stopping.is_set():
                return
            try:
                await self.run_round()
            except Exception:  # a bug must not take the node down; the next round retries
                log.exception("anti-entropy round failed")

    async def run_round(self) -> int:
        """Compare roots with every peer that is up, exchange the partitions
        the planner picks among those whose roots differ, then collect the
        tombstones of one partition on which all its replicas agreed; keys
        repaired."""
        repaired = 0
        agreed: dict[int, set[str]] = {}  # partition -> peers whose roots equalled ours
        self._planner.start_round()
        for peer, partitions in self._shared.items():
            if not self._is_up(peer) or self._stopping.is_set():
                continue
            try:
                roots = await self._peers.roots(peer, partitions)
            except KVStoreError as exc:
                log.info("anti-entropy roots from %s unavailable: %s", peer, exc)
                continue
            if len(roots) != len(partitions):
                log.warning("%s answered %d roots for %d partitions", peer, len(roots),
                            len(partitions))
                continue
            trees = self._trees.trees
            for partition, root in zip(partitions, roots):
                if self._planner.observe(peer, partition, trees.root(partition), root):
                    agreed.setdefault(partition, set()).add(peer)
        for partition, peer in self._planner.exchanges():
            if self._stopping.is_set():
                break
            repaired += await self._exchange_logged(partition, peer)
        if repaired:
            self._on_repaired(repaired)
        if self._collector is not None and not self._stopping.is_set():
            await self._collector.collect_next(agreed)
        self._on_round()
        return repaired

    async def repair_partition(self, partition: int) -> int:
        """Exchange with every other replica of `partition` that is up; keys
        repaired (`kvstore admin repair`)."""
        if partition not in self._partitions:
            raise FailedPrecondition(
                f"{self._node_id} holds no replica of partition {partition}; ask one that does")
        repaired = 0
        for peer in self._spec.ring.preference_list(partition, self._spec.replicas):
            if peer == self._node_id or not self._is_up(peer) or self._stopping.is_set():
                continue
            repaired += await self._exchange_logged(partition, peer)
        if repaired:
            self._on_repaired(repaired)
        return repaired

    async def _exchange_logged(self, partition: int, peer: str) -> int:
        """One exchange, counted; a peer failing midway is logged, and the
        next round tries again."""
        try:
            return await self._exchange(partition, peer)
        except (KVStoreError, ValueError) as exc:  # ValueError: a malformed answer
            log.info("anti-entropy of partition %d with %s stopped: %s", partition, peer, exc)
            return 0
        finally:
            self._on_exchange()

    async def _exchange(self, partition: int, peer: str) -> int:
        local = self._trees.trees.tree(partition)
        comparison = TreeComparison(local)
        while not comparison.done:
            level, indices = comparison.request
            comparison.receive(await self._peers.tree_hashes(peer, partition, level, indices))
        repaired = 0
        for bucket in comparison.differing_buckets:
            remote = await self._peers.bucket(peer, partition, bucket)
            for key in diff_keys(local.keys_in_bucket(bucket), remote):
                await pause(self._limiter.wait_time(self._clock.monotonic()), self._stopping)
                if self._stopping.is_set():
                    return repaired
                self._limiter.take(self._clock.monotonic())
                repaired += await self._repair_key(peer, key)
        return repaired

    async def _repair_key(self, peer: str, key: bytes) -> int:
        try:
            mine: DVVSet | None = self._replica.read(key)
        except DataLoss:
            mine = None  # corrupt here: the merge below replaces it
        theirs = await self._peers.read(peer, key)
        merged = _merge(mine, theirs, self._spec.last_write_wins)
        if merged is None:
            return 0
        if merged != mine:
            await self._replica.merge(key, merged)
        if merged != theirs:
            await self._peers.merge(peer, key, merged)
            self._on_bytes_sent(len(key) + len(versions.encode(merged)))
        return 1


def _merge(a: DVVSet | None, b: DVVSet | None, lww: bool) -> DVVSet | None:
    if a is None or b is None:
        return a if b is None else b
    return versions.lww_sync(a, b) if lww else versions.sync(a, b)


def _shared_partitions(node_id: str, spec: ClusterSpec) -> dict[str, list[int]]:
    """peer -> the partitions that both it and `node_id` replicate, in order."""
    shared: dict[str, list[int]] = {}
    for partition in range(spec.partitions):
        replicas = spec.ring.preference_list(partition, spec.replicas)
        if node_id in replicas:
            for peer in replicas:
                if peer != node_id:
                    shared.setdefault(peer, []).append(partition)
    return dict(sorted(shared.items()))


def _left_out(error: DataLoss) -> None:
    log.warning("left a corrupt record out of the Merkle tree: %s", error)
