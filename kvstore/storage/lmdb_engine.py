"""LMDB behind the `Engine` seam: everything a storage node keeps on disk.

One LMDB environment holds three named databases:

    data         partition (u16 BE) + tag u8 + key part -> value (see below)
    request_ids  request id -> committed_ms u64, timestamp u64, version bytes
    request_log  committed_ms (u64 BE) + request id -> b""   (time order)

LMDB keys are at most 511 bytes but user keys may be up to 64 KiB, so the
tag says how the user key is kept:

    0x00  key part = the user key itself (keys of at most 508 bytes);
          value = the kvstore.storage.record encoding
    0x01  key part = the user key's first 476 bytes + its 32-byte BLAKE2b
          digest (longer keys: always exactly 511 bytes of LMDB key);
          value = key length u32 BE + the full user key + the record encoding

A short key can never equal a long key's LMDB key, whatever its bytes: the
tag differs. Two long keys share an LMDB key only if their digests collide;
a read then finds a different full key in the value and raises DataLoss
instead of returning the other key's record, and a write fails rather than
overwrite it. Every key of a partition still starts with the partition, so a
scan is one cursor range; it returns the full user keys, short ones first.

`request_ids` makes a retried write apply once; `request_log` lets every commit
forget ids older than the TTL in time order with bounded work.

Commits come from one thread at a time (the Store's committer) and fsync, so
this module must never be called to write from the event loop. Reads may come
from any thread while a commit runs: LMDB's MVCC gives them the last committed
state without waiting. This module knows nothing of asyncio, gRPC or replicas.
"""

import hashlib
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import lmdb

from kvstore.clock import SYSTEM_CLOCK
from kvstore.errors import DataLoss, InvalidArgument, KVStoreError, ResourceExhausted
from kvstore.storage.record import Record, decode, encode
from kvstore.storage.engine import (UNBOUNDED, Change, Delete, Hint, StoreHint, Write,
                                    WriteResult)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    _Txn: TypeAlias = lmdb.Transaction[bytes]  # every transaction here has buffers=False

_PARTITION = struct.Struct(">H")
_MILLIS = struct.Struct(">Q")
_REQUEST = struct.Struct(">QQ")  # committed_ms, timestamp; the version follows
_KEY_LENGTH = struct.Struct(">I")  # before the full user key of a long key's value

# The key layout (module docstring) is fixed for LMDB's default key size
# limit, so a database means the same whichever LMDB build opens it.
_LMDB_KEY_BYTES = 511
_SHORT, _LONG = 0x00, 0x01
_DIGEST_BYTES = 32
_SHORT_KEY_BYTES = _LMDB_KEY_BYTES - _PARTITION.size - 1  # 508
_LONG_PREFIX_BYTES = _SHORT_KEY_BYTES - _DIGEST_BYTES  # 476

# Room for the hints and metadata databases the node will add to this
# environment; LMDB fixes the number of named databases when it opens.
_MAX_DBS = 16
# Every read transaction takes a reader slot until it ends; gRPC handlers,
# the committer and scans share them. Slots are cheap (64 bytes in the lock file).
_MAX_READERS = 1024
# Expired request ids forgotten per commit at most, so one commit after a long
# idle spell does not pay for the whole backlog; later commits continue.
PRUNE_PER_COMMIT = 256
# Keys read per read transaction in a partition scan: short transactions keep
# a long scan from pinning old pages (which would stop LMDB reusing them).
SCAN_CHUNK = 512


class LmdbEngine:
    """A durable `Engine` in one LMDB environment under `path`."""

    def __init__(
        self,
        path: Path,
        *,
        map_size: int,
        sync: bool = True,
        request_id_ttl_ms: int = 600_000,
        clock_ms: Callable[[], int] = SYSTEM_CLOCK.wall_clock_ms,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        # writemap=False: the map stays read-only and a commit write()s its
        # pages before it switches the meta page, so neither a stray pointer
        # nor a crash mid-commit (SIGKILL included) can damage committed data;
        # with sync off it keeps LMDB's "integrity kept, recent commits may be
        # lost" promise. sync/metasync=False is the documented-unsafe "nosync"
        # durability: a machine crash may undo acknowledged writes.
        self._env = lmdb.open(
            str(path),
            map_size=map_size,
            subdir=True,
            sync=sync,
            metasync=sync,
            writemap=False,
            readahead=False,
            max_dbs=_MAX_DBS,
            max_readers=_MAX_READERS,
        )
        self._data = self._env.open_db(b"data")
        self._request_ids = self._env.open_db(b"request_ids")
        self._request_log = self._env.open_db(b"request_log")
        # Hinted handoff: seq (u64 BE) -> target, key and record, in arrival order.
        self._hints = self._env.open_db(b"hints")
        self._next_hint = self._last_hint_seq() + 1
        self._max_key_bytes = self._env.max_key_size()
        if self._max_key_bytes < _LMDB_KEY_BYTES:
            self._env.close()
            raise RuntimeError(f"this LMDB build accepts keys of {self._max_key_bytes} bytes; "
                               f"need {_LMDB_KEY_BYTES}")
        self._ttl_ms = request_id_ttl_ms
        self._clock_ms = clock_ms

    # -- reads: any thread, at any time ------------------------------------

    def read(self, partition: int, key: bytes) -> Record | None:
        storage_key = _storage_key(partition, key)
        with self._env.begin(db=self._data, buffers=False) as txn:
            raw = txn.get(storage_key)
        if raw is None:
            return None
        stored_key, record = _unpack(storage_key, raw)
        if stored_key != key:
            raise _collision(key, stored_key)
        return record

    def scan_partition(self, partition: int, *,
                       on_corrupt: Callable[[DataLoss], None] | None = None
                       ) -> Iterator[tuple[bytes, Record]]:
        """(user key, record) for every key of `partition`, in LMDB key order:
        keys of at most 508 bytes in byte order, then longer ones.

        Not one snapshot: each chunk of SCAN_CHUNK keys is read in its own read
        transaction, so keys written during the scan may or may not appear.
        A corrupt record raises DataLoss naming its key, which ends the scan;
        with `on_corrupt`, it is passed the DataLoss and the scan goes on.
        """
        prefix = _partition_prefix(partition)
        start = prefix
        while True:
            chunk = self._scan_chunk(prefix, start)
            for storage_key, raw in chunk:
                try:
                    entry = _unpack(storage_key, raw)
                except DataLoss as exc:
                    if on_corrupt is None:
                        raise
                    on_corrupt(exc)
                    continue
                yield entry
            if len(chunk) < SCAN_CHUNK:
                return
            start = chunk[-1][0] + b"\x00"  # the smallest key after the last one

    def _scan_chunk(self, prefix: bytes, start: bytes) -> list[tuple[bytes, bytes]]:
        chunk: list[tuple[bytes, bytes]] = []
        with self._env.begin(db=self._data, buffers=False) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(start):
                return chunk
            for storage_key, raw in cursor:
                if not storage_key.startswith(prefix) or len(chunk) == SCAN_CHUNK:
                    break
                chunk.append((storage_key, raw))
        return chunk

    # -- commits: one thread at a time --------------------------------------

    def commit(self, writes: Sequence[Change]) -> list[WriteResult | KVStoreError]:
        """Apply `writes` in order in one transaction, durable on return.

        A KVStoreError from a write's decide fails that write alone; any other
        exception aborts the whole transaction and propagates.
        """
        try:
            return self._commit(writes)
        except lmdb.MapFullError:
            message = self._full_message()
            logger.error("commit of %d writes failed: %s", len(writes), message)
            return [ResourceExhausted(message) for _ in writes]

    def _commit(self, writes: Sequence[Change]) -> list[WriteResult | KVStoreError]:
        now = self._clock_ms()
        next_hint = self._next_hint
        txn = self._env.begin(write=True, buffers=False)
        try:
            self._prune_request_ids(txn, now)
            results = [self._change(txn, write, now) for write in writes]
            txn.commit()
        except BaseException:
            txn.abort()  # no-op when commit() itself failed: LMDB freed the txn
            self._next_hint = next_hint
            raise
        return results

    def _change(self, txn: "_Txn", change: Change, now: int) -> WriteResult | KVStoreError:
        if isinstance(change, Write):
            return self._apply(txn, change, now)
        if isinstance(change, StoreHint):
            seq = self._next_hint
            self._next_hint += 1
            txn.put(_MILLIS.pack(seq), _pack_hint(change), db=self._hints)
            return WriteResult(change.record, applied=True, duplicate=False, hint_seq=seq)
        existed = txn.delete(_MILLIS.pack(change.seq), db=self._hints)
        return WriteResult(None, applied=bool(existed), duplicate=False)

    # -- hints ---------------------------------------------------------------

    def scan_hints(self, after: int = -1, limit: int = 256,
                   max_bytes: int = UNBOUNDED) -> list[Hint]:
        hints: list[Hint] = []
        total = 0
        with self._env.begin(db=self._hints, buffers=False) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_MILLIS.pack(after + 1)):
                return hints
            for raw_seq, raw in cursor:
                if len(hints) == limit:
                    break
                hint = _unpack_hint(_MILLIS.unpack(raw_seq)[0], raw)
                if hints and total + hint.size > max_bytes:
                    break
                hints.append(hint)
                total += hint.size
        return hints

    def _last_hint_seq(self) -> int:
        with self._env.begin(db=self._hints, buffers=False) as txn:
            cursor = txn.cursor()
            return _MILLIS.unpack(cursor.key())[0] if cursor.last() else -1

    def _apply(self, txn: "_Txn", write: Write, now: int) -> WriteResult | KVStoreError:
        try:
            storage_key = _storage_key(write.partition, write.key)
            if write.request_id:
                self._check_request_id(write.request_id)
                original = self._committed_request(txn, write.request_id, now)
                if original is not None:
                    return WriteResult(original, applied=False, duplicate=True)
            current = self._current(txn, storage_key, write.key)
            new = write.decide(current)
            if new is None:
                # Nothing to change (e.g. a merge of what is already held):
                # the request still counts as done, so a retry is recognised.
                if write.request_id and current is not None:
                    self._remember_request(txn, write.request_id, current, now)
                return WriteResult(current, applied=False, duplicate=False)
            if isinstance(new, Delete):
                txn.delete(storage_key, db=self._data)
                return WriteResult(None, applied=current is not None, duplicate=False)
            txn.put(storage_key, _pack(write.key, new), db=self._data)
            if write.request_id:
                self._remember_request(txn, write.request_id, new, now)
            return WriteResult(new, applied=True, duplicate=False)
        except KVStoreError as exc:
            return exc

    def _current(self, txn: "_Txn", storage_key: bytes, key: bytes) -> Record | None:
        raw = txn.get(storage_key, db=self._data)
        if raw is None:
            return None
        try:
            stored_key, record = _unpack(storage_key, raw)
        except DataLoss as exc:
            # Treated as absent so this write can replace it; the replica's
            # other copies (read repair, anti-entropy) decide what survives.
            logger.warning("writing over a corrupt record: %s", exc)
            return None
        if stored_key != key:  # an intact record of another key: never overwrite it
            raise _collision(key, stored_key)
        return record

    # -- request ids ---------------------------------------------------------

    def _committed_request(self, txn: "_Txn", request_id: bytes, now: int) -> Record | None:
        """The version and timestamp an unexpired earlier write with this id produced."""
        raw = txn.get(request_id, db=self._request_ids)
        if raw is None or len(raw) < _REQUEST.size:
            return None
        committed_ms, timestamp = _REQUEST.unpack_from(raw)
        if now - committed_ms >= self._ttl_ms:
            return None
        return Record(version=raw[_REQUEST.size :], timestamp=timestamp, tombstone=False, value=b"")

    def _remember_request(self, txn: "_Txn", request_id: bytes, record: Record, now: int) -> None:
        txn.put(request_id, _REQUEST.pack(now, record.timestamp) + record.version,
                db=self._request_ids)
        txn.put(_MILLIS.pack(now) + request_id, b"", db=self._request_log)

    def _prune_request_ids(self, txn: "_Txn", now: int) -> None:
        cutoff = now - self._ttl_ms
        cursor = txn.cursor(db=self._request_log)
        for _ in range(PRUNE_PER_COMMIT):
            if not cursor.first():
                return
            logged = cursor.key()
            if _MILLIS.unpack_from(logged)[0] > cutoff:
                return
            request_id = logged[_MILLIS.size :]
            stored = txn.get(request_id, db=self._request_ids)
            # An id re-used after it expired has a newer log entry; keep it.
            if stored is not None and stored[: _MILLIS.size] == logged[: _MILLIS.size]:
                txn.delete(request_id, db=self._request_ids)
            cursor.delete()

    def _check_request_id(self, request_id: bytes) -> None:
        limit = self._max_key_bytes - _MILLIS.size
        if len(request_id) > limit:
            raise InvalidArgument(f"request id is {len(request_id)} bytes; at most {limit}")

    # -- keys, sizes, lifecycle ------------------------------------------------

    def _full_message(self) -> str:
        map_size = self._env.info()["map_size"]
        return (
            f"the store is full: LMDB map_size is {map_size} bytes ({self.size_bytes()} used); "
            "raise map_size (--map-size or map_size in the config file) and restart the node"
        )

    def size_bytes(self) -> int:
        """The data file's high-water mark: (last used page + 1) * page size.

        This is what map_size caps and what the file occupies (LMDB never
        shrinks it); pages freed by later commits are reused inside it.
        """
        return (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]

    def used_bytes(self) -> int:
        """Bytes in the B-tree pages of every database: size_bytes minus free pages
        (and LMDB's own free list and meta pages)."""
        with self._env.begin() as txn:
            stats = [self._env.stat()] + [
                txn.stat(db) for db in (self._data, self._request_ids, self._request_log)]
        pages = sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
        return pages * stats[0]["psize"]

    def count_keys(self) -> int:
        """Keys stored in `data`, tombstones included."""
        with self._env.begin() as txn:
            return int(txn.stat(self._data)["entries"])

    def count_request_ids(self) -> int:
        """Request ids remembered (expired ones included until pruned)."""
        with self._env.begin() as txn:
            return int(txn.stat(self._request_ids)["entries"])

    def copy_to(self, fd: int) -> None:
        """Write a consistent, compacted copy of the whole database (data,
        hints, request ids) to the file `fd`: LMDB's own copy, made in one
        read transaction while commits go on. It is a data.mdb a node can
        open (see `kvstore admin restore`). Blocks: call it off the loop."""
        self._env.copyfd(fd, compact=True)

    def close(self) -> None:
        self._env.close()


def open_copy(path: Path, max_dbs: int) -> "lmdb.Environment":
    """A database copy (a data.mdb file), opened read-only where it lies;
    ValueError when it is no LMDB database."""
    try:
        return lmdb.open(str(path), subdir=False, readonly=True, lock=False, max_dbs=max_dbs)
    except lmdb.Error as exc:
        raise ValueError(f"{path} is not an LMDB database: {exc}") from exc


def count_keys_in_copy(path: Path) -> int:
    """The keys of a database copy (a data.mdb file written by `copy_to`),
    opened read-only where it lies; ValueError when it is not one."""
    env = open_copy(path, _MAX_DBS)
    try:
        with env.begin() as txn:
            try:
                data = env.open_db(b"data", txn=txn, create=False)
            except lmdb.Error:
                raise ValueError(f"{path} is an LMDB database but not a kvstore node's "
                                 "(it has no data table)") from None
            return int(txn.stat(data)["entries"])
    finally:
        env.close()


def _partition_prefix(partition: int) -> bytes:
    if not 0 <= partition <= 0xFFFF:
        raise InvalidArgument(f"partition must be 0..65535, got {partition}")
    return _PARTITION.pack(partition)


def _storage_key(partition: int, key: bytes) -> bytes:
    if len(key) <= _SHORT_KEY_BYTES:
        return _partition_prefix(partition) + bytes([_SHORT]) + key
    digest = hashlib.blake2b(key, digest_size=_DIGEST_BYTES).digest()
    return _partition_prefix(partition) + bytes([_LONG]) + key[:_LONG_PREFIX_BYTES] + digest


def _pack(key: bytes, record: Record) -> bytes:
    try:
        encoded = encode(key, record)
    except ValueError as exc:  # a version too large to store
        raise InvalidArgument(str(exc)) from exc
    if len(key) <= _SHORT_KEY_BYTES:
        return encoded
    return _KEY_LENGTH.pack(len(key)) + key + encoded


def _unpack(storage_key: bytes, raw: bytes) -> tuple[bytes, Record]:
    """The full user key and the record stored under `storage_key`; DataLoss
    if corrupt (the record's checksum covers the key)."""
    tag = storage_key[_PARTITION.size]
    if tag == _SHORT:
        key = storage_key[_PARTITION.size + 1 :]
        return key, decode(key, raw)
    if tag != _LONG or len(raw) < _KEY_LENGTH.size:
        raise DataLoss(f"stored key {storage_key[:64]!r} has a corrupt tag or value")
    end = _KEY_LENGTH.size + _KEY_LENGTH.unpack_from(raw)[0]
    key = raw[_KEY_LENGTH.size : end]
    return key, decode(key, raw[end:])


def _collision(key: bytes, stored_key: bytes) -> DataLoss:
    return DataLoss(
        f"key {key[:64]!r} ({len(key)} bytes) shares its storage key with the stored key "
        f"{stored_key[:64]!r} ({len(stored_key)} bytes): a BLAKE2b collision; "
        "that record is kept and not returned"
    )


_HINT_HEAD = struct.Struct(">HI")  # target length, key length


def _pack_hint(hint: StoreHint) -> bytes:
    target = hint.target.encode()
    return (_HINT_HEAD.pack(len(target), len(hint.key)) + target + hint.key
            + encode(hint.key, hint.record))


def _unpack_hint(seq: int, raw: bytes) -> Hint:
    """A stored hint; DataLoss if its bytes are not intact (the record's
    checksum covers the key, so a damaged header shows there too)."""
    try:
        target_len, key_len = _HINT_HEAD.unpack_from(raw)
        start = _HINT_HEAD.size
        target = raw[start:start + target_len].decode()
        key = raw[start + target_len:start + target_len + key_len]
        record = decode(key, raw[start + target_len + key_len:])
    except (struct.error, UnicodeDecodeError) as exc:
        raise DataLoss(f"hint {seq} is corrupt ({exc})") from exc
    return Hint(seq, target, key, record)

