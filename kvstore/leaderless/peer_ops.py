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

Each returns an awaitable of its outcome, not necessarily a coroutine: the
gRPC transport returns asyncio Futures (settled by the link when the answer
arrives, so the coordinator follows them with callbacks and spends no task
per replica and operation), a simulation returns coroutines. Callers that
need a Future take a Future as it is and run anything else as a task (see
`kvstore.leaderless.coordinator`); the others simply await.
"""

from collections.abc import Awaitable
from typing import Protocol

from kvstore.causality.versions import DVVSet


class PeerOps(Protocol):
    def read(self, node_id: str, key: bytes) -> Awaitable[DVVSet | None]:
        """The replica's state for `key`; None if it holds none."""
        ...

    def apply(self, node_id: str, key: bytes, value: bytes, tombstone: bool,
              context: bytes, request_id: bytes) -> Awaitable[DVVSet]:
        """Have the replica add a client's write with a new dot of its own
        (it is the write's origin); the state that resulted."""
        ...

    def merge(self, node_id: str, key: bytes, state: DVVSet,
              request_id: bytes = b"", hint_for: str = "") -> Awaitable[None]:
        """Merge `state` into the replica; with `hint_for`, have it keep the
        state as a durable hint for that (down) node instead."""
        ...

    def tree_hashes(self, node_id: str, partition: int, level: int,
                    indices: list[int]) -> Awaitable[list[bytes]]:
        """Hashes of nodes of the replica's Merkle tree of `partition`."""
        ...

    def roots(self, node_id: str, partitions: list[int]) -> Awaitable[list[bytes]]:
        """The roots of the replica's Merkle trees of `partitions`, in that order."""
        ...

    def bucket(self, node_id: str, partition: int, bucket: int) -> Awaitable[dict[bytes, bytes]]:
        """key -> state digest of one bucket of the replica's tree of `partition`."""
        ...

    def purge(self, node_id: str, key: bytes, digest: bytes) -> Awaitable[bool]:
        """Have the replica drop `key` if it holds exactly the tombstone
        state whose digest is `digest`; True if it did."""
        ...

    def hints_held(self, node_id: str, partition: int) -> Awaitable[int]:
        """How many hints the node keeps (for any node) for keys of `partition`."""
        ...
