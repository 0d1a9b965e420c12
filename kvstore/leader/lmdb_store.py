"""`LmdbRaftStore`: every Raft group of a node and its state machine in one
LMDB environment, written by one transaction (and one fsync) per pass.

Named databases (group: the partition, u16 big-endian; integers big-endian):

    raft_meta         b"format" -> u32: data_format.FORMAT, checked at open
    raft_log          group + index u64 -> term u64 + entry data
    raft_group        group + tag -> the group's Raft state:
                        b"h" hard state: term u64, commit u64, vote (utf-8, empty: none)
                        b"s" snapshot: index u64, term u64 (its data: raft_snapshot)
                        b"c" compacted: index u64, term u64 (the log starts after it)
                        b"a" applied index u64 (written with the data it applied)
                        b"f" fence u64, only while a restored member is fenced
                          (`restore_fence`; absent: 0, as in stores before it)
    raft_snapshot     group -> the latest snapshot's data (a partition image)
    leader_data       group + BLAKE2b-256(key) -> crc u32, version u64,
                        key length u32, key, value
    leader_requests   group + request id -> proposed_ms u64, status u8,
                        version u64, index u64
    leader_request_order  group + proposed_ms u64 + request id -> b""

User keys may be up to 64 KiB but LMDB keys at most 511 bytes, so a key is
stored under its digest, with the full key in the value: a read checks the
key (and a CRC-32 of key, version and value) and reports damage as
`DataLoss`, never as another key's value. Keys come out of a scan in
digest order, which no caller relies on.

Opened with sync on: each pass's commit is fsynced before `write` returns
(LMDB cannot skip the fsync per transaction, so passes that would not need
one pay for it too). writemap stays off, for the reasons in
`kvstore.storage.lmdb_engine`. Writes come from one thread at a time (the
driver's persist thread); reads from any thread see the last commit.
"""

import hashlib
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import lmdb

from kvstore.errors import DataLoss, InvalidArgument, ResourceExhausted
from kvstore.leader import data_format
from kvstore.leader.persistence import LoadedGroup, PassResult, PassWrite, write_pass
from kvstore.leader.raft.messages import Entry, HardState, Snapshot
from kvstore.leader.restore_fence import Fence
from kvstore.storage.lmdb_engine import open_copy
from kvstore.leader.state_machine import (
    REQUEST_ID_TTL_MS, Outcome, RequestRecord, Status, Versioned,
)

if TYPE_CHECKING:
    _Txn: TypeAlias = lmdb.Transaction[bytes]

_GROUP = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_PAIR = struct.Struct(">QQ")
_FORMAT = struct.Struct(">I")
_VALUE = struct.Struct(">IQI")  # crc, version, key length
_REQUEST = struct.Struct(">QBQQ")
_STATUS_CODES = {Status.APPLIED: 1, Status.VERSION_MISMATCH: 2}
_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_HARD_STATE, _SNAPSHOT, _COMPACTED, _APPLIED, _FENCE = b"h", b"s", b"c", b"a", b"f"
_DATABASES = ("raft_meta", "raft_log", "raft_group", "raft_snapshot", "leader_data",
              "leader_requests", "leader_request_order")
_MAX_DBS = 16  # room for the node's own databases, should it share this environment
RAFT_DIR = "raft"  # a leader-mode node's store, inside its data dir


class _Databases:
    def __init__(self, env: "lmdb.Environment") -> None:
        handles = {name: env.open_db(name.encode()) for name in _DATABASES}
        self.meta, self.log, self.group, self.snapshot = (
            handles["raft_meta"], handles["raft_log"], handles["raft_group"],
            handles["raft_snapshot"])
        self.data, self.requests, self.request_order = (
            handles["leader_data"], handles["leader_requests"], handles["leader_request_order"])


class LmdbRaftStore:
    def __init__(self, path: Path, *, map_size: int = 1 << 30, durable: bool = True,
                 request_id_ttl_ms: int = REQUEST_ID_TTL_MS) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._env = lmdb.open(str(path), map_size=map_size, subdir=True, sync=durable,
                              metasync=durable, writemap=False, readahead=False,
                              max_dbs=_MAX_DBS)
        try:
            self._db = _Databases(self._env)
            self._check_format()
        except BaseException:
            self._env.close()
            raise
        self._ttl_ms = request_id_ttl_ms

    def _check_format(self) -> None:
        with self._env.begin(write=True, db=self._db.meta) as txn:
            stored = txn.get(b"format")
            if stored is None:
                txn.put(b"format", _FORMAT.pack(data_format.FORMAT))
                return
        if len(stored) != _FORMAT.size:
            raise DataLoss(f"the Raft store in {self._path} has a damaged format record "
                           f"({len(stored)} bytes)")
        data_format.check(f"the Raft store in {self._path}", _FORMAT.unpack(stored)[0])

    # -- reads: any thread ------------------------------------------------------------

    def load(self, group: int, tail_entries: int) -> LoadedGroup:
        prefix = _group_prefix(group)
        with self._env.begin(buffers=False) as txn:
            meta = _Meta(txn, self._db, prefix)
            snapshot, compacted = meta.pair(_SNAPSHOT), meta.pair(_COMPACTED)
            last = compacted[0]
            tail: list[Entry] = []
            cursor = txn.cursor(db=self._db.log)
            if _last_with_prefix(cursor, prefix):
                last = _U64.unpack_from(cursor.key(), _GROUP.size)[0]
                for key, value in cursor.iterprev():
                    if not key.startswith(prefix) or len(tail) >= tail_entries:
                        break
                    tail.append(_entry(key, value))
                tail.reverse()
            return LoadedGroup(meta.hard_state(), *snapshot, *compacted, last_index=last,
                               applied=meta.applied(), tail=tuple(tail))

    def read_entries(self, group: int, low: int, high: int,
                     max_bytes: int | None) -> list[Entry]:
        prefix = _group_prefix(group)
        entries: list[Entry] = []
        size = 0
        with self._env.begin(db=self._db.log, buffers=False) as txn:
            cursor = txn.cursor()
            if cursor.set_key(prefix + _U64.pack(low)):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    entry = _entry(key, value)
                    if entry.index >= high or entry.index != low + len(entries):
                        break
                    size += entry.size
                    if max_bytes is not None and size > max_bytes and entries:
                        return entries
                    entries.append(entry)
        if len(entries) != high - low:
            raise DataLoss(f"partition {group}: log entry {low + len(entries)} is missing from "
                           f"the Raft store in {self._path}")
        return entries

    def read_snapshot(self, group: int) -> Snapshot:
        prefix = _group_prefix(group)
        with self._env.begin(buffers=False) as txn:
            index, term = _Meta(txn, self._db, prefix).pair(_SNAPSHOT)
            data = txn.get(prefix, db=self._db.snapshot) if index else b""
        return Snapshot(index, term, data or b"")

    def read(self, group: int, key: bytes) -> Versioned | None:
        with self._env.begin(db=self._db.data, buffers=False) as txn:
            raw = txn.get(_data_key(group, key))
        return None if raw is None else _unpack_value(group, raw, key)[1]

    def find_request(self, group: int, request_id: bytes) -> RequestRecord | None:
        with self._env.begin(db=self._db.requests, buffers=False) as txn:
            raw = txn.get(_group_prefix(group) + request_id)
        return None if raw is None else _unpack_request(raw)

    # -- the pass: one thread at a time -------------------------------------------------

    def write(self, batch: PassWrite) -> PassResult:
        try:
            with self._env.begin(write=True, buffers=False) as txn:
                # The context manager aborts on an exception: all of the pass or none.
                return write_pass(_Transaction(txn, self._db), batch,
                                  request_id_ttl_ms=self._ttl_ms)
        except lmdb.MapFullError:
            info = self._env.info()
            raise ResourceExhausted(
                f"the Raft store in {self._path} is full (map_size {info['map_size']} "
                "bytes): raise map_size and restart the node") from None

    # -- backups ---------------------------------------------------------------------------

    def groups(self) -> list[int]:
        """The groups this store holds state of, in order."""
        found = set()
        with self._env.begin(db=self._db.group) as txn:
            for key in txn.cursor().iternext(keys=True, values=False):
                found.add(_GROUP.unpack_from(key)[0])
        return sorted(found)

    def fence(self, fences: Mapping[int, Fence]) -> None:
        """A restore's fences (`restore_fence`), every group's in one transaction."""
        with self._env.begin(write=True, buffers=False) as txn:
            writes = _Transaction(txn, self._db)
            for group, fence in fences.items():
                prefix = _group_prefix(group)
                _delete_from(txn, self._db.log, prefix, prefix + _U64.pack(fence.keep_through + 1))
                writes.put_hard_state(group, fence.hard_state)

    def copy_to(self, fd: int) -> None:
        """Write a consistent, compacted copy of every group's Raft state and
        data to the file `fd` (LMDB's copy, in one read transaction while
        passes go on): a data.mdb `kvstore admin restore` can fence and put
        in a stopped node's data dir. Blocks: call it off the loop."""
        self._env.copyfd(fd, compact=True)

    # -- figures, for the node's status and metrics --------------------------------------

    def count_keys(self) -> int:
        """Keys stored, every group's."""
        with self._env.begin() as txn:
            return int(txn.stat(self._db.data)["entries"])

    def size_bytes(self) -> int:
        """The data file's high-water mark (as `LmdbEngine.size_bytes`)."""
        return int((self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"])

    def used_bytes(self) -> int:
        """Bytes in the pages of every database (as `LmdbEngine.used_bytes`)."""
        with self._env.begin() as txn:
            stats = [self._env.stat()] + [
                txn.stat(db) for db in (self._db.meta, self._db.log, self._db.group,
                                        self._db.snapshot, self._db.data, self._db.requests,
                                        self._db.request_order)]
        pages = sum(s["branch_pages"] + s["leaf_pages"] + s["overflow_pages"] for s in stats)
        return int(pages * stats[0]["psize"])

    def last_transaction(self) -> int:
        """LMDB's id of the last write transaction committed (tests count passes by it)."""
        return int(self._env.info()["last_txnid"])

    def close(self) -> None:
        self._env.close()


def keys_in_copy(path: Path) -> int | None:
    """The keys of a copy written by `copy_to` (a data.mdb file), opened
    read-only where it lies; None when it is an LMDB database but not a
    leader-mode store (a leaderless node's, say); ValueError when it is no
    LMDB database at all."""
    env = open_copy(path, _MAX_DBS)
    try:
        with env.begin() as txn:
            try:
                env.open_db(b"raft_meta", txn=txn, create=False)
                data = env.open_db(b"leader_data", txn=txn, create=False)
            except lmdb.Error:
                return None
            return int(txn.stat(data)["entries"])
    finally:
        env.close()


def _last_with_prefix(cursor: "lmdb.Cursor[bytes]", prefix: bytes) -> bool:
    """Put the cursor on the last key starting with `prefix`; False if none."""
    following = _successor(prefix)
    if following is not None and cursor.set_range(following):
        if not cursor.prev():
            return False
    elif not cursor.last():
        return False
    return cursor.key().startswith(prefix)


def _successor(prefix: bytes) -> bytes | None:
    """The smallest key after every key that starts with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class _Meta:
    """A group's records in raft_group, read in a transaction."""

    def __init__(self, txn: "_Txn", db: _Databases, prefix: bytes) -> None:
        self._txn, self._db, self._prefix = txn, db, prefix

    def _get(self, tag: bytes) -> bytes | None:
        return self._txn.get(self._prefix + tag, db=self._db.group)

    def hard_state(self) -> HardState:
        raw = self._get(_HARD_STATE)
        if raw is None:
            return HardState()
        term, commit = _PAIR.unpack_from(raw)
        vote = raw[_PAIR.size:].decode()
        fence = self._get(_FENCE)
        return HardState(term=term, vote=vote or None, commit=commit,
                         fence=0 if fence is None else int(_U64.unpack(fence)[0]))

    def pair(self, tag: bytes) -> tuple[int, int]:
        raw = self._get(tag)
        return (0, 0) if raw is None else _PAIR.unpack(raw)

    def applied(self) -> int:
        raw = self._get(_APPLIED)
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def put(self, tag: bytes, value: bytes) -> None:
        self._txn.put(self._prefix + tag, value, db=self._db.group)

    def delete(self, tag: bytes) -> None:
        self._txn.delete(self._prefix + tag, db=self._db.group)


class _Partition:
    """`PartitionState` over one group's keys in a write transaction."""

    def __init__(self, txn: "_Txn", db: _Databases, group: int) -> None:
        self._txn, self._db, self._group = txn, db, group
        self._prefix = _group_prefix(group)
        self._meta = _Meta(txn, db, self._prefix)
        self._applied = self._meta.applied()

    def applied_index(self) -> int:
        return self._applied

    def set_applied_index(self, index: int) -> None:
        self._applied = index
        self._meta.put(_APPLIED, _U64.pack(index))

    def get(self, key: bytes) -> Versioned | None:
        raw = self._txn.get(_data_key(self._group, key), db=self._db.data)
        return None if raw is None else _unpack_value(self._group, raw, key)[1]

    def put(self, key: bytes, state: Versioned) -> None:
        self._txn.put(_data_key(self._group, key), _pack_value(key, state), db=self._db.data)

    def delete(self, key: bytes) -> None:
        self._txn.delete(_data_key(self._group, key), db=self._db.data)

    def request(self, request_id: bytes) -> RequestRecord | None:
        raw = self._txn.get(self._prefix + request_id, db=self._db.requests)
        return None if raw is None else _unpack_request(raw)

    def remember(self, request_id: bytes, record: RequestRecord) -> None:
        old = self.request(request_id)
        if old is not None:
            self._txn.delete(self._order_key(old.proposed_ms, request_id),
                             db=self._db.request_order)
        self._txn.put(self._prefix + request_id, _pack_request(record), db=self._db.requests)
        self._txn.put(self._order_key(record.proposed_ms, request_id), b"",
                      db=self._db.request_order)

    def forget_requests(self, up_to_ms: int, limit: int) -> None:
        cursor = self._txn.cursor(db=self._db.request_order)
        if not cursor.set_range(self._prefix):
            return
        for _ in range(limit):
            key = cursor.key()
            if not key.startswith(self._prefix):
                return
            proposed_ms = _U64.unpack_from(key, _GROUP.size)[0]
            if proposed_ms > up_to_ms:
                return
            self._txn.delete(self._prefix + key[_GROUP.size + _U64.size:], db=self._db.requests)
            if not cursor.delete():
                return

    def items(self) -> Iterator[tuple[bytes, Versioned]]:
        for _, raw in _scan(self._txn, self._db.data, self._prefix):
            yield _unpack_value(self._group, raw, None)

    def requests(self) -> Iterator[tuple[bytes, RequestRecord]]:
        for key, raw in _scan(self._txn, self._db.requests, self._prefix):
            yield key[_GROUP.size:], _unpack_request(raw)

    def clear(self) -> None:
        for db in (self._db.data, self._db.requests, self._db.request_order):
            _delete_from(self._txn, db, self._prefix, self._prefix)

    def _order_key(self, proposed_ms: int, request_id: bytes) -> bytes:
        return self._prefix + _U64.pack(proposed_ms) + request_id


class _Transaction:
    """`PassTransaction` over one LMDB write transaction."""

    def __init__(self, txn: "_Txn", db: _Databases) -> None:
        self._txn, self._db = txn, db

    def _meta(self, group: int) -> _Meta:
        return _Meta(self._txn, self._db, _group_prefix(group))

    def partition(self, group: int) -> _Partition:
        return _Partition(self._txn, self._db, group)

    def term(self, group: int, index: int) -> int:
        compacted, term = self._meta(group).pair(_COMPACTED)
        if index == compacted:
            return term
        raw = self._txn.get(_group_prefix(group) + _U64.pack(index), db=self._db.log)
        if raw is None:
            raise DataLoss(f"partition {group}: log entry {index} is missing")
        return int(_U64.unpack_from(raw)[0])

    def compacted_index(self, group: int) -> int:
        return self._meta(group).pair(_COMPACTED)[0]

    def snapshot_index(self, group: int) -> int:
        return self._meta(group).pair(_SNAPSHOT)[0]

    def put_entries(self, group: int, entries: Sequence[Entry]) -> None:
        prefix = _group_prefix(group)
        _delete_from(self._txn, self._db.log, prefix, prefix + _U64.pack(entries[0].index))
        for entry in entries:
            self._txn.put(prefix + _U64.pack(entry.index), _U64.pack(entry.term) + entry.data,
                          db=self._db.log)

    def drop_entries(self, group: int, through: int, term: int) -> None:
        prefix = _group_prefix(group)
        cursor = self._txn.cursor(db=self._db.log)
        end = prefix + _U64.pack(through)
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix) and cursor.key() <= end:
                if not cursor.delete():
                    break
        self._meta(group).put(_COMPACTED, _PAIR.pack(through, term))

    def reset_log(self, group: int, snapshot: Snapshot) -> None:
        prefix = _group_prefix(group)
        _delete_from(self._txn, self._db.log, prefix, prefix)
        self.put_snapshot(group, snapshot)
        self._meta(group).put(_COMPACTED, _PAIR.pack(snapshot.index, snapshot.term))

    def put_snapshot(self, group: int, snapshot: Snapshot) -> None:
        self._meta(group).put(_SNAPSHOT, _PAIR.pack(snapshot.index, snapshot.term))
        self._txn.put(_group_prefix(group), snapshot.data, db=self._db.snapshot)

    def put_hard_state(self, group: int, state: HardState) -> None:
        vote = (state.vote or "").encode()
        meta = self._meta(group)
        meta.put(_HARD_STATE, _PAIR.pack(state.term, state.commit) + vote)
        if state.fence:
            meta.put(_FENCE, _U64.pack(state.fence))
        else:
            meta.delete(_FENCE)


# -- layout -----------------------------------------------------------------------------


def _group_prefix(group: int) -> bytes:
    if not 0 <= group <= 0xFFFF:
        raise InvalidArgument(f"partition must be 0..65535, got {group}")
    return _GROUP.pack(group)


def _data_key(group: int, key: bytes) -> bytes:
    return _group_prefix(group) + hashlib.blake2b(key, digest_size=32).digest()


def _entry(key: bytes, value: bytes) -> Entry:
    index = _U64.unpack_from(key, _GROUP.size)[0]
    return Entry(index=index, term=_U64.unpack_from(value)[0], data=value[_U64.size:])


def _pack_value(key: bytes, state: Versioned) -> bytes:
    body = _U64.pack(state.version) + struct.pack(">I", len(key)) + key + state.value
    return struct.pack(">I", zlib.crc32(body)) + body


def _unpack_value(group: int, raw: bytes, expected: bytes | None) -> tuple[bytes, Versioned]:
    if len(raw) < _VALUE.size:
        raise DataLoss(f"partition {group}: a stored value is truncated ({len(raw)} bytes)")
    crc, version, key_length = _VALUE.unpack_from(raw)
    key = raw[_VALUE.size:_VALUE.size + key_length]
    if zlib.crc32(raw[4:]) != crc or len(key) != key_length:
        raise DataLoss(f"partition {group}: the value of key {key[:64]!r} failed its "
                       "checksum; the replica's copy is corrupt and was not returned")
    if expected is not None and key != expected:
        raise DataLoss(f"partition {group}: key {expected[:64]!r} found the record of "
                       f"another key ({key[:64]!r}) under its digest")
    return key, Versioned(version, raw[_VALUE.size + key_length:])


def _pack_request(record: RequestRecord) -> bytes:
    outcome = record.outcome
    return _REQUEST.pack(record.proposed_ms, _STATUS_CODES[outcome.status], outcome.version,
                         outcome.index)


def _unpack_request(raw: bytes) -> RequestRecord:
    if len(raw) != _REQUEST.size:
        raise DataLoss(f"a remembered request is damaged ({len(raw)} bytes)")
    proposed_ms, code, version, index = _REQUEST.unpack(raw)
    if code not in _STATUSES:
        raise DataLoss(f"a remembered request has an unknown outcome {code}")
    return RequestRecord(Outcome(_STATUSES[code], version, index), proposed_ms)


def _scan(txn: "_Txn", db: "lmdb._Database", prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    if not cursor.set_range(prefix):
        return
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        yield key, value


def _delete_from(txn: "_Txn", db: "lmdb._Database", prefix: bytes, start: bytes) -> None:
    """Delete every key of `prefix` from `start` on."""
    cursor = txn.cursor(db=db)
    if not cursor.set_range(start):
        return
    while cursor.key().startswith(prefix):
        if not cursor.delete():
            return

