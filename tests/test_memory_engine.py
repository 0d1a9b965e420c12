"""MemoryEngine: what it adds to the Engine contract (a capacity, close and
restart, stored records nobody outside can change), and that it answers any
run of commits, clock steps and restarts exactly as LmdbEngine does.

The contract itself is tested against both engines in test_storage_engine.py.
"""

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import FailedPrecondition, KVStoreError, ResourceExhausted
from kvstore.storage import lmdb_engine, memory_engine
from kvstore.storage.engine import (DELETE, Change, Decide, Hint, RemoveHint, StoreHint, Write,
                                    WriteResult)
from kvstore.storage.lmdb_engine import LmdbEngine
from kvstore.storage.memory_engine import EngineClosed, MemoryEngine
from kvstore.storage.record import Record
from tests.properties import properties
from tests.test_storage_engine import TTL_MS, FakeClock, applied, put, record

PROPERTIES = properties(200)


def memory(clock: FakeClock, capacity_bytes: int | None = None) -> MemoryEngine:
    return MemoryEngine(request_id_ttl_ms=TTL_MS, clock_ms=clock, capacity_bytes=capacity_bytes)


def state(engine: MemoryEngine | LmdbEngine) -> object:
    """All a caller can see of an engine (but its size, which each counts its own way)."""
    return ([list(engine.scan_partition(p)) for p in (0, 1)], engine.scan_hints(),
            engine.count_keys(), engine.count_request_ids())


def test_a_batch_over_capacity_fails_every_write_and_changes_nothing() -> None:
    clock = FakeClock()
    engine = memory(clock, capacity_bytes=100)
    engine.commit([Write(0, b"k", put(b"x" * 40), b"old"),  # 41 bytes
                   StoreHint("n2", b"h", record(b"y" * 10))])  # 11 bytes
    clock.now_ms = TTL_MS  # b"old" has expired: a commit that completes forgets it
    before, size = state(engine), engine.size_bytes()
    results = engine.commit([StoreHint("n3", b"h2", record(b"z")), RemoveHint(0),
                             Write(0, b"small", put(b"s"), b"new"),
                             Write(0, b"big", put(b"x" * 60))])  # 52 + 3 - 11 + 6 + 63
    assert all(isinstance(r, ResourceExhausted) for r in results) and len(results) == 4
    assert "capacity_bytes is 100 bytes (52 used, 113 with this batch)" in str(results[0])
    assert state(engine) == before and engine.size_bytes() == size
    # Exactly full is not over: the batch without its big write commits, and
    # finds the hint numbering and the request ids as they were.
    hint, removed, small = engine.commit([StoreHint("n3", b"h2", record(b"z")), RemoveHint(0),
                                          Write(0, b"small", put(b"x" * 51), b"new")])  # 44 + 56
    assert engine.size_bytes() == 100
    assert isinstance(hint, WriteResult) and hint.hint_seq == 1
    assert isinstance(removed, WriteResult) and removed.applied
    assert applied(small) == record(b"x" * 51)
    assert engine.count_request_ids() == 1  # b"new"; b"old" was forgotten by this commit


def test_committed_data_survives_close_and_restart() -> None:
    clock = FakeClock()
    engine = memory(clock)
    tombstone = Record(b"v2", 2, True, b"")
    engine.commit([Write(0, b"k", put(b"kept"), b"req"), Write(1, b"gone", lambda c: tombstone),
                   StoreHint("n2", b"h", record(b"hint"))])
    before = state(engine)
    engine.close()
    engine.restart()
    assert state(engine) == before
    assert engine.read(0, b"k") == record(b"kept") and engine.read(1, b"gone") == tombstone
    [retry] = engine.commit([Write(0, b"k", put(b"again"), b"req")])
    assert isinstance(retry, WriteResult) and retry.duplicate  # its request id too


def test_a_closed_engine_refuses_every_call_until_restarted() -> None:
    engine = memory(FakeClock())
    engine.commit([Write(0, b"k", put(b"v"))])
    engine.close()
    engine.close()  # twice is fine, as for LMDB
    assert engine.closed
    calls: list[Callable[[], object]] = [
        lambda: engine.read(0, b"k"), lambda: list(engine.scan_partition(0)),
        lambda: engine.commit([Write(0, b"k", put(b"new"))]), engine.scan_hints,
        engine.size_bytes, engine.count_keys, engine.count_request_ids]
    for call in calls:
        with pytest.raises(EngineClosed, match="restart"):
            call()
    engine.restart()
    assert not engine.closed and engine.read(0, b"k") == record(b"v")
    with pytest.raises(RuntimeError, match="close"):
        engine.restart()  # an open engine has no next incarnation yet


def test_hint_numbers_go_on_after_a_restart() -> None:
    engine = memory(FakeClock())
    engine.commit([StoreHint("n2", b"k", record(b"%d" % i)) for i in range(3)])
    engine.commit([RemoveHint(0), RemoveHint(1)])
    engine.close()
    engine.restart()
    [hint] = engine.commit([StoreHint("n3", b"k", record(b"next"))])
    assert isinstance(hint, WriteResult) and hint.hint_seq == 3
    assert [h.seq for h in engine.scan_hints()] == [2, 3]
    assert engine.scan_hints(after=2) == [Hint(3, "n3", b"k", record(b"next"))]
    # As LmdbEngine, which finds the last stored hint when it opens: numbering
    # goes on after the newest hint still stored, not after every one given out.
    engine.commit([RemoveHint(3)])
    engine.close()
    engine.restart()
    [again] = engine.commit([StoreHint("n3", b"k", record(b"again"))])
    assert isinstance(again, WriteResult) and again.hint_seq == 3


def test_stored_records_cannot_be_changed_from_outside() -> None:
    engine = memory(FakeClock())
    key, version, value = bytearray(b"k"), bytearray(b"v1"), bytearray(b"value")
    mutable = Record(version, 1, False, value)  # type: ignore[arg-type]
    engine.commit([Write(0, key, lambda current: mutable),  # type: ignore[arg-type]
                   StoreHint("n2", key, mutable)])  # type: ignore[arg-type]
    key[:], version[:], value[:] = b"x", b"xx", b"xxxxx"
    assert engine.read(0, b"k") == record(b"value") and engine.read(0, b"x") is None
    assert list(engine.scan_partition(0)) == [(b"k", record(b"value"))]
    assert engine.scan_hints() == [Hint(0, "n2", b"k", record(b"value"))]
    [(stored_key, stored)] = engine.scan_partition(0)
    assert type(stored_key) is bytes and type(stored.value) is bytes


def test_size_is_the_key_and_value_bytes_of_records_and_hints() -> None:
    engine = memory(FakeClock())
    assert engine.size_bytes() == 0 and engine.count_keys() == 0
    engine.commit([Write(0, b"%04d" % i, put(b"x" * 100)) for i in range(10)]
                  + [StoreHint("n2", b"hint", record(b"y" * 6))])
    assert engine.size_bytes() == 10 * 104 + 10 and engine.count_keys() == 10
    engine.commit([Write(0, b"0000", lambda current: DELETE), RemoveHint(0),
                   Write(0, b"0001", put(b"x"))])
    assert engine.size_bytes() == 8 * 104 + 5 and engine.count_keys() == 9


def test_both_engines_forget_as_many_expired_ids_per_commit() -> None:
    # The bounded-pruning test of test_storage_engine.py uses LMDB's constant.
    assert memory_engine.PRUNE_PER_COMMIT == lmdb_engine.PRUNE_PER_COMMIT


# -- the same answers as LmdbEngine --------------------------------------------------

# Steps of a run, as tuples that hypothesis prints readably when a run fails.
# A write's decision may depend on the current record; the records it makes
# take the step's number as timestamp, so versions differ from step to step.
KEYS = [b"", b"a", b"b", b"\xff"]
REQUEST_IDS = [b"", b"r1", b"r2", b"r3"]
decisions = st.one_of(
    st.tuples(st.sampled_from(["put", "append"]), st.binary(max_size=3)),
    st.sampled_from([("tombstone",), ("delete",), ("keep",), ("refuse",)]))
writes = st.tuples(st.just("write"), st.sampled_from([0, 1]), st.sampled_from(KEYS), decisions,
                   st.sampled_from(REQUEST_IDS))
hints = st.one_of(
    st.tuples(st.just("hint"), st.sampled_from(["n2", "n3"]), st.binary(max_size=3)),
    st.tuples(st.just("unhint"), st.integers(0, 3)))  # the newest stored hint but n, if any
steps = st.one_of(
    # The flag: the batch ends in a decide that raises, which aborts it (now and then).
    st.tuples(st.just("commit"), st.lists(st.one_of(writes, hints), max_size=6),
              st.sampled_from([False, False, False, True])),
    st.tuples(st.just("advance"), st.sampled_from([1, TTL_MS // 2, TTL_MS])),
    st.just(("restart",)))


def decide(decision: tuple[Any, ...], step: int) -> Decide:
    def decide_(current: Record | None) -> Any:
        kind = decision[0]
        if kind == "refuse":
            raise FailedPrecondition(f"refused at step {step}")
        if kind == "keep":
            return None
        if kind == "delete":
            return DELETE
        if kind == "tombstone":
            return Record(b"t%d" % step, step, True, b"")
        base = current.value if kind == "append" and current is not None else b""
        return Record(b"v%d" % step, step, False, base + decision[1])

    return decide_


def crash(current: Record | None) -> Record:
    raise ZeroDivisionError("a bug in decide")


def change(spec: tuple[Any, ...], step: int, stored_hints: list[int]) -> Change:
    if spec[0] == "write":
        _, partition, key, decision, request_id = spec
        return Write(partition, key, decide(decision, step), request_id)
    if spec[0] == "hint":
        _, target, value = spec
        return StoreHint(target, b"key", Record(b"h%d" % step, step, False, value))
    newer = spec[1]
    return RemoveHint(stored_hints[-1 - newer] if newer < len(stored_hints) else 100 + newer)


def outcome(engine: MemoryEngine | LmdbEngine, batch: list[Change]) -> object:
    try:
        results = engine.commit(batch)
    except ZeroDivisionError:
        return "aborted"
    return [(type(r).__name__, str(r)) if isinstance(r, KVStoreError) else r for r in results]


@PROPERTIES
@given(st.lists(steps, min_size=10, max_size=40))
def test_it_answers_every_run_as_lmdb_does(run: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as directory:
        def open_lmdb() -> LmdbEngine:
            return LmdbEngine(Path(directory), map_size=16 << 20, sync=False,
                              request_id_ttl_ms=TTL_MS, clock_ms=clock)

        lmdb, mem = open_lmdb(), memory(clock)
        try:
            for number, step in enumerate(run):
                if step[0] == "commit":
                    stored_hints = [h.seq for h in mem.scan_hints(limit=1000)]
                    batch = [change(spec, number, stored_hints) for spec in step[1]]
                    if step[2]:
                        batch.append(Write(0, b"a", crash))
                    assert outcome(mem, batch) == outcome(lmdb, batch), step
                elif step[0] == "advance":
                    clock.now_ms += step[1]
                else:
                    lmdb.close()
                    lmdb = open_lmdb()
                    mem.close()
                    mem.restart()
                assert state(mem) == state(lmdb), step
        finally:
            lmdb.close()
