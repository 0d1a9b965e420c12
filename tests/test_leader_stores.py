"""The durable Raft storage of leader mode (`LmdbRaftStore`, and
`MemoryRaftStore` with its contract): one transaction per pass for every
group with work, what a restart finds, a crash between passes or inside one,
compaction and snapshots, the format version, and `GroupLog`, the core's
view of it, against the core's own in-memory storage.

Every test runs on both stores unless it is about LMDB itself."""

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import DataLoss
from kvstore.leader import commands, images, lmdb_store, memory_store
from kvstore.leader.commands import Delete, Put
from kvstore.leader.data_format import FORMAT, UnsupportedFormat
from kvstore.leader.group_log import GroupLog
from kvstore.leader.lmdb_store import LmdbRaftStore
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.persistence import GroupWrite, PassWrite, RaftStore
from kvstore.leader.raft.messages import Entry, HardState, Snapshot
from kvstore.leader.raft.storage import MemoryLogStorage
from kvstore.leader.state_machine import Outcome, Status, Versioned
from tests.properties import properties

pytestmark = pytest.mark.timeout(60)

Reopen = Callable[[], RaftStore]


@pytest.fixture(params=["memory", "lmdb"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Reopen]:
    """Opens the store; again after a crash (the same data, a new object for LMDB)."""
    opened: list[LmdbRaftStore] = []
    memory = MemoryRaftStore()

    def reopen() -> RaftStore:
        if request.param == "memory":
            return memory
        for store in opened:
            store.close()
        opened.clear()
        opened.append(LmdbRaftStore(tmp_path / "raft", map_size=1 << 26))
        return opened[0]

    yield reopen
    for store in opened:
        store.close()


def entry(index: int, command: commands.Command | None = None, term: int = 1) -> Entry:
    return Entry(index, term, b"" if command is None else commands.encode(command))


def put(key: bytes, value: bytes, rid: bytes, **kw: int) -> Put:
    return Put(key, value, rid, **kw)  # type: ignore[arg-type]


def replicate(store: RaftStore, group: int, entries: list[Entry], commit: int,
              term: int = 1) -> None:
    """One pass: persist `entries` and apply those up to `commit`."""
    store.write(PassWrite((GroupWrite(group, HardState(term, "n1", commit), tuple(entries),
                                      committed=tuple(e for e in entries if e.index <= commit)),),
                          sync=True))


# -- restart and crashes --------------------------------------------------------------------------


def test_a_restart_finds_the_log_hard_state_data_and_applied_index(stores: Reopen) -> None:
    store = stores()
    replicate(store, 3, [entry(1), entry(2, put(b"k", b"v", b"r1"))], commit=2)
    replicate(store, 3, [entry(3, put(b"k", b"w", b"r2"))], commit=2)
    store = stores()
    loaded = store.load(3, tail_entries=10)
    assert loaded.hard_state == HardState(1, "n1", 2)
    assert (loaded.last_index, loaded.applied) == (3, 2)
    assert [e.index for e in loaded.tail] == [1, 2, 3]
    assert store.read(3, b"k") == Versioned(2, b"v")
    assert store.read_entries(3, 2, 4, None)[1].data == commands.encode(put(b"k", b"w", b"r2"))


def test_a_crash_between_passes_loses_exactly_the_pass_not_written(stores: Reopen) -> None:
    store = stores()
    replicate(store, 0, [entry(1, put(b"k", b"1", b"r1"))], commit=1)
    # The next pass is built but the process dies before it commits.
    _unwritten = [entry(2, put(b"k", b"2", b"r2"))]
    store = stores()
    assert store.load(0, 10).last_index == 1 and store.read(0, b"k") == Versioned(1, b"1")
    # After the restart the core hands out entry 2 again; a second delivery applies nothing.
    replicate(store, 0, _unwritten, commit=2)
    store.write(PassWrite((GroupWrite(0, committed=tuple(_unwritten)),), sync=False))
    assert store.read(0, b"k") == Versioned(2, b"2") and store.load(0, 10).applied == 2


def test_a_crash_inside_a_pass_leaves_nothing_of_it(stores: Reopen,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = stores()
    replicate(store, 0, [entry(1, put(b"k", b"1", b"r1"))], commit=1)

    def crash(*args: object) -> None:
        raise OSError("the disk went away")
    for module in (memory_store, lmdb_store):  # after the entries, before the hard state
        monkeypatch.setattr(module._Transaction, "put_hard_state", crash)
    with pytest.raises(OSError):
        replicate(store, 0, [entry(2, put(b"k", b"2", b"r2"))], commit=2)
    monkeypatch.undo()
    store = stores()
    loaded = store.load(0, 10)
    assert (loaded.last_index, loaded.applied, loaded.hard_state.commit) == (1, 1, 1)
    assert store.read(0, b"k") == Versioned(1, b"1")


def test_a_pass_is_one_transaction_for_every_group_with_work(tmp_path: Path) -> None:
    store = LmdbRaftStore(tmp_path / "raft", map_size=1 << 26)
    try:
        before = store.last_transaction()
        store.write(PassWrite(tuple(
            GroupWrite(group, HardState(1, "n1", 1), (entry(1, put(b"k", b"v", b"r")),),
                       committed=(entry(1, put(b"k", b"v", b"r")),))
            for group in range(50)), sync=True))
        assert store.last_transaction() == before + 1
        assert all(store.read(group, b"k") == Versioned(1, b"v") for group in range(50))
    finally:
        store.close()


def test_groups_are_independent(stores: Reopen) -> None:
    store = stores()
    replicate(store, 1, [entry(1, put(b"k", b"one", b"r"))], commit=1)
    replicate(store, 2, [entry(1, put(b"k", b"two", b"r")), entry(2)], commit=2)
    assert store.read(1, b"k") == Versioned(1, b"one")
    assert store.read(2, b"k") == Versioned(1, b"two")
    assert store.load(1, 5).last_index == 1 and store.load(2, 5).last_index == 2
    assert store.find_request(2, b"r") is not None and store.load(7, 5).last_index == 0


def test_new_entries_replace_a_conflicting_tail(stores: Reopen) -> None:
    store = stores()
    replicate(store, 0, [entry(1), entry(2), entry(3)], commit=1)
    replicate(store, 0, [entry(2, term=2)], commit=1, term=2)
    loaded = store.load(0, 10)
    assert loaded.last_index == 2 and [(e.index, e.term) for e in loaded.tail] == [(1, 1), (2, 2)]


def test_long_keys_are_stored_under_a_digest_and_read_back_whole(stores: Reopen) -> None:
    store = stores()
    long_key = b"x" * 5000
    replicate(store, 0, [entry(1, put(long_key, b"v", b"r1")),
                         entry(2, put(long_key + b"y", b"w", b"r2"))], commit=2)
    assert store.read(0, long_key) == Versioned(1, b"v")
    assert store.read(0, long_key + b"y") == Versioned(2, b"w")


# -- applying and the outcomes --------------------------------------------------------------------


def test_a_pass_returns_each_commands_outcome(stores: Reopen) -> None:
    store = stores()
    entries = [entry(1), entry(2, put(b"k", b"v", b"r1")),
               entry(3, put(b"k", b"w", b"r2", if_version=9)),
               entry(4, Delete(b"k", b"r3", if_version=2))]
    result = store.write(PassWrite((GroupWrite(0, HardState(1, None, 4), tuple(entries),
                                               committed=tuple(entries)),), sync=True))
    assert result.groups[0].outcomes == (
        (2, Outcome(Status.APPLIED, 2, 2)), (3, Outcome(Status.VERSION_MISMATCH, 2, 3)),
        (4, Outcome(Status.APPLIED, 0, 4)))
    assert result.groups[0].applied == 4
    assert store.find_request(0, b"r2").outcome.status is Status.VERSION_MISMATCH


def test_an_entry_in_an_unknown_format_stops_its_group_alone(stores: Reopen) -> None:
    store = stores()
    future = Entry(1, 1, bytes([FORMAT + 1]) + commands.encode(put(b"k", b"v", b"r"))[1:])
    result = store.write(PassWrite((
        GroupWrite(5, HardState(1, None, 1), (future,), committed=(future,)),
        GroupWrite(6, HardState(1, None, 1), (entry(1, put(b"k", b"v", b"r")),),
                   committed=(entry(1, put(b"k", b"v", b"r")),))), sync=True))
    failure = result.groups[5].failure
    assert failure is not None and "partition 5, entry 1" in failure
    assert f"format {FORMAT + 1}" in failure
    assert store.load(5, 10).last_index == 0  # nothing of group 5 written
    assert store.read(6, b"k") == Versioned(1, b"v")


# -- compaction and snapshots ---------------------------------------------------------------------


def test_compaction_snapshots_the_state_and_drops_the_log_behind_it(stores: Reopen) -> None:
    store = stores()
    entries = [entry(i, put(b"k%d" % i, b"v", b"r%d" % i)) for i in range(1, 11)]
    replicate(store, 0, entries, commit=8)
    result = store.write(PassWrite((GroupWrite(0, compact_keeping=2),), sync=False))
    assert result.groups[0].snapshot == (8, 1) and result.groups[0].compacted == (6, 1)
    store = stores()
    loaded = store.load(0, 100)
    assert (loaded.snapshot_index, loaded.compacted_index, loaded.last_index) == (8, 6, 10)
    assert [e.index for e in loaded.tail] == [7, 8, 9, 10]
    snapshot = store.read_snapshot(0)
    image = images.decode(snapshot.data)
    assert (snapshot.index, image.applied, len(image.keys)) == (8, 8, 8)
    # The entries after it still apply.
    store.write(PassWrite((GroupWrite(0, HardState(1, "n1", 10), committed=tuple(entries[8:])),),
                          sync=True))
    assert store.read(0, b"k10") == Versioned(10, b"v")


def test_a_snapshot_from_the_leader_replaces_log_and_state(stores: Reopen) -> None:
    leader = MemoryRaftStore()
    replicate(leader, 0, [entry(i, put(b"k", b"%d" % i, b"r%d" % i), term=2)
                          for i in range(1, 6)], commit=5, term=2)
    leader.write(PassWrite((GroupWrite(0, compact_keeping=0),), sync=False))
    snapshot = leader.read_snapshot(0)
    store = stores()
    replicate(store, 0, [entry(1, put(b"stale", b"x", b"s1")), entry(2), entry(3)], commit=1)
    store.write(PassWrite((GroupWrite(0, HardState(2, None, 5), snapshot=snapshot),), sync=True))
    store = stores()
    loaded = store.load(0, 10)
    assert (loaded.compacted_index, loaded.compacted_term, loaded.last_index) == (5, 2, 5)
    assert loaded.applied == 5 and loaded.tail == ()
    assert store.read(0, b"stale") is None and store.read(0, b"k") == Versioned(5, b"5")
    assert store.find_request(0, b"r3") is not None and store.find_request(0, b"s1") is None
    assert store.read_snapshot(0) == snapshot


def test_a_damaged_snapshot_is_refused_and_changes_nothing(stores: Reopen) -> None:
    store = stores()
    replicate(store, 0, [entry(1, put(b"k", b"v", b"r"))], commit=1)
    bad = Snapshot(9, 2, images.encode(images.PartitionImage(9))[:-1] + b"\x00")
    result = store.write(PassWrite((GroupWrite(0, HardState(2, None, 9), snapshot=bad),),
                                   sync=True))
    assert "checksum" in (result.groups[0].failure or "")
    assert store.read(0, b"k") == Versioned(1, b"v") and store.load(0, 5).last_index == 1


# -- LMDB itself ----------------------------------------------------------------------------------


def test_a_store_in_an_unknown_format_is_refused_at_open(tmp_path: Path) -> None:
    store = LmdbRaftStore(tmp_path / "raft", map_size=1 << 24)
    with store._env.begin(write=True, db=store._db.meta) as txn:
        txn.put(b"format", (FORMAT + 6).to_bytes(4, "big"))
    store.close()
    with pytest.raises(UnsupportedFormat) as refused:
        LmdbRaftStore(tmp_path / "raft", map_size=1 << 24)
    message = str(refused.value)
    assert str(tmp_path / "raft") in message and f"format {FORMAT + 6}" in message
    assert "newer kvstore" in message and refused.value.reason == "UNSUPPORTED_FORMAT"


def test_a_damaged_value_is_reported_not_returned(tmp_path: Path) -> None:
    store = LmdbRaftStore(tmp_path / "raft", map_size=1 << 24)
    try:
        replicate(store, 0, [entry(1, put(b"k", b"value", b"r"))], commit=1)
        key = lmdb_store._data_key(0, b"k")
        with store._env.begin(write=True, db=store._db.data) as txn:
            raw = bytearray(txn.get(key))
            raw[-1] ^= 0xFF
            txn.put(key, bytes(raw))
        with pytest.raises(DataLoss, match="checksum"):
            store.read(0, b"k")
    finally:
        store.close()


# -- GroupLog: the core's view --------------------------------------------------------------------


operations = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 3), st.integers(1, 4)),  # back, how many
    st.tuples(st.just("compact"), st.integers(0, 3), st.just(0))), max_size=25)


@properties(150)
@given(operations, st.integers(0, 4))
def test_group_log_reads_as_the_cores_memory_storage(ops: list[tuple[str, int, int]],
                                                     cached: int) -> None:
    store = MemoryRaftStore()
    view = GroupLog(0, store.load(0, cached), store, cached_entries=cached)
    model = MemoryLogStorage()
    term = 1
    for op, back, count in ops:
        if op == "append":
            # Raft never overwrites an applied (committed) entry.
            applied = store.load(0, 0).applied
            first = max(model.last_index() + 1 - back, model.first_index(), applied + 1, 1)
            term += 1
            new = tuple(Entry(i, term) for i in range(first, first + count))
            write = GroupWrite(0, HardState(term, None, 0), new)
            view.record(write, store.write(PassWrite((write,), sync=True)).groups[0])
            model.append(new)
        elif model.last_index() >= model.first_index():
            # Compaction needs applied entries: apply all there is, then compact.
            last = model.last_index()
            hard = HardState(term, None, last)
            committed = tuple(model.entries(1 if model.first_index() == 1 else
                                            model.first_index(), last + 1, None))
            applied_write = GroupWrite(0, hard, committed=tuple(
                e for e in committed if e.index > store.load(0, 0).applied))
            view.record(applied_write, store.write(PassWrite((applied_write,),
                                                              sync=False)).groups[0])
            compact = GroupWrite(0, compact_keeping=back)
            done = store.write(PassWrite((compact,), sync=False)).groups[0]
            view.record(compact, done)
            if done.snapshot is not None:
                model.create_snapshot(done.snapshot[0], b"")
            if done.compacted is not None:
                model.compact(done.compacted[0])
        assert (view.first_index(), view.last_index()) == (model.first_index(),
                                                           model.last_index())
        for index in range(model.first_index() - 1, model.last_index() + 1):
            assert view.term(index) == model.term(index)
        if model.last_index() >= model.first_index():
            low, high = model.first_index(), model.last_index() + 1
            assert view.entries(low, high, None) == model.entries(low, high, None)
            assert view.entries(high - 1, high, 0) == model.entries(high - 1, high, 0)
    reloaded = GroupLog(0, store.load(0, cached), store, cached_entries=cached)
    assert (reloaded.first_index(), reloaded.last_index()) == (view.first_index(),
                                                               view.last_index())


# -- a restart never applies an entry twice -------------------------------------------------------

small_keys = st.sampled_from([b"a", b"b", b"c"])
retried_ids = st.sampled_from([b"r%d" % n for n in range(6)])  # few ids: many retries
cas = st.none() | st.integers(0, 6)
log_commands = st.lists(st.one_of(
    st.builds(Put, small_keys, st.binary(max_size=3), retried_ids, st.just(0), cas),
    st.builds(Delete, small_keys, retried_ids, st.just(0), cas)), min_size=1, max_size=30)
# Per pass: entries it persists and commits, whether the process dies before
# it commits, and how far back before the applied index it hands entries out
# again (a core restarted with a stale applied index would).
schedules = st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.integers(0, 4)), max_size=12)


def applied_once(log: list[commands.Command], dedup: bool,
                 ) -> tuple[dict[bytes, Versioned], dict[int, Outcome]]:
    """The reference: each entry applied once, in log order, at its index
    (with `dedup`, a request id seen before applies nothing and gets the
    first outcome). Returns the data and each entry's outcome."""
    data: dict[bytes, Versioned] = {}
    first: dict[bytes, Outcome] = {}
    outcomes: dict[int, Outcome] = {}
    for index, command in enumerate(log, 1):
        if dedup and command.request_id in first:
            outcomes[index] = replace(first[command.request_id], duplicate=True)
            continue
        version = data[command.key].version if command.key in data else 0
        if command.if_version is not None and command.if_version != version:
            outcome = Outcome(Status.VERSION_MISMATCH, version, index)
        elif isinstance(command, Put):
            data[command.key] = Versioned(index, command.value)
            outcome = Outcome(Status.APPLIED, index, index)
        else:
            data.pop(command.key, None)
            outcome = Outcome(Status.APPLIED, 0, index)
        first[command.request_id] = outcomes[index] = outcome
    return data, outcomes


# Two regimes: ids remembered for longer than the test runs (a retry is a
# duplicate), and ids that expire before the next entry (each entry is
# proposed a second after the one before, ids live half a second), where a
# second delivery of an entry whose id was forgotten would write again: only
# the applied index stops it.
@pytest.mark.parametrize("kind", ["memory", "lmdb"])
@pytest.mark.parametrize("ttl_ms", [10**9, 500])
@properties(60)
@given(log=log_commands, schedule=schedules)
def test_reapplying_after_a_restart_never_applies_twice(
        kind: str, ttl_ms: int, log: list[commands.Command],
        schedule: list[tuple[int, bool, int]]) -> None:
    log = [replace(command, proposed_ms=1000 * index) for index, command in enumerate(log, 1)]
    with tempfile.TemporaryDirectory() as scratch:
        memory = MemoryRaftStore(request_id_ttl_ms=ttl_ms)
        opened: list[LmdbRaftStore] = []

        def reopen() -> RaftStore:
            if kind == "memory":
                return memory
            for old in opened:
                old.close()
            opened[:] = [LmdbRaftStore(Path(scratch), map_size=1 << 24,
                                       request_id_ttl_ms=ttl_ms)]
            return opened[0]

        entries = [entry(i, command) for i, command in enumerate(log, 1)]
        store = reopen()
        answered: list[tuple[int, Outcome]] = []  # every outcome any pass returned
        try:
            for count, dies, back in [*schedule, (len(entries), False, 0)]:
                loaded = store.load(0, 0)
                upto = min(loaded.last_index + count, len(entries))
                again = max(loaded.applied - back, 0)
                write = GroupWrite(0, HardState(1, "n1", upto),
                                   tuple(entries[loaded.last_index:upto]),
                                   committed=tuple(entries[again:upto]))
                if dies:
                    store = reopen()  # the pass never committed
                    continue
                answered += store.write(PassWrite((write,), sync=True)).groups[0].outcomes
            data, outcomes = applied_once(log, dedup=ttl_ms > 1000 * len(log))
            assert sorted(answered) == sorted(outcomes.items())  # each entry once
            assert {key: store.read(0, key) for key in data} == data
            assert all(store.read(0, key) is None for key in (b"a", b"b", b"c") if key not in data)
            assert store.load(0, 0).applied == len(entries)
        finally:
            for old in opened:
                old.close()


def test_a_missing_log_entry_is_reported_not_skipped(tmp_path: Path) -> None:
    store = LmdbRaftStore(tmp_path / "raft", map_size=1 << 24)
    try:
        replicate(store, 0, [Entry(i, 1, b"data") for i in range(1, 6)], commit=0)
        assert [e.index for e in store.read_entries(0, 2, 5, None)] == [2, 3, 4]
        assert [e.index for e in store.read_entries(0, 2, 5, 0)] == [2]  # at least one
        with store._env.begin(write=True, db=store._db.log) as txn:
            txn.delete(lmdb_store._group_prefix(0) + (3).to_bytes(8, "big"))
        with pytest.raises(DataLoss, match="log entry 3 is missing"):
            store.read_entries(0, 2, 5, None)
    finally:
        store.close()


# -- a restore's fence --------------------------------------------------------------------------


def test_a_restore_fences_every_group_and_the_fence_survives_a_reopen(stores: Reopen) -> None:
    from kvstore.leader.restore_fence import fence_store

    store = stores()
    replicate(store, 2, [entry(1), entry(2, put(b"k", b"v", b"r1"))], commit=2, term=3)
    replicate(store, 5, [entry(1, term=4), entry(2, term=4), entry(3, term=4)], commit=1,
              term=4)
    assert store.groups() == [2, 5]  # type: ignore[attr-defined]
    assert store.load(2, 10).hard_state.fence == 0  # none until a restore
    # Group 9 is the node's too, but the backup holds nothing of it yet.
    assert fence_store(store, 7, groups=[2, 5, 9]) == 3  # type: ignore[arg-type]
    store = stores()
    two, five = store.load(2, 10), store.load(5, 10)
    assert two.hard_state == HardState(term=8, vote=None, commit=2, fence=8)
    assert five.hard_state == HardState(term=8, vote=None, commit=1, fence=8)
    assert (two.last_index, five.last_index) == (2, 1)  # 5's uncommitted tail is cut
    nine = store.load(9, 10)
    assert nine.hard_state == HardState(term=8, commit=0, fence=8) and nine.last_index == 0
    assert store.read(2, b"k") == Versioned(2, b"v")
    # Lifted (the core writes a hard state without it): the record goes.
    store.write(PassWrite((GroupWrite(2, HardState(8, "n1", 2)),), sync=True))
    assert stores().load(2, 10).hard_state.fence == 0


def test_a_copy_of_a_leader_store_is_recognised_and_counts_its_keys(tmp_path: Path) -> None:
    from kvstore.storage.lmdb_engine import LmdbEngine

    store = LmdbRaftStore(tmp_path / "raft", map_size=1 << 24)
    replicate(store, 0, [entry(1, put(b"a", b"1", b"r1")), entry(2, put(b"b", b"2", b"r2"))],
              commit=2)
    copy = tmp_path / "copy.mdb"
    with open(copy, "wb") as out:
        store.copy_to(out.fileno())
    store.close()
    assert lmdb_store.keys_in_copy(copy) == 2
    engine = LmdbEngine(tmp_path / "leaderless", map_size=1 << 24)
    with open(tmp_path / "other.mdb", "wb") as out:
        engine.copy_to(out.fileno())
    engine.close()
    assert lmdb_store.keys_in_copy(tmp_path / "other.mdb") is None  # a leaderless node's
    (tmp_path / "junk").write_bytes(b"no database" * 100)
    with pytest.raises(ValueError, match="not an LMDB database"):
        lmdb_store.keys_in_copy(tmp_path / "junk")
