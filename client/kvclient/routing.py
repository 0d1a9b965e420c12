"""Token-aware routing: from a `KV.Topology` answer, the addresses of the
replicas of a key, in preference order (as cassandra-driver's
TokenAwarePolicy sends each request to a replica of its token); in leader
mode, the partition's leader first, as the answering process knew it, and
then as answers name it (`with_leader`).

Pure: no I/O. The client fetches the topology, keeps the `RoutingTable`
built here, and asks it where each operation goes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kvclient.pb import kv_pb2
from kvclient.retry import AddressRotation

# The one key-to-partition scheme this client knows (KV.Topology's `hash`).
BLAKE2B_64_TOP_BITS = "blake2b-64-top-bits"


def partition_of(key: bytes, partitions: int) -> int:
    """`key`'s partition under BLAKE2B_64_TOP_BITS: the top log2(partitions)
    bits of its big-endian 64-bit BLAKE2b digest."""
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return digest >> (64 - partitions.bit_length() + 1)


@dataclass(frozen=True)
class RoutingTable:
    """Where each partition's replicas are reached, in preference order."""

    version: int
    role: str  # of the process that answered: "node" or "coordinator"
    addresses: tuple[str, ...]  # every member's, in the topology's order
    replicas: tuple[tuple[str, ...], ...]  # per partition: its replicas' addresses
    ids: tuple[str, ...]  # every member's id, parallel to `addresses`

    @classmethod
    def from_topology(cls, topology: kv_pb2.TopologyResponse) -> RoutingTable | None:
        """The table of `topology`; None when it cannot route by key (a hash
        scheme this client does not know, or an answer that does not hold
        together), so the client sends to any address instead."""
        partitions = len(topology.partitions)
        if topology.hash != BLAKE2B_64_TOP_BITS or partitions & (partitions - 1) or not partitions:
            return None
        address_of = {member.id: member.address for member in topology.members}
        try:
            replicas = tuple(tuple(address_of[node] for node in _leader_first(partition))
                             for partition in topology.partitions)
        except KeyError:
            return None  # a preference list names a node that is not a member
        if not all(replicas):
            return None
        return cls(topology.version, topology.role,
                   tuple(member.address for member in topology.members), replicas,
                   tuple(member.id for member in topology.members))

    def replicas_of(self, key: bytes) -> tuple[str, ...]:
        """The addresses of `key`'s replicas, the preferred (its write's origin) first."""
        return self.replicas[partition_of(key, len(self.replicas))]

    def with_leader(self, key: bytes, leader: str) -> RoutingTable:
        """This table with member `leader` first among `key`'s partition's
        replicas (leader mode: an answer named it the partition's leader);
        this very table when it is first already, or names no replica."""
        try:
            address = self.addresses[self.ids.index(leader)]
        except ValueError:
            return self
        partition = partition_of(key, len(self.replicas))
        replicas = self.replicas[partition]
        if address not in replicas or replicas[0] == address:
            return self
        moved = (address, *(a for a in replicas if a != address))
        return replace(self, replicas=(*self.replicas[:partition], moved,
                                       *self.replicas[partition + 1:]))

    def candidates(self, key: bytes, others: Sequence[str]) -> tuple[str, ...]:
        """Where a call on `key` may go, in order: its replicas, then the
        rest of `others` (for when none of the replicas can take it)."""
        first = self.replicas_of(key)
        return first + tuple(address for address in others if address not in first)


def _leader_first(partition: kv_pb2.TopologyPartition) -> list[str]:
    """A partition's replicas, its leader first (leader mode: writes and
    linearizable reads are served there without another hop)."""
    replicas = list(partition.replicas)
    if partition.leader in replicas:
        replicas.remove(partition.leader)
        replicas.insert(0, partition.leader)
    return replicas


class InOrder(AddressRotation):
    """A routed call's order over its candidates: always from the first (the
    key's preferred replica), moving on as `AddressRotation` does."""

    def first(self) -> int:
        return 0
