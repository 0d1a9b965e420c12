"""An `Engine` in plain dicts with `LmdbEngine`'s contract, for the deterministic simulation.

Owns the records of every partition, the remembered request ids (with the
time-ordered log they expire by) and the hints. Wherever a caller can tell,
it behaves as `LmdbEngine`: the same results and errors (the same messages
for a bad partition, a too-long request id or version), request ids expiring
and pruned PRUNE_PER_COMMIT per commit in the same order, the same hint
numbers (after a restart, on from the newest hint still stored, as LMDB
numbers them when it opens), and all-or-nothing batches. What it leaves out
is LMDB's layout: no corruption, no key hashing, no pages. A partition scan
returns the keys in byte order (LMDB puts keys over 508 bytes last; the
contract promises no order).

Durability model: everything a `commit` returned is durable. The simulation
models a process crash by discarding the process's other state and keeping
this object: `close()` it (a closed engine refuses every call, so a leftover
of the dead incarnation fails loudly) and `restart()` it for the next
incarnation, which finds every committed write. A crash therefore loses
exactly the writes not yet committed; there is no half-done commit to lose,
because a batch is worked out apart from the committed state and published
only once all of it succeeded.

Stored records are frozen `Record`s of `bytes`, never a caller's buffer, so
nothing outside can change what is stored. A reader on another thread may
read while a commit runs (the Engine's one writer, many readers) and sees
committed records only, never a batch's unfinished work; unlike LMDB, a
batch becomes visible key by key while `commit` publishes it.

Pure: no I/O, no threads, no clock but the injected `clock_ms`.
"""

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from kvstore import clock
from kvstore.errors import DataLoss, InvalidArgument, KVStoreError, ResourceExhausted
from kvstore.storage.engine import (UNBOUNDED, Change, Delete, Hint, StoreHint, Write,
                                    WriteResult)
from kvstore.storage.record import MAX_VERSION_BYTES, Record

# LmdbEngine's bound, so that the same commits forget the same ids in both.
PRUNE_PER_COMMIT = 256
# LmdbEngine logs a request id as an LMDB key (at most 511 bytes) after an
# 8-byte commit time; the same limit here keeps the two engines alike.
MAX_REQUEST_ID_BYTES = 511 - 8
_MAX_PARTITION = 0xFFFF


class EngineClosed(RuntimeError):
    """A call on a closed engine: a bug in its caller (in the simulation, code
    of a crashed incarnation still running)."""


@dataclass(frozen=True, slots=True)
class _Done:
    """What the write of a remembered request id stored, and when it committed."""

    committed_ms: int
    timestamp: int
    version: bytes


@dataclass(slots=True)
class _Batch:
    """One commit's changes, kept apart from the committed state until every
    change of the batch is done, so an abort or a refusal has nothing to undo."""

    now: int
    next_hint: int
    size_bytes: int
    records: dict[tuple[int, bytes], Record | None] = field(default_factory=dict)  # None: removed
    request_ids: dict[bytes, _Done] = field(default_factory=dict)
    hints: dict[int, Hint | None] = field(default_factory=dict)  # None: removed


class MemoryEngine:
    """An `Engine` that keeps everything in this object (module docstring)."""

    def __init__(
        self,
        *,
        request_id_ttl_ms: int = 600_000,
        clock_ms: Callable[[], int] = clock.SYSTEM_CLOCK.wall_clock_ms,
        capacity_bytes: int | None = None,
    ) -> None:
        self._ttl_ms = request_id_ttl_ms
        self._clock_ms = clock_ms
        self._capacity_bytes = capacity_bytes
        self._partitions: dict[int, dict[bytes, Record]] = {}
        self._request_ids: dict[bytes, _Done] = {}
        # (committed_ms, request id), sorted: the order ids expire in, ties in
        # id byte order, as in LmdbEngine's request_log.
        self._request_log: list[tuple[int, bytes]] = []
        # By sequence number, in that order: each new hint has the largest.
        self._hints: dict[int, Hint] = {}
        self._next_hint = 0
        self._size_bytes = 0
        self._closed = False

    # -- lifecycle -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True from `close()` until `restart()`: every other call then raises EngineClosed."""
        return self._closed

    def close(self) -> None:
        """Refuse further calls; the data stays for `restart()`."""
        self._closed = True

    def restart(self) -> None:
        """Open a closed engine for the process's next incarnation, with all it
        committed (what opening LMDB's directory again gives)."""
        if not self._closed:
            raise RuntimeError("restart() of an open engine: close() it first, as a crash does")
        self._closed = False
        # As LmdbEngine numbers on after the last stored hint when it opens.
        self._next_hint = max(self._hints, default=-1) + 1

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed("the memory engine is closed (its process stopped or crashed); "
                               "restart() it for the next incarnation")

    # -- reads ---------------------------------------------------------------

    def read(self, partition: int, key: bytes) -> Record | None:
        self._check_open()
        return self._partitions.get(_checked_partition(partition), {}).get(_frozen(key))

    def scan_partition(self, partition: int, *,
                       on_corrupt: Callable[[DataLoss], None] | None = None
                       ) -> Iterator[tuple[bytes, Record]]:
        """(user key, record) for every key of `partition`, in byte order of the
        keys, as they were at the scan's first step. Nothing here is ever
        corrupt, so `on_corrupt` is never called."""
        self._check_open()
        records = self._partitions.get(_checked_partition(partition), {})
        yield from sorted(records.items())  # one step: a commit cannot change it midway

    def scan_hints(self, after: int = -1, limit: int = 256,
                   max_bytes: int = UNBOUNDED) -> list[Hint]:
        self._check_open()
        hints: list[Hint] = []
        total = 0
        for seq, hint in list(self._hints.items()):
            if len(hints) == limit:
                break
            if seq > after:
                if hints and total + hint.size > max_bytes:
                    break
                hints.append(hint)
                total += hint.size
        return hints

    def size_bytes(self) -> int:
        """Key and value bytes of every stored record and hint: an estimate of
        what LMDB would occupy (no headers, pages or request ids)."""
        self._check_open()
        return self._size_bytes

    def count_keys(self) -> int:
        """Keys stored, tombstones included."""
        self._check_open()
        return sum(len(records) for records in self._partitions.values())

    def count_request_ids(self) -> int:
        """Request ids remembered (expired ones included until pruned)."""
        self._check_open()
        return len(self._request_ids)

    # -- commits -------------------------------------------------------------

    def commit(self, writes: Sequence[Change]) -> list[WriteResult | KVStoreError]:
        """Apply `writes` in order as one transaction, durable on return.

        A KVStoreError from a write's decide fails that write alone; any other
        exception propagates and leaves everything as it was. A batch that
        would pass `capacity_bytes` fails every write with ResourceExhausted.
        """
        self._check_open()
        batch = _Batch(self._clock_ms(), self._next_hint, self._size_bytes)
        results = [self._change(batch, change) for change in writes]
        if self._capacity_bytes is not None and batch.size_bytes > self._capacity_bytes:
            message = (f"the store is full: capacity_bytes is {self._capacity_bytes} bytes "
                       f"({self._size_bytes} used, {batch.size_bytes} with this batch); "
                       "raise capacity_bytes")
            return [ResourceExhausted(message) for _ in writes]
        self._publish(batch)
        return results

    def _change(self, batch: _Batch, change: Change) -> WriteResult | KVStoreError:
        if isinstance(change, Write):
            return self._apply(batch, change)
        if isinstance(change, StoreHint):
            # A version too large raises ValueError and aborts the batch, as
            # LmdbEngine's encoding of the hint does.
            hint = Hint(batch.next_hint, change.target, _frozen(change.key), _kept(change.record))
            batch.next_hint += 1
            batch.hints[hint.seq] = hint
            batch.size_bytes += _footprint(hint.key, hint.record)
            return WriteResult(hint.record, applied=True, duplicate=False, hint_seq=hint.seq)
        removed = self._hint(batch, change.seq)
        if removed is not None:
            batch.hints[change.seq] = None
            batch.size_bytes -= _footprint(removed.key, removed.record)
        return WriteResult(None, applied=removed is not None, duplicate=False)

    def _apply(self, batch: _Batch, write: Write) -> WriteResult | KVStoreError:
        # The same checks in the same order as LmdbEngine._apply, so a write
        # fails with the same error in both.
        try:
            slot = (_checked_partition(write.partition), _frozen(write.key))
            request_id = _frozen(write.request_id)
            if request_id:
                _check_request_id(request_id)
                original = self._committed_request(batch, request_id)
                if original is not None:
                    return WriteResult(original, applied=False, duplicate=True)
            current = self._current(batch, slot)
            new = write.decide(current)
            if new is None:
                # Nothing to change (e.g. a merge of what is already held):
                # the request still counts as done, so a retry is recognised.
                if request_id and current is not None:
                    self._remember(batch, request_id, current)
                return WriteResult(current, applied=False, duplicate=False)
            if isinstance(new, Delete):
                self._store(batch, slot, current, None)
                return WriteResult(None, applied=current is not None, duplicate=False)
            try:
                kept = _kept(new)
            except ValueError as exc:  # a version too large to store
                raise InvalidArgument(str(exc)) from exc
            self._store(batch, slot, current, kept)
            if request_id:
                self._remember(batch, request_id, kept)
            return WriteResult(kept, applied=True, duplicate=False)
        except KVStoreError as exc:
            return exc

    def _current(self, batch: _Batch, slot: tuple[int, bytes]) -> Record | None:
        if slot in batch.records:
            return batch.records[slot]
        partition, key = slot
        return self._partitions.get(partition, {}).get(key)

    def _hint(self, batch: _Batch, seq: int) -> Hint | None:
        return batch.hints[seq] if seq in batch.hints else self._hints.get(seq)

    def _store(self, batch: _Batch, slot: tuple[int, bytes], current: Record | None,
               new: Record | None) -> None:
        key = slot[1]
        batch.size_bytes += _footprint(key, new) - _footprint(key, current)
        batch.records[slot] = new

    # -- request ids ---------------------------------------------------------

    def _committed_request(self, batch: _Batch, request_id: bytes) -> Record | None:
        """The version and timestamp an unexpired earlier write with this id produced."""
        done = batch.request_ids.get(request_id) or self._request_ids.get(request_id)
        if done is None or batch.now - done.committed_ms >= self._ttl_ms:
            return None
        return Record(version=done.version, timestamp=done.timestamp, tombstone=False, value=b"")

    def _remember(self, batch: _Batch, request_id: bytes, record: Record) -> None:
        batch.request_ids[request_id] = _Done(batch.now, record.timestamp, record.version)

    def _forget_expired_request_ids(self, now: int) -> None:
        """Forget up to PRUNE_PER_COMMIT ids, oldest first, that expired by `now`.

        Run on the committed state before a batch is published, as LmdbEngine
        prunes at the start of its transaction: the ids it forgets are expired
        at `now`, so the batch saw them as absent already."""
        cutoff = now - self._ttl_ms
        log = self._request_log
        pruned = 0
        while pruned < min(PRUNE_PER_COMMIT, len(log)) and log[pruned][0] <= cutoff:
            committed_ms, request_id = log[pruned]
            done = self._request_ids.get(request_id)
            # An id re-used after it expired has a newer log entry; keep it.
            if done is not None and done.committed_ms == committed_ms:
                del self._request_ids[request_id]
            pruned += 1
        del log[:pruned]

    # -- publishing a batch ------------------------------------------------------

    def _publish(self, batch: _Batch) -> None:
        self._forget_expired_request_ids(batch.now)
        for (partition, key), record in batch.records.items():
            if record is None:
                self._partitions.get(partition, {}).pop(key, None)
            else:
                self._partitions.setdefault(partition, {})[key] = record
        for request_id, done in batch.request_ids.items():
            self._request_ids[request_id] = done
            entry = (done.committed_ms, request_id)
            at = bisect_left(self._request_log, entry)
            if self._request_log[at:at + 1] != [entry]:  # one entry per (time, id), as in LMDB
                self._request_log.insert(at, entry)
        for seq, hint in batch.hints.items():
            if hint is None:
                self._hints.pop(seq, None)
            else:
                self._hints[seq] = hint
        self._next_hint = batch.next_hint
        self._size_bytes = batch.size_bytes


def _checked_partition(partition: int) -> int:
    if not 0 <= partition <= _MAX_PARTITION:
        raise InvalidArgument(f"partition must be 0..65535, got {partition}")
    return partition


def _check_request_id(request_id: bytes) -> None:
    if len(request_id) > MAX_REQUEST_ID_BYTES:
        raise InvalidArgument(
            f"request id is {len(request_id)} bytes; at most {MAX_REQUEST_ID_BYTES}")


def _frozen(data: bytes) -> bytes:
    """`data` as bytes of its own: a caller's bytearray or memoryview is copied."""
    return data if type(data) is bytes else bytes(memoryview(data))


def _kept(record: Record) -> Record:
    """`record` as stored: of bytes only. ValueError for a version too large
    to store, as `kvstore.storage.record.encode` raises."""
    if len(record.version) > MAX_VERSION_BYTES:
        raise ValueError(f"version is {len(record.version)} bytes; at most {MAX_VERSION_BYTES}")
    if type(record) is Record and type(record.version) is bytes and type(record.value) is bytes:
        return record
    return Record(_frozen(record.version), record.timestamp, record.tombstone,
                  _frozen(record.value))


def _footprint(key: bytes, record: Record | None) -> int:
    return 0 if record is None else len(key) + len(record.value)
