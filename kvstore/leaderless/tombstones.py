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
  bucket's digests are asked during the collection, just before the purges);
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

The rule itself is `kvstore.leaderless.purge_plan`, pure and property
tested: given what the collector learned (the round's roots, who is up,
this replica's expired tombstones, the hints each node keeps, the other
replicas' bucket digests), the purges to make, in order, and what to ask
next; a fact not learned never allows a purge. `TombstoneCollector` only
answers those questions and makes the purges; a peer that fails to answer
ends the partition's turn.
"""

import logging
from collections.abc import Callable, Iterable, Mapping, Set

from kvstore.clock import Clock
from kvstore.errors import KVStoreError
from kvstore.placement.membership import ClusterSpec
from kvstore.leaderless.merkle import PartitionTrees
from kvstore.leaderless.peer_ops import PeerOps
from kvstore.leaderless.purge_plan import (
    Answer, BucketAt, ExpiredHere, HintsAt, PurgeFacts, Question, Tombstone, obstacle, plan,
    wanted,
)
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
        self._others = tuple(m.node_id for m in spec.members if m.node_id != node_id)
        # The partitions this node is the first replica of, with their other replicas.
        self._led: list[tuple[int, list[str]]] = []
        for partition in range(spec.partitions):
            replicas = spec.ring.preference_list(partition, spec.replicas)
            if replicas[0] == node_id and len(replicas) > 1:
                self._led.append((partition, replicas[1:]))
        self._turn = 0

    async def collect_next(self, agreed: Mapping[int, Set[str]]) -> int:
        """Collect the next partition in turn, given `agreed` (partition ->
        peers whose roots equalled this node's in the round just made);
        tombstones purged."""
        if not self._led:
            return 0
        partition, replicas = self._led[self._turn % len(self._led)]
        self._turn += 1
        try:
            return await self.collect(partition, replicas, agreed.get(partition, frozenset()))
        except KVStoreError as exc:
            log.info("tombstones of partition %d not collected yet: %s", partition, exc)
            return 0

    async def collect(self, partition: int, replicas: list[str],
                      agreed: Set[str] | None = None) -> int:
        """Purge what the plan allows of the partition's expired tombstones;
        the number this replica purged. `replicas` are the other replicas;
        `agreed` those whose roots equalled this node's in the round just
        made (None: the caller vouches for all of them). A peer failing
        midway raises KVStoreError and leaves the rest for a later turn."""
        facts = PurgeFacts(
            self._node_id, tuple(replicas), self._others,
            up=frozenset(node_id for node_id in self._others if self._is_up(node_id)),
            agreed=frozenset(replicas if agreed is None else agreed))
        while questions := wanted(facts):
            facts = facts.learned([(q, await self._answer(partition, q)) for q in questions])
        if facts.expired and (reason := obstacle(facts)) is not None:
            log.debug("%d expired tombstones of partition %d kept: %s",
                      len(facts.expired), partition, reason)
        purged = 0
        for purge in plan(facts):
            if purge.node_id == self._node_id:  # last for its key: the plan's order
                purged += await self._replica.purge(purge.key, purge.digest)
            else:
                await self._peers.purge(purge.node_id, purge.key, purge.digest)
        return purged

    async def _answer(self, partition: int, question: Question) -> Answer:
        match question:
            case ExpiredHere():
                tree = self._trees.tree(partition)
                cutoff_ms = self._clock.wall_clock_ms() - self._grace_ms
                return [Tombstone(key, state_digest(record.value), tree.bucket_of(key))
                        for key, record in self._replica.expired_tombstones(
                            self._tombstoned(partition), cutoff_ms)]
            case HintsAt(node_id=node_id) if node_id == self._node_id:
                return self._replica.hints_held(partition)
            case HintsAt(node_id=node_id):
                return await self._peers.hints_held(node_id, partition)
            case BucketAt(node_id=node_id, bucket=bucket):
                return await self._peers.bucket(node_id, partition, bucket)
