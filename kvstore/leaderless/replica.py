"""What one storage node does with the keys it holds: read a key's state,
apply a client's write as that write's coordinating replica, and merge a
state computed elsewhere (replication, read repair).

A key's state is a dotted version vector set (`kvstore.causality.versions.DVVSet`),
stored as one record: the encoded set as the value, its joined version vector
as the record's version, its newest timestamp, and a tombstone flag when every
sibling is a delete. Every change is a storage `Write` whose `decide` computes
the new state from the stored one inside the commit transaction, so it always
builds on what is really stored. No gRPC here.
"""

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable

from kvstore import causal_context
from kvstore.causality import versions
from kvstore.errors import DataLoss, ResourceExhausted
from kvstore.leaderless.hints import HintBook, HintPolicy
from kvstore.causality.hlc import HybridLogicalClock, physical_ms
from kvstore.storage.record import Record
from kvstore.placement.ring import partition_of
from kvstore.storage.engine import (DELETE, UNBOUNDED, Delete, DurableStore, Hint, RemoveHint,
                                    StoreHint, Write)
from kvstore.causality.versions import DVVSet

# Bytes of hints read at once while counting them at start: hints of large
# values must not all be in memory together.
_LOAD_SCAN_BYTES = 16 * 1024 * 1024


def state_record(state: DVVSet) -> Record:
    return Record(
        version=causal_context.encode(versions.join(state)), timestamp=state.timestamp,
        tombstone=state.absent, value=versions.encode(state),
    )


def state_digest(encoded_state: bytes) -> bytes:
    """What Merkle trees compare: equal states encode (and so digest) equally."""
    return hashlib.blake2b(encoded_state, digest_size=16).digest()


def record_state(record: Record | None) -> DVVSet | None:
    if record is None:
        return None
    return versions.decode(record.value)


class LocalReplica:
    def __init__(
        self, node_id: str, store: DurableStore, clock: HybridLogicalClock, partitions: int,
        *, last_write_wins: bool = False, max_siblings: int = versions.DEFAULT_MAX_SIBLINGS,
        on_duplicate: Callable[[], None] = lambda: None,
        on_hint_stored: Callable[[], None] = lambda: None,
        on_purged: Callable[[], None] = lambda: None,
        hint_policy: HintPolicy = HintPolicy(),
    ) -> None:
        self._on_duplicate = on_duplicate
        self._on_hint_stored = on_hint_stored
        self._on_purged = on_purged
        self.hint_book = HintBook(hint_policy)
        self._hints_by_partition: Counter[int] = Counter()  # for tombstone collection
        self.node_id = node_id
        self._store = store
        self._clock = clock
        self._partitions = partitions
        self._last_write_wins = last_write_wins
        self._max_siblings = max_siblings

    def load_hints(self) -> None:
        """Count the hints stored before a restart (bounds and metrics)."""
        entries, after = [], -1
        while hints := self._store.scan_hints(after, 1024, _LOAD_SCAN_BYTES):
            entries += [(h.target, h.seq, _hint_size(h.key, h.record)) for h in hints]
            self._hints_by_partition.update(self._partition(h.key) for h in hints)
            after = hints[-1].seq
        self.hint_book.load(entries)

    async def store_hint(self, target: str, key: bytes, state: DVVSet) -> None:
        """Keep `state` for `key` durably on behalf of `target`, which is down;
        ResourceExhausted when this node already holds its bound of hints
        for `target` (back-pressure: the coordinator then counts this
        replica as failed)."""
        record = state_record(state)
        size = _hint_size(key, record)
        refusal = self.hint_book.refusal(target, size)
        if refusal is not None:
            raise ResourceExhausted(f"{self.node_id} {refusal}")
        # Counted before it is durable, so tombstone collection never sees a
        # moment where the hint is stored but not counted.
        self._hints_by_partition[self._partition(key)] += 1
        try:
            result = await self._store.write(StoreHint(target, key, record))
        except BaseException:
            self._hints_by_partition[self._partition(key)] -= 1
            raise
        self.hint_book.count_stored(target, result.hint_seq, size)
        self._on_hint_stored()  # only now: a refused or failed hint was never kept

    def hints(self, after: int = -1, limit: int = 256,
              max_bytes: int = UNBOUNDED) -> list[Hint]:
        """Stored hints with sequence numbers above `after`, oldest first: at
        most `limit`, within `max_bytes` of them (or one larger alone)."""
        return self._store.scan_hints(after, limit, max_bytes)

    async def remove_hint(self, hint: Hint) -> None:
        """Forget a hint once its target holds it durably."""
        await self._store.write(RemoveHint(hint.seq))
        if self.hint_book.acknowledged(hint.target, hint.seq):
            self._hints_by_partition[self._partition(hint.key)] -= 1

    def hints_held(self, partition: int) -> int:
        """Hints this node keeps (for any node) for keys of `partition`."""
        return self._hints_by_partition[partition]

    def _partition(self, key: bytes) -> int:
        return partition_of(key, self._partitions)

    def expired_tombstones(self, keys: Iterable[bytes],
                           older_than_ms: int) -> list[tuple[bytes, Record]]:
        """Those of `keys` whose state is only tombstones, all written before
        `older_than_ms` (wall-clock ms); corrupt records are skipped
        (anti-entropy repairs them)."""
        expired = []
        for key in keys:
            try:
                record = self.read_record(key)
            except DataLoss:
                continue
            if (record is not None and record.tombstone
                    and physical_ms(record.timestamp) < older_than_ms):
                expired.append((key, record))
        return expired

    def read(self, key: bytes) -> DVVSet | None:
        """This replica's state for `key`; DataLoss if its copy is corrupt."""
        return record_state(self.read_record(key))

    def read_record(self, key: bytes) -> Record | None:
        """The stored record (its value is the encoded state); DataLoss if corrupt."""
        return self._store.read(self._partition(key), key)

    async def apply(
        self, key: bytes, value: bytes, tombstone: bool, context: bytes, request_id: bytes
    ) -> tuple[DVVSet, bool]:
        """Add a client's write with a new dot of this node; returns the new
        state and whether the request id had been applied before (then the
        state returned is the current one, which includes that write).

        Siblings the context covers are replaced, the others stay (they are
        concurrent with this write). An empty context is a blind write and
        replaces every sibling this replica holds."""
        seen = causal_context.decode(context)  # InvalidArgument before any work
        context_given = bool(context)
        timestamp = self._clock.now()
        node_id, lww, cap = self.node_id, self._last_write_wins, self._max_siblings
        written: list[DVVSet] = []  # what decide stored, so it need not be decoded again

        def decide(current: Record | None) -> Record:
            state = _readable(current)
            stamp = max(timestamp, state.timestamp + 1) if state is not None else timestamp
            # A blind write (no context at all) replaces what this replica holds.
            context = seen if context_given else versions.join(state)
            # The dot's counter is at least the clock (see versions.update):
            # dots stay unique even across a purged tombstone.
            if lww:
                new = versions.lww_update(state, node_id, value, tombstone, stamp,
                                          counter_floor=stamp)
            else:
                new = versions.update(state, context, node_id, value, tombstone, stamp,
                                      max_siblings=cap, counter_floor=stamp)
            written.append(new)
            return state_record(new)

        write = Write(self._partition(key), key, decide, request_id)
        result = await self._store.write(write)
        if result.duplicate:
            self._on_duplicate()
            current = self.read(key)
            assert current is not None, "a committed write's key cannot be empty"
            return current, True
        return written[-1], False

    async def purge(self, key: bytes, expected: bytes) -> bool:
        """Remove `key` if it still holds the tombstone-only state whose
        digest is `expected`; True if it was removed."""

        def decide(current: Record | None) -> Record | None | Delete:
            if current is None or not current.tombstone or state_digest(current.value) != expected:
                return None
            return DELETE

        result = await self._store.write(Write(self._partition(key), key, decide))
        if result.applied:
            self._on_purged()
        return result.applied

    async def merge(self, key: bytes, incoming: DVVSet, request_id: bytes = b"") -> bool:
        """Merge `incoming` into the stored state; True if that changed it.

        `request_id` is the client write `incoming` carries: it is remembered
        with the merge, so a retry of that write coordinated here later is
        recognised; a merge whose id this replica already has is skipped (it
        holds that write already)."""
        self._clock.observe(incoming.timestamp)
        lww = self._last_write_wins

        def decide(current: Record | None) -> Record | None:
            state = _readable(current)
            if state is None:
                return state_record(incoming)
            merged = versions.lww_sync(state, incoming) if lww else versions.sync(state, incoming)
            if merged == state:
                return None
            return state_record(merged)

        write = Write(self._partition(key), key, decide, request_id)
        result = await self._store.write(write)
        return result.applied


def _readable(record: Record | None) -> DVVSet | None:
    """The stored state, or None when there is none or it cannot be decoded
    (a corrupt copy is replaced: the other replicas hold the truth)."""
    try:
        return record_state(record)
    except DataLoss:
        return None


def _hint_size(key: bytes, record: Record) -> int:
    return len(key) + len(record.value)
