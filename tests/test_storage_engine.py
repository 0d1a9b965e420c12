"""The storage engines: what a commit stores, what a read returns, and how it fails.

The tests of the `Engine` contract run against LmdbEngine and MemoryEngine
alike (the `engine` and `open_engine` fixtures); those of LMDB's own layout,
corruption on disk, a full map and SIGKILL are marked `lmdb_only`.
MemoryEngine's own tests are in test_memory_engine.py.
"""

import hashlib
import os
import signal
import subprocess
import sys
import threading
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvstore.errors import (DataLoss, FailedPrecondition, InvalidArgument, KVStoreError,
                            ResourceExhausted)
from kvstore.storage.record import Record
from kvstore.storage.engine import (DELETE, Decide, Hint, RemoveHint, StoreHint, Write,
                                    WriteResult)
from kvstore.storage import lmdb_engine
from kvstore.storage.lmdb_engine import PRUNE_PER_COMMIT, SCAN_CHUNK, LmdbEngine
from kvstore.storage.memory_engine import MemoryEngine

MIB = 1024 * 1024
TTL_MS = 1_000

AnyEngine = LmdbEngine | MemoryEngine


class FakeClock:
    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_lmdb(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., LmdbEngine]]:
    opened: list[LmdbEngine] = []

    def open_(map_size: int = 64 * MIB) -> LmdbEngine:
        engine = LmdbEngine(tmp_path / "db", map_size=map_size, request_id_ttl_ms=TTL_MS,
                            clock_ms=clock)
        opened.append(engine)
        return engine

    yield open_
    for engine in opened:
        engine.close()


@pytest.fixture(params=["lmdb", "memory"])
def open_engine(request: pytest.FixtureRequest, open_lmdb: Callable[..., LmdbEngine],
                clock: FakeClock) -> Callable[..., AnyEngine]:
    """Opens the engine under test; called again after `close()`, it opens the
    same store again: LMDB's directory, or the memory engine restarted (as the
    simulation does for a process's next incarnation)."""
    if request.param == "lmdb":
        return open_lmdb
    memory = MemoryEngine(request_id_ttl_ms=TTL_MS, clock_ms=clock)

    def open_() -> MemoryEngine:
        if memory.closed:
            memory.restart()
        return memory

    return open_


# For a test of LMDB itself: `engine` and `open_engine` are LMDB's only.
lmdb_only = pytest.mark.parametrize("open_engine", ["lmdb"], indirect=True)


@pytest.fixture
def engine(open_engine: Callable[..., AnyEngine]) -> AnyEngine:
    return open_engine()


def record(value: bytes, *, timestamp: int = 1, version: bytes = b"v1") -> Record:
    return Record(version=version, timestamp=timestamp, tombstone=False, value=value)


def put(value: bytes, **kwargs: int | bytes) -> Decide:
    return lambda current: record(value, **kwargs)  # type: ignore[arg-type]


def applied(result: WriteResult | KVStoreError) -> Record:
    assert isinstance(result, WriteResult) and result.applied, result
    assert result.record is not None
    return result.record


def test_a_committed_record_reads_back(engine: AnyEngine) -> None:
    [result] = engine.commit([Write(0, b"k", put(b"hello", timestamp=7))])
    assert result == WriteResult(record(b"hello", timestamp=7), applied=True, duplicate=False)
    assert engine.read(0, b"k") == record(b"hello", timestamp=7)


def test_an_absent_key_reads_as_none(engine: AnyEngine) -> None:
    assert engine.read(0, b"nothing") is None


def test_a_tombstone_is_stored_and_read_back(engine: AnyEngine) -> None:
    engine.commit([Write(3, b"k", put(b"v"))])
    tombstone = Record(version=b"v2", timestamp=2, tombstone=True, value=b"")
    engine.commit([Write(3, b"k", lambda current: tombstone)])
    assert engine.read(3, b"k") == tombstone


def test_partitions_keep_the_same_key_apart(engine: AnyEngine) -> None:
    engine.commit([Write(1, b"k", put(b"one")), Write(2, b"k", put(b"two"))])
    assert engine.read(1, b"k") == record(b"one")
    assert engine.read(2, b"k") == record(b"two")
    assert engine.read(3, b"k") is None


def test_a_partition_scan_returns_exactly_its_keys_in_order(engine: AnyEngine) -> None:
    # Neighbours chosen to sit on the prefix boundaries: b"\xff\xff" in
    # partition 1 sorts just before the empty key of partition 2.
    engine.commit(
        [
            Write(0, b"\xff", put(b"p0")),
            Write(1, b"b", put(b"p1-b")),
            Write(1, b"a", put(b"p1-a")),
            Write(1, b"\xff\xff", put(b"p1-ff")),
            Write(2, b"", put(b"p2-empty")),
            Write(0x100, b"a", put(b"p256")),
        ]
    )
    assert [(k, r.value) for k, r in engine.scan_partition(1)] == [
        (b"a", b"p1-a"),
        (b"b", b"p1-b"),
        (b"\xff\xff", b"p1-ff"),
    ]
    assert [(k, r.value) for k, r in engine.scan_partition(2)] == [(b"", b"p2-empty")]
    assert list(engine.scan_partition(5)) == []


def test_a_scan_longer_than_one_chunk_returns_every_key_once(engine: AnyEngine) -> None:
    keys = [b"%06d" % i for i in range(2 * SCAN_CHUNK + 5)]
    engine.commit([Write(9, k, put(k)) for k in keys] + [Write(10, b"000000", put(b"other"))])
    scanned = list(engine.scan_partition(9))
    assert [k for k, _ in scanned] == keys
    assert all(r.value == k for k, r in scanned)


def test_a_scan_goes_on_through_commits_made_while_it_runs(engine: AnyEngine) -> None:
    keys = [b"%06d" % i for i in range(2 * SCAN_CHUNK + 5)]
    engine.commit([Write(9, k, put(k)) for k in keys])
    scan = engine.scan_partition(9)
    first = next(scan)
    # Between two steps of a scan (in the simulation, another task's turn):
    engine.commit([Write(9, keys[-1], lambda current: DELETE), Write(9, b"added", put(b"a")),
                   Write(9, keys[1], put(b"changed"))])
    rest = list(scan)
    scanned = [first[0]] + [k for k, _ in rest]
    assert len(scanned) == len(set(scanned))  # each key once
    assert set(keys[:-1]) <= set(scanned) <= set(keys) | {b"added"}


def test_later_writes_in_a_batch_see_earlier_ones(engine: AnyEngine) -> None:
    seen: list[Record | None] = []

    def append(suffix: bytes) -> Decide:
        def decide(current: Record | None) -> Record:
            seen.append(current)
            return record((current.value if current else b"") + suffix)

        return decide

    engine.commit([Write(0, b"k", append(b"a")), Write(0, b"k", append(b"b")),
                   Write(0, b"k", append(b"c"))])
    assert [r.value if r else None for r in seen] == [None, b"a", b"ab"]
    assert engine.read(0, b"k") == record(b"abc")


def test_a_retried_request_id_is_applied_once(engine: AnyEngine) -> None:
    applied(engine.commit(
        [Write(0, b"k", put(b"first", timestamp=5, version=b"ctx"), b"req-1")])[0])
    [retry] = engine.commit([Write(0, b"k", put(b"second"), b"req-1")])
    assert retry == WriteResult(Record(b"ctx", 5, False, b""), applied=False, duplicate=True)
    assert engine.read(0, b"k") == record(b"first", timestamp=5, version=b"ctx")


def test_a_request_id_twice_in_one_batch_is_applied_once(engine: AnyEngine) -> None:
    calls: list[bytes] = []

    def counting(value: bytes) -> Decide:
        def decide(current: Record | None) -> Record:
            calls.append(value)
            return record(value)

        return decide

    first, second = engine.commit([Write(0, b"k", counting(b"a"), b"req"),
                                   Write(0, b"k", counting(b"b"), b"req")])
    assert applied(first) == record(b"a")
    assert isinstance(second, WriteResult) and second.duplicate and not second.applied
    assert calls == [b"a"]
    assert engine.read(0, b"k") == record(b"a")


def test_an_expired_request_id_is_applied_again(engine: AnyEngine, clock: FakeClock) -> None:
    applied(engine.commit([Write(0, b"k", put(b"first"), b"req")])[0])
    clock.now_ms = TTL_MS - 1
    [within] = engine.commit([Write(0, b"k", put(b"second"), b"req")])
    assert isinstance(within, WriteResult) and within.duplicate
    clock.now_ms = TTL_MS
    assert applied(engine.commit([Write(0, b"k", put(b"third"), b"req")])[0]) == record(b"third")
    assert engine.read(0, b"k") == record(b"third")


def test_expired_request_ids_are_forgotten_a_bounded_number_per_commit(
        engine: AnyEngine, clock: FakeClock) -> None:
    ids = [b"req-%04d" % i for i in range(PRUNE_PER_COMMIT + 44)]
    engine.commit([Write(0, i, put(b"v"), i) for i in ids])
    assert engine.count_request_ids() == len(ids)
    clock.now_ms = TTL_MS
    engine.commit([])
    assert engine.count_request_ids() == 44
    engine.commit([])
    assert engine.count_request_ids() == 0


def test_an_id_reused_after_expiry_outlives_its_old_log_entry(
        engine: AnyEngine, clock: FakeClock) -> None:
    # b"\xff" sorts after every other id logged in the same millisecond, so its
    # old log entry is still there (beyond the prune bound) when it is reused.
    ids = [b"req-%04d" % i for i in range(PRUNE_PER_COMMIT)] + [b"\xff"]
    engine.commit([Write(0, i, put(b"v"), i) for i in ids])
    clock.now_ms = TTL_MS
    applied(engine.commit([Write(0, b"k", put(b"again"), b"\xff")])[0])
    clock.now_ms = TTL_MS + 1
    engine.commit([])  # prunes the old entry of b"\xff", not its new one
    assert engine.count_request_ids() == 1
    [retry] = engine.commit([Write(0, b"k", put(b"third"), b"\xff")])
    assert isinstance(retry, WriteResult) and retry.duplicate


def test_decide_returning_none_leaves_the_key_unchanged(engine: AnyEngine) -> None:
    engine.commit([Write(0, b"k", put(b"kept"))])
    [result] = engine.commit([Write(0, b"k", lambda current: None, b"req")])
    assert result == WriteResult(record(b"kept"), applied=False, duplicate=False)
    assert engine.read(0, b"k") == record(b"kept")
    # The request is done (as a no-op), so its id is remembered: a retry is a
    # duplicate and changes nothing.
    [retry] = engine.commit([Write(0, b"k", put(b"new"), b"req")])
    assert retry.duplicate and not retry.applied
    assert engine.read(0, b"k") == record(b"kept")
    # On an absent key there is nothing to remember the id with.
    engine.commit([Write(0, b"absent", lambda current: None, b"req2")])
    assert applied(engine.commit([Write(0, b"absent", put(b"x"), b"req2")])[0]) == record(b"x")


def test_decide_raising_fails_only_that_write(engine: AnyEngine) -> None:
    def refuse(current: Record | None) -> Record:
        raise FailedPrecondition("version mismatch")

    first, failed, last = engine.commit(
        [Write(0, b"a", put(b"a")), Write(0, b"b", refuse, b"req"), Write(0, b"c", put(b"c"))]
    )
    assert applied(first) == record(b"a") and applied(last) == record(b"c")
    assert isinstance(failed, FailedPrecondition)
    assert engine.read(0, b"b") is None
    assert applied(engine.commit([Write(0, b"b", put(b"b"), b"req")])[0]) == record(b"b")


def test_an_unexpected_exception_aborts_the_whole_batch(engine: AnyEngine) -> None:
    def buggy(current: Record | None) -> Record:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        engine.commit([Write(0, b"a", put(b"a")), Write(0, b"b", buggy)])
    assert engine.read(0, b"a") is None
    assert applied(engine.commit([Write(0, b"a", put(b"a"))])[0]) == record(b"a")


def test_an_unexpected_exception_leaves_hints_and_request_ids_as_they_were(
        engine: AnyEngine, clock: FakeClock) -> None:
    def buggy(current: Record | None) -> Record:
        raise ZeroDivisionError

    engine.commit([StoreHint("n2", b"k", record(b"hint")), Write(0, b"old", put(b"v"), b"old")])
    clock.now_ms = TTL_MS  # b"old" has expired: a commit that completes forgets it
    with pytest.raises(ZeroDivisionError):
        engine.commit([StoreHint("n3", b"k", record(b"lost")), RemoveHint(0),
                       Write(0, b"a", put(b"a"), b"new"), Write(0, b"b", buggy)])
    assert engine.scan_hints() == [Hint(0, "n2", b"k", record(b"hint"))]
    assert engine.count_request_ids() == 1
    [hint] = engine.commit([StoreHint("n4", b"k", record(b"next"))])
    assert hint.hint_seq == 1  # the aborted batch's number is given out again
    assert applied(engine.commit([Write(0, b"a", put(b"a"), b"new")])[0]) == record(b"a")


def test_a_too_long_request_id_fails_that_write_alone(engine: AnyEngine) -> None:
    longest = b"r" * 503  # LMDB's key limit (511) less the 8 bytes of its log's time
    first, refused, last = engine.commit([Write(0, b"a", put(b"a"), longest),
                                          Write(0, b"b", put(b"b"), longest + b"r"),
                                          Write(0, b"c", put(b"c"))])
    assert applied(first) == record(b"a") and applied(last) == record(b"c")
    assert isinstance(refused, InvalidArgument)
    assert str(refused) == "request id is 504 bytes; at most 503"
    assert engine.read(0, b"b") is None
    [retry] = engine.commit([Write(0, b"a", put(b"again"), longest)])
    assert isinstance(retry, WriteResult) and retry.duplicate


def test_a_bad_partition_or_version_fails_that_write_alone(engine: AnyEngine) -> None:
    huge_version = record(b"v", version=b"x" * 65536)
    bad_partition, bad_version, good = engine.commit([
        Write(65536, b"k", put(b"v")), Write(0, b"k", lambda current: huge_version),
        Write(0, b"other", put(b"v"))])
    assert isinstance(bad_partition, InvalidArgument)
    assert str(bad_partition) == "partition must be 0..65535, got 65536"
    assert isinstance(bad_version, InvalidArgument)
    assert str(bad_version) == "version is 65536 bytes; at most 65535"
    assert applied(good) == record(b"v") and engine.read(0, b"k") is None
    with pytest.raises(InvalidArgument, match="partition must be 0..65535, got -1"):
        engine.read(-1, b"k")
    with pytest.raises(InvalidArgument, match="partition must be 0..65535, got 65536"):
        list(engine.scan_partition(65536))


def long_key(size: int, seed: bytes = b"") -> bytes:
    """`size` bytes that differ from position to position (not one repeated byte)."""
    pattern = hashlib.sha256(seed + b"%d" % size).digest()
    return (pattern * (size // len(pattern) + 1))[:size]


def hashed_form(key: bytes) -> bytes:
    """What a key longer than LMDB allows is stored as after its partition and tag."""
    return key[:476] + hashlib.blake2b(key, digest_size=32).digest()


def lmdb_keys(engine: LmdbEngine) -> list[bytes]:
    with engine._env.begin(db=engine._data) as txn:
        return [bytes(k) for k, _ in txn.cursor()]


@pytest.mark.parametrize("size", [1, 508, 509, 510, 511, 1024, 65536])
def test_keys_of_every_allowed_length_round_trip(engine: AnyEngine, size: int) -> None:
    key = long_key(size)
    assert applied(engine.commit([Write(6, key, put(b"v%d" % size))])[0]) == record(b"v%d" % size)
    engine.commit([Write(5, key, put(b"neighbour")), Write(7, key, put(b"neighbour"))])
    assert engine.read(6, key) == record(b"v%d" % size)
    assert engine.read(6, key[:-1]) is None and engine.read(6, key + b"x") is None
    assert list(engine.scan_partition(6)) == [(key, record(b"v%d" % size))]


def test_long_keys_sharing_a_long_prefix_stay_distinct(engine: AnyEngine) -> None:
    common = long_key(1000)
    keys = [common, common + b"a", common + b"b", common[:-1] + b"\x00", common[:600]]
    engine.commit([Write(0, k, put(b"%d" % i)) for i, k in enumerate(keys)])
    assert engine.count_keys() == len(keys)
    assert [engine.read(0, k) for k in keys] == [record(b"%d" % i) for i in range(len(keys))]
    assert sorted(engine.scan_partition(0)) == sorted(
        (k, record(b"%d" % i)) for i, k in enumerate(keys))


@lmdb_only
def test_a_short_key_equal_to_a_long_keys_hashed_form_does_not_collide(engine: LmdbEngine) -> None:
    long = long_key(600)
    forged = hashed_form(long)  # 508 bytes: the longest key stored as itself
    forged_tagged = b"\x01" + forged  # the long key's LMDB key minus its partition
    keys = [long, forged, forged_tagged]
    engine.commit([Write(3, k, put(b"%d" % i)) for i, k in enumerate(keys)])
    assert sorted(lmdb_keys(engine)) == sorted(
        [b"\x00\x03\x01" + forged, b"\x00\x03\x00" + forged,
         b"\x00\x03\x01" + hashed_form(forged_tagged)]
    )
    assert [engine.read(3, k) for k in keys] == [record(b"0"), record(b"1"), record(b"2")]
    assert sorted(engine.scan_partition(3)) == sorted(
        (k, record(b"%d" % i)) for i, k in enumerate(keys))


def test_decide_and_request_ids_work_for_long_keys(engine: AnyEngine) -> None:
    key = long_key(4096)
    seen: list[Record | None] = []

    def append(suffix: bytes) -> Decide:
        def decide(current: Record | None) -> Record:
            seen.append(current)
            return record((current.value if current else b"") + suffix)

        return decide

    engine.commit([Write(0, key, append(b"a"), b"req-1"), Write(0, key, append(b"b"))])
    [retry] = engine.commit([Write(0, key, append(b"c"), b"req-1")])
    assert retry == WriteResult(Record(b"v1", 1, False, b""), applied=False, duplicate=True)
    [unchanged] = engine.commit([Write(0, key, lambda current: None)])
    assert unchanged == WriteResult(record(b"ab"), applied=False, duplicate=False)
    applied(engine.commit([Write(0, key, append(b"d"), b"req-2")])[0])
    assert [r.value if r else None for r in seen] == [None, b"a", b"ab"]
    assert engine.read(0, key) == record(b"abd")
    assert engine.count_keys() == 1


@lmdb_only
def test_a_hash_collision_is_data_loss_not_the_other_keys_record(
    engine: LmdbEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    class CollidingHashes:  # every digest equal: keys sharing 476 bytes collide
        @staticmethod
        def blake2b(data: bytes, digest_size: int) -> "hashlib.blake2b":
            return hashlib.blake2b(b"", digest_size=digest_size)

    monkeypatch.setattr(lmdb_engine, "hashlib", CollidingHashes)
    first = long_key(600)
    second = first[:599] + bytes([first[599] ^ 1])
    applied(engine.commit([Write(0, first, put(b"first"))])[0])
    with pytest.raises(DataLoss, match="collision"):
        engine.read(0, second)
    [failed] = engine.commit([Write(0, second, put(b"second"))])
    assert isinstance(failed, DataLoss) and "collision" in str(failed)
    assert engine.read(0, first) == record(b"first")
    assert list(engine.scan_partition(0)) == [(first, record(b"first"))]


@lmdb_only
def test_a_corrupted_long_key_in_its_value_is_data_loss_and_can_be_overwritten(
    open_engine: Callable[..., LmdbEngine], tmp_path: Path
) -> None:
    key = b"k" * 600 + b"DISTINCTIVE-KEY-TAIL-51c2e0"  # the tail is not in the LMDB key
    engine = open_engine()
    engine.commit([Write(4, key, put(b"v"))])
    engine.close()
    assert _flip_everywhere(tmp_path / "db" / "data.mdb", b"DISTINCTIVE-KEY-TAIL-51c2e0") >= 1
    engine = open_engine()
    with pytest.raises(DataLoss, match="checksum"):
        engine.read(4, key)
    with pytest.raises(DataLoss, match="checksum"):
        list(engine.scan_partition(4))
    applied(engine.commit([Write(4, key, put(b"repaired"))])[0])
    assert list(engine.scan_partition(4)) == [(key, record(b"repaired"))]


def test_a_read_during_a_commit_sees_the_last_committed_state(engine: AnyEngine) -> None:
    engine.commit([Write(0, b"k", put(b"old"))])
    inside, release = threading.Event(), threading.Event()

    def slow(current: Record | None) -> Record:
        inside.set()
        assert release.wait(10)
        return record(b"new")

    writer = threading.Thread(target=engine.commit, args=([Write(0, b"k", slow)],))
    writer.start()
    try:
        assert inside.wait(10)
        assert engine.read(0, b"k") == record(b"old")  # not blocked by the open write txn
    finally:
        release.set()
        writer.join(10)
    assert engine.read(0, b"k") == record(b"new")


def _flip_everywhere(data_file: Path, needle: bytes) -> int:
    content = bytearray(data_file.read_bytes())
    found, start = 0, 0
    while (at := content.find(needle, start)) != -1:
        content[at + len(needle) // 2] ^= 0x01
        found, start = found + 1, at + len(needle)
    data_file.write_bytes(bytes(content))
    return found


@lmdb_only
def test_a_corrupted_byte_on_disk_is_data_loss_on_read(open_engine: Callable[..., LmdbEngine],
                                                       tmp_path: Path) -> None:
    engine = open_engine()
    engine.commit([Write(4, b"k", put(b"DISTINCTIVE-VALUE-7f3a9c")),
                   Write(4, b"other", put(b"fine"))])
    engine.close()
    assert _flip_everywhere(tmp_path / "db" / "data.mdb", b"DISTINCTIVE-VALUE-7f3a9c") >= 1
    engine = open_engine()
    with pytest.raises(DataLoss, match="checksum"):
        engine.read(4, b"k")
    assert engine.read(4, b"other") == record(b"fine")
    with pytest.raises(DataLoss):
        list(engine.scan_partition(4))
    # A scan told what to do with corrupt records reports them and goes on.
    corrupt: list[DataLoss] = []
    assert list(engine.scan_partition(4, on_corrupt=corrupt.append)) == [
        (b"other", record(b"fine"))]
    assert len(corrupt) == 1 and "checksum" in str(corrupt[0])


@lmdb_only
def test_a_corrupt_record_is_offered_to_decide_as_absent(
    open_engine: Callable[..., LmdbEngine], tmp_path: Path
) -> None:
    engine = open_engine()
    engine.commit([Write(4, b"k", put(b"DISTINCTIVE-VALUE-7f3a9c"))])
    engine.close()
    _flip_everywhere(tmp_path / "db" / "data.mdb", b"DISTINCTIVE-VALUE-7f3a9c")
    engine = open_engine()
    seen: list[Record | None] = []

    def repair(current: Record | None) -> Record:
        seen.append(current)
        return record(b"repaired")

    engine.commit([Write(4, b"k", repair)])
    assert seen == [None]
    assert engine.read(4, b"k") == record(b"repaired")


@lmdb_only
def test_a_full_map_fails_the_batch_and_leaves_the_store_usable(
        open_engine: Callable[..., LmdbEngine]) -> None:
    engine = open_engine(map_size=1 * MIB)
    stored: list[bytes] = []
    for n in range(10_000):
        batch = [Write(0, b"key-%05d-%d" % (n, i), put(b"x" * 4000)) for i in range(8)]
        results = engine.commit(batch)
        if isinstance(results[0], ResourceExhausted):
            break
        stored += [w.key for w in batch]
    else:
        pytest.fail("a 1 MiB map never filled up")
    assert all(isinstance(r, ResourceExhausted) for r in results)
    assert "map_size is 1048576 bytes" in str(results[0]) and "raise map_size" in str(results[0])
    assert engine.read(0, batch[0].key) is None  # the failed batch left nothing behind
    assert stored and all(engine.read(0, k) == record(b"x" * 4000) for k in stored)
    assert engine.count_keys() == len(stored)
    assert applied(engine.commit([Write(0, b"small", put(b"s"))])[0]) == record(b"s")
    assert engine.read(0, b"small") == record(b"s")


@lmdb_only
def test_a_batch_too_large_for_the_map_fails_every_write_in_it(
        open_engine: Callable[..., LmdbEngine]) -> None:
    engine = open_engine(map_size=1 * MIB)
    results = engine.commit([Write(0, b"small", put(b"s")),
                             Write(0, b"huge", put(b"x" * (2 * MIB)))])
    assert all(isinstance(r, ResourceExhausted) for r in results)
    assert engine.read(0, b"small") is None
    assert applied(engine.commit([Write(0, b"small", put(b"s"))])[0]) == record(b"s")


def test_data_and_request_ids_survive_close_and_reopen(
        open_engine: Callable[..., AnyEngine]) -> None:
    engine = open_engine()
    engine.commit([Write(7, b"k", put(b"kept"), b"req")])
    engine.close()
    engine = open_engine()
    assert engine.read(7, b"k") == record(b"kept")
    [retry] = engine.commit([Write(7, b"k", put(b"again"), b"req")])
    assert isinstance(retry, WriteResult) and retry.duplicate


@lmdb_only
def test_sizes_and_counts_follow_the_data(engine: LmdbEngine) -> None:
    empty_size = engine.size_bytes()
    assert engine.count_keys() == 0
    engine.commit([Write(0, b"%04d" % i, put(b"x" * 1000)) for i in range(200)])
    assert engine.count_keys() == 200
    assert engine.size_bytes() > empty_size + 200 * 1000
    assert 200 * 1000 < engine.used_bytes() <= engine.size_bytes()


_CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kvstore.storage.record import Record
    from kvstore.storage.engine import Write
    from kvstore.storage.lmdb_engine import LmdbEngine

    engine = LmdbEngine(Path(sys.argv[1]), map_size=64 << 20, sync=True)
    n = 0
    while True:
        batch = [Write(0, b"%08d" % (n + i), lambda c, n=n: Record(b"v", n, False, b"x" * 500))
                 for i in range(16)]
        engine.commit(batch)
        n += len(batch)
        print(n, flush=True)
    """
)


@pytest.mark.process
def test_sigkill_mid_commit_leaves_a_database_with_every_acknowledged_write(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path / "db")], stdout=subprocess.PIPE,
        text=True
    )
    try:
        assert child.stdout is not None
        acknowledged = 0
        while acknowledged < 16 * 50:
            line = child.stdout.readline()
            assert line, "the writer exited before it was killed"
            acknowledged = int(line)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    engine = LmdbEngine(tmp_path / "db", map_size=64 * MIB)
    try:
        keys = [k for k, _ in engine.scan_partition(0)]  # decodes, so checks, every record
        assert len(keys) >= acknowledged and len(keys) % 16 == 0  # whole batches only
        assert keys == [b"%08d" % i for i in range(len(keys))]
        applied(engine.commit([Write(0, b"after", put(b"crash"))])[0])
    finally:
        engine.close()


def test_hints_are_kept_in_order_apart_from_the_data_and_survive_a_reopen(
    open_engine: Callable[..., AnyEngine],
) -> None:
    engine = open_engine()
    first, second, third = engine.commit([
        StoreHint("n3", b"k", record(b"for n3")),
        StoreHint("n2", b"k" * 700, record(b"for n2, long key")),
        StoreHint("n3", b"other", record(b"again for n3")),
    ])
    assert [r.hint_seq for r in (first, second, third)] == [0, 1, 2]  # type: ignore[union-attr]
    assert engine.read(0, b"k") is None  # a hint is not the node's own data
    engine.commit([RemoveHint(0)])
    engine.close()
    reopened = open_engine()
    hints = reopened.scan_hints()
    assert [(h.seq, h.target, h.key, h.record.value) for h in hints] == [
        (1, "n2", b"k" * 700, b"for n2, long key"), (2, "n3", b"other", b"again for n3")]
    assert reopened.scan_hints(after=1) == hints[1:]
    [fourth] = reopened.commit([StoreHint("n4", b"x", record(b"y"))])
    assert fourth.hint_seq == 3  # type: ignore[union-attr]  # numbering goes on after the last


def test_a_scan_of_hints_stays_within_its_bytes_but_takes_one_larger_hint_alone(
        engine: AnyEngine) -> None:
    engine.commit([StoreHint("n2", b"k%d" % i, record(b"v" * 1000)) for i in range(5)])
    engine.commit([StoreHint("n2", b"big", record(b"v" * 5000))])
    sizes = [hint.size for hint in engine.scan_hints()]
    assert sizes[:5] == [len(b"k0") + len(hint.record.value) for hint in engine.scan_hints()[:5]]
    assert [h.seq for h in engine.scan_hints(max_bytes=2 * sizes[0])] == [0, 1]
    assert [h.seq for h in engine.scan_hints(max_bytes=3 * sizes[0] - 1)] == [0, 1]
    assert [h.seq for h in engine.scan_hints(after=3, max_bytes=3 * sizes[0])] == [4]
    assert [h.seq for h in engine.scan_hints(after=4, max_bytes=1)] == [5]  # alone, however large
    assert [h.seq for h in engine.scan_hints(limit=2, max_bytes=1 << 30)] == [0, 1]


def test_decide_can_remove_a_key(engine: AnyEngine) -> None:
    engine.commit([Write(0, b"k", put(b"v"))])
    [removed] = engine.commit([Write(0, b"k", lambda current: DELETE)])
    assert removed.applied and removed.record is None
    assert engine.read(0, b"k") is None
    [again] = engine.commit([Write(0, b"k", lambda current: DELETE)])
    assert not again.applied  # nothing was there to remove
