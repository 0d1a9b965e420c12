"""The seam between the leaderless algorithms and whatever carries their
calls: what they ask of a replica named by its node id.

The coordinator reads, applies and merges (this node included: the
transport serves its own replica directly); hinted handoff merges; Merkle
anti-entropy compares trees and buckets and merges; tombstone collection
reads bucket digests, counts hints and purges. `kvstore.rpc.peers.Peers`
implements it over gRPC links; a simulation or a test passes its own. Defined
here, on the side of the algorithms, so none of them imports the transport.
Every call may raise a KVStoreError (Unavailable, DeadlineExceeded, ...),
which the algorithm treats as that replica failing this once.
"""

from typing import Protocol

from kvstore.causality.versions import DVVSet


class PeerOps(Protocol):
    async def read(self, node_id: str, key: bytes) -> DVVSet | None:
        """The replica's state for `key`; None if it holds none."""
        ...

    async def apply(self, node_id: str, key: bytes, value: bytes, tombstone: bool,
                    context: bytes, request_id: bytes) -> DVVSet:
        """Have the replica add a client's write with a new dot of its own
        (it is the write's origin); the state that resulted."""
        ...

    async def merge(self, node_id: str, key: bytes, state: DVVSet,
                    request_id: bytes = b"", hint_for: str = "") -> None:
        """Merge `state` into the replica; with `hint_for`, have it keep the
        state as a durable hint for that (down) node instead."""
        ...

    async def tree_hashes(self, node_id: str, partition: int, level: int,
                          indices: list[int]) -> list[bytes]:
        """Hashes of nodes of the replica's Merkle tree of `partition`."""
        ...

    async def roots(self, node_id: str, partitions: list[int]) -> list[bytes]:
        """The roots of the replica's Merkle trees of `partitions`, in that order."""
        ...

    async def bucket(self, node_id: str, partition: int, bucket: int) -> dict[bytes, bytes]:
        """key -> state digest of one bucket of the replica's tree of `partition`."""
        ...

    async def purge(self, node_id: str, key: bytes, digest: bytes) -> bool:
        """Have the replica drop `key` if it holds exactly the tombstone
        state whose digest is `digest`; True if it did."""
        ...

    async def hints_held(self, node_id: str, partition: int) -> int:
        """How many hints the node keeps (for any node) for keys of `partition`."""
        ...
