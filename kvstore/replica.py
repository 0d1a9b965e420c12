"""What one storage node does with a key it holds: read it, write a new
version of it, delete it, and accept a record from a peer.

It turns requests into storage `Write`s whose `decide` function computes the
new record from the stored one inside the commit transaction, so a write's
version always builds on what is really stored. No gRPC here.
"""

from dataclasses import dataclass

from kvstore.hlc import HybridLogicalClock
from kvstore.record import Record
from kvstore.ring import partition_of
from kvstore.storage.engine import Write, WriteResult
from kvstore.storage.store import Store
from kvstore.versions import VersionVector


@dataclass(frozen=True, slots=True)
class ReadResult:
    found: bool
    siblings: list[bytes]
    context: bytes  # serialized CausalContext; returned for tombstones too
    timestamp: int


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    context: bytes
    timestamp: int
    duplicate: bool  # a retried request id: nothing was applied this time


class LocalReplica:
    def __init__(
        self, node_id: str, store: Store, clock: HybridLogicalClock, partitions: int
    ) -> None:
        self.node_id = node_id
        self._store = store
        self._clock = clock
        self._partitions = partitions

    def get(self, key: bytes) -> ReadResult:
        record = self.read_record(key)
        if record is None:
            return ReadResult(False, [], b"", 0)
        if record.tombstone:
            return ReadResult(False, [], record.version, record.timestamp)
        return ReadResult(True, [record.value], record.version, record.timestamp)

    async def put(self, key: bytes, value: bytes, context: bytes, request_id: bytes) -> WriteOutcome:
        return await self._write_version(key, value, False, context, request_id)

    async def delete(self, key: bytes, context: bytes, request_id: bytes) -> WriteOutcome:
        return await self._write_version(key, b"", True, context, request_id)

    def read_record(self, key: bytes) -> Record | None:
        return self._store.read(partition_of(key, self._partitions), key)

    async def write_record(self, key: bytes, record: Record) -> bool:
        """Store a peer's record unless ours is at least as new (last write wins)."""
        self._clock.observe(record.timestamp)

        def decide(current: Record | None) -> Record | None:
            if current is not None and current.timestamp >= record.timestamp:
                return None
            return record

        result = await self._store.write(Write(partition_of(key, self._partitions), key, decide))
        return result.applied

    async def _write_version(
        self, key: bytes, value: bytes, tombstone: bool, context: bytes, request_id: bytes
    ) -> WriteOutcome:
        seen = VersionVector.from_bytes(context)  # InvalidArgument before any work
        timestamp = self._clock.now()
        node_id = self.node_id

        def decide(current: Record | None) -> Record:
            # A single replica never holds concurrent versions: the new one
            # supersedes both what the client saw and what is stored.
            base = seen
            stamp = timestamp
            if current is not None:
                base = base.merge(VersionVector.from_bytes(current.version))
                stamp = max(stamp, current.timestamp + 1)
            return Record(base.increment(node_id).to_bytes(), stamp, tombstone, value)

        write = Write(partition_of(key, self._partitions), key, decide, request_id)
        return _outcome(await self._store.write(write))


def _outcome(result: WriteResult) -> WriteOutcome:
    assert result.record is not None  # decide always returns a record
    return WriteOutcome(result.record.version, result.record.timestamp, result.duplicate)
