"""Tombstone collection: removing a deleted key's tombstone once it can no
longer bring the deleted value back.

A tombstone is what orders a delete after the write it deleted. Remove it
while some copy of the older value survives anywhere, and that copy, handed
on later, reads as a fresh write: the deleted value comes back. So a
partition's tombstone older than the grace period is purged only when all of
these hold at once:

- every replica of the partition is up and, in the anti-entropy round just
  made, reported the same Merkle root as this one (they agree on every key);
- every key to purge is held by every replica in exactly this state (its
  bucket's digests are asked again just before the purge);
- every node of the cluster is up and keeps no hint for a key of the
  partition (a hint may carry the older value, for a replica that was down).

Then each other replica removes the key if its state is still exactly that
tombstone, and this one last: if anything fails midway, this replica still
has the tombstone and anti-entropy spreads it again. The grace period
covers what no check can see: a write still in flight from before the
delete (bounded by the request timeouts, seconds against an hour).

Only a partition's first replica collects, one partition per anti-entropy
round in turn, so replicas do not race each other to purge the same keys.
It reads only the keys that hold nothing but tombstones, which the node's
trees track as writes commit (`ReplicaTrees.tombstoned`): no partition scan.
"""

import logging
from collections.abc import Callable, Iterable, Mapping, Set

from kvstore.clock import Clock
from kvstore.errors import KVStoreError
from kvstore.placement.membership import ClusterSpec
from kvstore.leaderless.merkle import PartitionTrees
from kvstore.leaderless.peer_ops import PeerOps
from kvstore.leaderless.replica import LocalReplica, state_digest

log = logging.getLogger(__name__)


class TombstoneCollector:
    def __init__(self, node_id: str, spec: ClusterSpec, replica: LocalReplica,
                 trees: PartitionTrees, tombstoned: Callable[[int], Iterable[bytes]],
                 peers: PeerOps, is_up: Callable[[str], bool], *,
                 clock: Clock, grace_seconds: float = 3600.0) -> None:
        self._node_id = node_id
        self._replica = replica
        self._trees = trees
        self._tombstoned = tombstoned  # partition -> its keys holding only tombstones
        self._peers = peers
        self._is_up = is_up
        self._grace_ms = int(grace_seconds * 1000)
        self._clock = clock
        self._others = [m.node_id for m in spec.members if m.node_id != node_id]
        # The partitions this node is the first replica of, with their other replicas.
        self._led: list[tuple[int, list[str]]] = []
        for partition in range(spec.partitions):
            replicas = spec.ring.preference_list(partition, spec.replicas)
            if replicas[0] == node_id and len(replicas) > 1:
                self._led.append((partition, replicas[1:]))
        self._turn = 0

    async def collect_next(self, agreed: Mapping[int, Set[str]]) -> int:
        """Collect the next partition in turn if every other replica of it is
        in `agreed` (partition -> peers whose roots equalled this node's in
        the round just made); tombstones purged."""
        if not self._led:
            return 0
        partition, replicas = self._led[self._turn % len(self._led)]
        self._turn += 1
        if not set(replicas) <= agreed.get(partition, set()):
            return 0
        try:
            return await self.collect(partition, replicas)
        except KVStoreError as exc:
            log.info("tombstones of partition %d not collected yet: %s", partition, exc)
            return 0

    async def collect(self, partition: int, replicas: list[str]) -> int:
        """Purge the partition's expired tombstones that `replicas` (the
        other replicas) hold exactly, if no node keeps a hint for it; the
        number this replica purged. A peer failing midway raises KVStoreError
        and leaves the rest for a later turn."""
        expired = self._replica.expired_tombstones(
            self._tombstoned(partition), self._clock.wall_clock_ms() - self._grace_ms)
        if not expired or not await self._no_hints_anywhere(partition):
            return 0
        tree = self._trees.tree(partition)
        buckets: dict[tuple[str, int], dict[bytes, bytes]] = {}
        purged = 0
        for key, record in expired:
            digest = state_digest(record.value)
            bucket = tree.bucket_of(key)
            for peer in replicas:
                if (peer, bucket) not in buckets:
                    buckets[(peer, bucket)] = await self._peers.bucket(peer, partition, bucket)
            if any(buckets[(peer, bucket)].get(key) != digest for peer in replicas):
                continue
            for peer in replicas:
                await self._peers.purge(peer, key, digest)
            if await self._replica.purge(key, digest):
                purged += 1
        return purged

    async def _no_hints_anywhere(self, partition: int) -> bool:
        if self._replica.hints_held(partition):
            return False
        for node_id in self._others:
            if not self._is_up(node_id) or await self._peers.hints_held(node_id, partition):
                return False
        return True
