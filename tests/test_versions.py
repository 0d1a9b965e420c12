"""Dotted version vector sets: the classic scenarios, the merge laws, and a
model check of which siblings survive any history of writes and merges."""

import struct
import zlib
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.errors import DataLoss, FailedPrecondition
from kvstore.causality.versions import (
    DEFAULT_MAX_SIBLINGS,
    DVVSet,
    Dot,
    Sibling,
    VersionVector,
    concurrent,
    decode,
    descends,
    encode,
    equal,
    join,
    less,
    lww_sync,
    lww_update,
    sync,
    update,
)

EMPTY = VersionVector()
PROPERTIES = properties(150)


def write(current, context, node, value, ts, tombstone=False, **kw):
    return update(current, context, node, value, tombstone, ts, **kw)


def delete(current, context, node, ts):
    return update(current, context, node, b"", True, ts)


# --- the classic scenarios ---------------------------------------------------


def test_first_write_has_one_sibling_with_a_fresh_dot():
    s = write(None, EMPTY, "a", b"v1", 10)
    assert s.values == [b"v1"]
    assert s.siblings[0].dot == Dot("a", 1)
    assert join(s) == VersionVector({"a": 1})
    assert s.timestamp == 10


def test_two_clients_writing_from_the_same_context_make_two_siblings():
    s = write(None, EMPTY, "a", b"v1", 10)
    ctx = join(s)
    s = write(s, ctx, "a", b"alice", 11)
    s = write(s, ctx, "a", b"bob", 12)
    assert sorted(s.values) == [b"alice", b"bob"]


def test_write_with_the_joined_context_of_both_siblings_resolves_them():
    s = write(None, EMPTY, "a", b"v1", 10)
    ctx = join(s)
    s = write(s, ctx, "a", b"alice", 11)
    s = write(s, ctx, "b", b"bob", 12)
    resolved = write(s, join(s), "a", b"merged", 13)
    assert resolved.values == [b"merged"]
    assert descends(resolved, s) and not descends(s, resolved)


def test_blind_write_is_concurrent_with_existing_values():
    s = write(None, EMPTY, "a", b"v1", 10)
    s = write(s, EMPTY, "a", b"blind", 11)
    assert sorted(s.values) == [b"blind", b"v1"]


def test_write_with_context_replaces_what_it_read():
    s = write(None, EMPTY, "a", b"v1", 10)
    s = write(s, join(s), "a", b"v2", 11)
    assert s.values == [b"v2"]


def test_sync_of_diverged_replicas_keeps_both_writes():
    base = write(None, EMPTY, "a", b"v1", 10)
    on_a = write(base, join(base), "a", b"from-a", 11)
    on_b = write(base, join(base), "b", b"from-b", 12)
    assert concurrent(on_a, on_b)
    merged = sync(on_a, on_b)
    assert sorted(merged.values) == [b"from-a", b"from-b"]
    assert descends(merged, on_a) and descends(merged, on_b)


def test_sync_with_a_stale_replica_does_not_resurrect_overwritten_values():
    old = write(None, EMPTY, "a", b"old", 10)
    stale_replica = old
    fresh_replica = write(old, join(old), "a", b"new", 11)
    assert sync(fresh_replica, stale_replica).values == [b"new"]
    assert sync(stale_replica, fresh_replica).values == [b"new"]
    assert less(stale_replica, fresh_replica)


def test_delete_then_sync_does_not_bring_data_back():
    old = write(None, EMPTY, "a", b"v1", 10)
    deleted = delete(old, join(old), "a", 11)
    assert deleted.absent and deleted.values == []
    merged = sync(old, deleted)
    assert merged.absent
    assert merged == deleted


def test_delete_concurrent_with_a_write_leaves_the_write_readable():
    base = write(None, EMPTY, "a", b"v1", 10)
    deleted = delete(base, join(base), "a", 11)
    rewritten = write(base, join(base), "b", b"v2", 12)
    merged = sync(deleted, rewritten)
    assert merged.values == [b"v2"]
    assert len(merged.siblings) == 2 and not merged.absent


def test_empty_set_reads_as_absent():
    assert DVVSet().absent
    assert join(None) == EMPTY


def test_context_from_another_replica_still_replaces_what_it_saw():
    on_b = write(None, EMPTY, "b", b"from-b", 10)
    on_a = write(None, EMPTY, "a", b"from-a", 11)
    # The client read b's copy and writes through a: b's value is overwritten,
    # a's own value was not seen and stays.
    s = write(on_a, join(on_b), "a", b"new", 12)
    assert sorted(s.values) == [b"from-a", b"new"]
    assert sync(s, on_b).values == s.values


def test_partial_order_helpers():
    a = write(None, EMPTY, "a", b"1", 1)
    b = write(a, join(a), "a", b"2", 2)
    c = write(a, join(a), "b", b"3", 3)
    assert equal(a, a) and descends(a, a) and not less(a, a)
    assert less(a, b) and not less(b, a)
    assert concurrent(b, c) and not concurrent(a, b)


# --- the sibling cap ---------------------------------------------------------


def test_write_that_would_exceed_the_sibling_cap_fails_with_advice():
    s = None
    for i in range(DEFAULT_MAX_SIBLINGS):
        s = write(s, EMPTY, "a", b"%d" % i, i + 1)
    assert len(s.siblings) == DEFAULT_MAX_SIBLINGS
    with pytest.raises(FailedPrecondition) as info:
        write(s, EMPTY, "a", b"one too many", 100)
    assert str(info.value) == (
        "key has 65 siblings, the limit is 64; read the key and write back a "
        "resolved value with its context"
    )
    assert write(s, join(s), "a", b"resolved", 101).values == [b"resolved"]


def test_sibling_cap_is_a_parameter():
    s = write(None, EMPTY, "a", b"1", 1, max_siblings=2)
    s = write(s, EMPTY, "a", b"2", 2, max_siblings=2)
    with pytest.raises(FailedPrecondition, match="key has 3 siblings, the limit is 2"):
        write(s, EMPTY, "a", b"3", 3, max_siblings=2)


def test_sync_is_uncapped_by_default_so_replicas_always_converge():
    left = right = None
    for i in range(40):
        left = write(left, EMPTY, "a", b"a%d" % i, i + 1)
        right = write(right, EMPTY, "b", b"b%d" % i, i + 1)
    assert len(sync(left, right).siblings) == 80
    with pytest.raises(FailedPrecondition, match="key has 80 siblings, the limit is 64"):
        sync(left, right, max_siblings=64)


# --- last write wins ---------------------------------------------------------


def test_lww_keeps_the_highest_timestamp():
    s = lww_update(None, "a", b"first", False, 10)
    s = lww_update(s, "b", b"second", False, 20)
    s = lww_update(s, "c", b"late-but-older", False, 15)
    assert s.values == [b"second"] and len(s.siblings) == 1
    assert join(s) == VersionVector({"a": 1, "b": 1, "c": 1})


def test_lww_ties_break_by_node_id_then_value():
    from_a = lww_update(None, "a", b"z", False, 5)
    from_b = lww_update(None, "b", b"a", False, 5)
    assert lww_sync(from_a, from_b).values == [b"a"]  # node "b" > node "a"
    s = lww_update(None, "a", b"x", False, 5)
    assert lww_update(s, "a", b"y", False, 5).values == [b"y"]


def test_lww_delete_with_a_newer_timestamp_reads_absent():
    s = lww_update(None, "a", b"v", False, 10)
    s = lww_update(s, "b", b"", True, 11)
    assert s.absent
    assert lww_sync(lww_update(None, "a", b"v", False, 10), s).absent


# --- encoding ----------------------------------------------------------------


def test_encoding_round_trips_an_example():
    s = write(None, EMPTY, "a", b"v1", 10)
    s = write(s, EMPTY, "node-\u00e9", b"", 11, tombstone=True)
    assert decode(encode(s)) == s
    assert DVVSet.from_bytes(s.to_bytes()) == s


@pytest.mark.parametrize("cut", [0, 1, 5, -1])
def test_truncated_encoding_is_data_loss(cut):
    data = encode(write(None, EMPTY, "a", b"value", 1))
    with pytest.raises(DataLoss):
        decode(data[:cut])


def test_every_single_byte_corruption_is_data_loss():
    data = encode(write(write(None, EMPTY, "a", b"value", 1), EMPTY, "b", b"", 2, True))
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x41
        with pytest.raises(DataLoss):
            decode(bytes(corrupt))


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize(
    "body",
    [
        b"\x02\x00\x00\x00\x00\x00\x00",  # unknown format
        b"\x01\x00\x00\x00\x00\x00\x01" + struct.pack(">HQQBI", 0, 1, 1, 0, 0),  # no such node
        b"\x01\x00\x01\x00\x01a" + struct.pack(">Q", 0) + b"\x00\x00\x00\x00",  # zero counter
        b"\x01\x00\x01\x00\x01a"
        + struct.pack(">Q", 1)
        + b"\x00\x00\x00\x01"
        + struct.pack(">HQQBI", 0, 2, 1, 0, 0),  # dot beyond history
        b"\x01\x00\x01\x00\x01a"
        + struct.pack(">Q", 1)
        + b"\x00\x00\x00\x01"
        + struct.pack(">HQQBI", 0, 1, 1, 1, 1)
        + b"x",  # tombstone with a value
        b"\x01\x00\x00\x00\x00\x00\x00junk",  # trailing bytes
        b"\x01\x00\x01\x00\x02\xff\xfe" + struct.pack(">Q", 1) + b"\x00\x00\x00\x00",  # bad UTF-8
    ],
)
def test_malformed_encoding_with_a_valid_checksum_is_data_loss(body):
    with pytest.raises(DataLoss):
        decode(_with_crc(body))


@PROPERTIES
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_data_loss(body):
    for data in (body, _with_crc(body)):
        try:
            decode(data)
        except DataLoss:
            pass


# --- generated histories -----------------------------------------------------
#
# A plan is a list of steps on three replicas: a write through one replica
# with the context of some earlier state (or none: a blind write), or a
# one-way sync pulling another replica's set. Every state that ever existed
# is kept, stale ones included, to pick contexts and law-test operands from.

REPLICAS = ("a", "b", "c")


@dataclass(frozen=True)
class Model:
    """What a set should hold, tracked the slow obvious way: the writes it has
    seen, and those some seen write's context covered (so overwrote)."""

    seen: frozenset = frozenset()
    overwritten: frozenset = frozenset()


@dataclass
class History:
    states: dict = field(default_factory=lambda: {r: (DVVSet(), Model()) for r in REPLICAS})
    visited: list = field(default_factory=list)  # every (set, model) that existed
    written: dict = field(default_factory=dict)  # dot -> the sibling that write made


writes = st.tuples(
    st.just("write"),
    st.sampled_from(REPLICAS),
    st.one_of(st.none(), st.integers(min_value=0)),  # a past state whose context to use
    st.booleans(),  # a delete
)
syncs = st.tuples(st.just("sync"), st.sampled_from(REPLICAS), st.sampled_from(REPLICAS), st.none())
plans = st.lists(st.one_of(writes, syncs), min_size=1, max_size=25)


def run(plan, lww=False) -> History:
    h = History()
    h.visited.extend(h.states.values())
    for n, (kind, replica, arg, tombstone) in enumerate(plan, start=1):
        current, model = h.states[replica]
        if kind == "write":
            read, read_model = (None, Model()) if arg is None else h.visited[arg % len(h.visited)]
            value, stamp = (b"" if tombstone else b"w%d" % n), n % 7  # small stamps: ties
            if lww:
                new, read_model = lww_update(current, replica, value, tombstone, stamp), Model()
            else:
                context = join(read)
                new = update(current, context, replica, value, tombstone, stamp, max_siblings=99)
            dot = Dot(replica, new.history.counters[replica])
            h.written[dot] = Sibling(dot, value, tombstone, stamp)
            model = Model(
                model.seen | read_model.seen | {dot},
                model.overwritten | read_model.overwritten | read_model.seen,
            )
        else:
            other, other_model = h.states[arg]
            new = (lww_sync if lww else sync)(current, other)
            model = Model(
                model.seen | other_model.seen, model.overwritten | other_model.overwritten
            )
        h.states[replica] = (new, model)
        h.visited.append((new, model))
    return h


def dots_covered(vector):
    return {Dot(node, c) for node, n in vector.counters.items() for c in range(1, n + 1)}


@PROPERTIES
@given(plans)
def test_sets_keep_exactly_the_writes_no_seen_write_overwrote(plan):
    h = run(plan)
    for dvvset, model in h.visited:
        assert dots_covered(join(dvvset)) == model.seen
        assert set(dvvset.siblings) == {h.written[d] for d in model.seen - model.overwritten}


@PROPERTIES
@given(plans)
def test_lww_keeps_only_the_newest_write_seen(plan):
    h = run(plan, lww=True)

    def rank(s):
        return (s.timestamp, s.dot.node_id, s.value, s.tombstone, s.dot.counter)
    for dvvset, model in h.visited:
        assert dots_covered(join(dvvset)) == model.seen
        expected = max((h.written[d] for d in model.seen), key=rank, default=None)
        assert dvvset.siblings == ((expected,) if expected else ())


@st.composite
def three_states(draw, lww=False):
    visited = run(draw(plans), lww).visited
    return [visited[draw(st.integers(0, len(visited) - 1))][0] for _ in range(3)]


@PROPERTIES
@given(three_states())
def test_sync_is_commutative_associative_and_idempotent(sets):
    a, b, c = sets
    assert sync(a, b) == sync(b, a)
    assert sync(sync(a, b), c) == sync(a, sync(b, c))
    assert sync(a, a) == a
    merged = sync(a, b)
    assert descends(merged, a) and descends(merged, b)


@PROPERTIES
@given(three_states(lww=True))
def test_lww_sync_is_commutative_associative_and_idempotent(sets):
    a, b, c = sets
    assert lww_sync(a, b) == lww_sync(b, a)
    assert lww_sync(lww_sync(a, b), c) == lww_sync(a, lww_sync(b, c))
    assert lww_sync(a, a) == a
    assert len(lww_sync(a, b).siblings) <= 1


@PROPERTIES
@given(three_states())
def test_descends_is_a_partial_order(sets):
    a, b, c = sets
    assert descends(a, a)
    if descends(a, b) and descends(b, a):
        assert a == b  # the same history has the same surviving siblings
    if descends(a, b) and descends(b, c):
        assert descends(a, c)
    assert [less(a, b), less(b, a), equal(a, b), concurrent(a, b)].count(True) == 1


@PROPERTIES
@given(three_states())
def test_update_descends_what_it_replaced_and_what_it_read(sets):
    current, read, _ = sets
    new = update(current, join(read), "a", b"x", False, 1, max_siblings=99)
    assert less(current, new) and less(read, new)


@PROPERTIES
@given(st.one_of(three_states(), three_states(lww=True)))
def test_encoding_round_trips(sets):
    for s in sets:
        assert decode(encode(s)) == s


# --- counting from a floor (dots stay unique across a purged tombstone) ----


def test_a_floor_raises_the_new_dot_but_never_lowers_it():
    s = update(None, EMPTY, "a", b"v1", False, 10, counter_floor=1000)
    assert s.siblings[0].dot == Dot("a", 1000)
    s = update(s, join(s), "a", b"v2", False, 11, counter_floor=5)
    assert s.siblings[0].dot == Dot("a", 1001)  # the history's next counter wins
    lww = lww_update(None, "a", b"v", False, 10, counter_floor=77)
    assert lww.siblings[0].dot == Dot("a", 77)


def test_a_context_from_before_a_purge_cannot_replace_a_later_write():
    # Read, delete, then the tombstone is purged: the key's history is gone.
    old = update(None, EMPTY, "a", b"old", False, 100, counter_floor=100)
    stale_context = join(update(old, join(old), "a", b"", True, 101, counter_floor=101))
    reborn = update(None, EMPTY, "a", b"new", False, 5000, counter_floor=5000)
    # A writer still holding the stale context does not see (so keeps) the new value.
    later = update(reborn, stale_context, "a", b"late", False, 5001, counter_floor=5001)
    assert set(later.values) == {b"new", b"late"}
    # Counting from 1 again would have reissued a covered dot and lost b"new".
    unfloored = update(update(None, EMPTY, "a", b"new", False, 1), stale_context, "a",
                       b"late", False, 2)
    assert unfloored.values == [b"late"]


@PROPERTIES
@given(three_states(), st.integers(min_value=0, max_value=1 << 62))
def test_a_new_dot_exceeds_the_floor_the_history_and_the_context(sets, floor):
    current, read, _ = sets
    new = update(current, join(read), "a", b"x", False, 1, max_siblings=99,
                 counter_floor=floor)
    dot = Dot("a", new.history.counters["a"])
    assert any(sibling.dot == dot and sibling.value == b"x" for sibling in new.siblings)
    assert dot.counter >= floor
    assert dot.counter > current.history.counters.get("a", 0)
    assert dot.counter > join(read).counters.get("a", 0)
    assert less(current, new) and less(read, new)
