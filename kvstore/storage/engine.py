"""The storage seam: what a node needs from a durable key-value engine.

`Engine` is synchronous and owned by one writer thread (commits) plus any number
of readers; `kvstore.storage.store.Store` puts the async group-commit front on
it. Tests and a future engine swap the implementation behind this Protocol.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from kvstore.errors import DataLoss, KVStoreError
from kvstore.storage.record import Record

# Given the record currently stored under the key (None when there is none, or
# when the stored copy is corrupt), return the record to store, None to leave
# the key unchanged, or DELETE to remove it. Runs inside the commit
# transaction, in the writer thread: it must be pure and quick. It may raise a
# KVStoreError, which fails that write alone.
Decide = Callable[[Record | None], "Record | None | Delete"]


class Delete:
    """What `decide` returns to remove the key altogether (tombstone purge)."""


DELETE = Delete()


@dataclass(frozen=True, slots=True)
class Write:
    partition: int
    key: bytes
    decide: Decide
    # Client-chosen id; a write whose id was committed before (within the
    # engine's request-id TTL) is not applied again. b"" disables the check.
    request_id: bytes = b""


@dataclass(frozen=True, slots=True)
class StoreHint:
    """Keep `record` for `key` on behalf of node `target`, which is down
    (hinted handoff), until it can be handed to it. Hints are kept apart from
    the node's own data, in arrival order."""

    target: str
    key: bytes
    record: Record


@dataclass(frozen=True, slots=True)
class RemoveHint:
    """Forget the hint with sequence number `seq` (its target has it now)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Hint:
    seq: int
    target: str
    key: bytes
    record: Record

    @property
    def size(self) -> int:
        """Its key and stored state: what it holds in memory once read."""
        return len(self.key) + len(self.record.value)


# No bound on the bytes of a scan of hints.
UNBOUNDED = 1 << 62


# What a commit applies: a write to a key, or a change to the hints.
Change = Write | StoreHint | RemoveHint


@dataclass(frozen=True, slots=True)
class WriteResult:
    # The record now stored under the key. For a duplicate, the version and
    # timestamp of the original write (value and tombstone not kept).
    record: Record | None
    applied: bool  # False when decide returned None or the write was a duplicate
    duplicate: bool  # True when request_id had been committed before
    hint_seq: int = -1  # a stored hint's sequence number


class Engine(Protocol):
    def read(self, partition: int, key: bytes) -> Record | None:
        """The stored record (tombstones included); DataLoss if corrupt."""
        ...

    def scan_partition(self, partition: int, *,
                       on_corrupt: Callable[[DataLoss], None] | None = None
                       ) -> Iterator[tuple[bytes, Record]]:
        """(user key, record) for every key of `partition` (tombstones
        included), each key once. Not one snapshot: keys written during the
        scan may or may not appear. A corrupt record raises DataLoss naming
        its key, which ends the scan; with `on_corrupt`, it is passed the
        DataLoss and the scan goes on."""
        ...

    def commit(self, writes: Sequence[Change]) -> list[WriteResult | KVStoreError]:
        """Apply writes in order in one transaction and make it durable before
        returning. One result per write, in order. A full store fails every
        write of the batch with ResourceExhausted and stays readable. A
        StoreHint's result carries the hint's sequence number in `hint_seq`."""
        ...

    def scan_hints(self, after: int = -1, limit: int = 256,
                   max_bytes: int = UNBOUNDED) -> list[Hint]:
        """Up to `limit` hints with sequence numbers above `after`, oldest
        first, stopping before one that would take their sizes past
        `max_bytes` (the first is always taken, however large)."""
        ...

    def size_bytes(self) -> int:
        """Bytes the database occupies on disk."""
        ...

    def close(self) -> None: ...


class DurableStore(Protocol):
    """What a replica needs from its store: writes answered once durable,
    and reads. `kvstore.storage.store.Store` (group commit in a thread) is
    the production one; the simulation has its own on virtual time."""

    async def write(self, write: Change) -> WriteResult:
        """The write's result once its transaction is durable; its KVStoreError if it failed."""
        ...

    def read(self, partition: int, key: bytes) -> Record | None: ...

    def scan_hints(self, after: int = -1, limit: int = 256,
                   max_bytes: int = UNBOUNDED) -> list[Hint]: ...


class CommitObserver(Protocol):
    """Told about every commit (metrics implement this)."""

    def observe_commit(self, batch_size: int, seconds: float) -> None: ...
