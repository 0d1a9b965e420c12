"""Hinted handoff policy: per-target bounds on pending hints, the replay
token bucket, and which node stands in for a down replica."""

import copy
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.leaderless.hints import (
    MIB,
    HintBook,
    HintPolicy,
    Pending,
    ReplayLimiter,
    WriteTarget,
    fallback_nodes,
)

PROPERTIES = properties(200)


# --- the hint book -----------------------------------------------------------


def test_default_policy():
    assert HintPolicy() == HintPolicy(10_000, 64 * MIB, 500.0)


@pytest.mark.parametrize(
    "changes",
    [
        dict(max_hints_per_target=-1),
        dict(max_hints_per_target=1.5),
        dict(max_bytes_per_target=-1),
        dict(max_bytes_per_target=True),
        dict(replay_rate_per_second=0),
        dict(replay_rate_per_second=math.inf),
    ],
)
def test_bad_policies_are_refused(changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        HintPolicy(**changes)


def test_count_bound_refuses_one_more_hint_for_that_target_only():
    book = HintBook(HintPolicy(max_hints_per_target=3))
    assert all(book.admit("n2", f"h{i}", 10) for i in range(3))
    assert not book.admit("n2", "h3", 10)
    assert book.pending("n2") == Pending(3, 30)
    assert not book.is_pending("n2", "h3")
    assert book.admit("n3", "h3", 10)


def test_byte_bound_refuses_a_hint_that_would_pass_it():
    book = HintBook(HintPolicy(max_bytes_per_target=100))
    assert book.admit("n2", "a", 60)
    assert not book.admit("n2", "b", 41)
    assert book.admit("n2", "b", 40)
    assert book.pending("n2") == Pending(2, 100)
    assert not book.admit("n2", "c", 1)
    assert book.admit("n2", "empty", 0)  # a full byte budget still has room for count


def test_a_hint_bigger_than_the_byte_bound_is_never_admitted():
    book = HintBook(HintPolicy(max_bytes_per_target=100))
    assert not book.admit("n2", "huge", 101)
    assert book.pending("n2") == Pending(0, 0)
    assert book.all_pending() == {}


def test_a_refusal_names_what_is_held_and_both_bounds():
    book = HintBook(HintPolicy(max_hints_per_target=2, max_bytes_per_target=100))
    assert book.admit("n2", "a", 30) and book.refusal("n2", 70) is None
    assert book.refusal("n2", 71) == (
        "holds 1 hints (30 bytes) for n2, its bound (max_hints_per_target=2, "
        "max_bytes_per_target=100); bring n2 back or write with fewer replicas")
    assert book.admit("n2", "b", 1)
    assert book.refusal("n2", 0) is not None and book.refusal("n3", 100) is None


def test_a_zero_bound_disables_hinted_handoff():
    book = HintBook(HintPolicy(max_hints_per_target=0))
    assert not book.admit("n2", "a", 1)


def test_acknowledged_hints_free_their_room():
    book = HintBook(HintPolicy(max_hints_per_target=2, max_bytes_per_target=100))
    assert book.admit("n2", "a", 50) and book.admit("n2", "b", 50)
    assert not book.admit("n2", "c", 50)
    assert book.acknowledged("n2", "a")
    assert book.pending("n2") == Pending(1, 50)
    assert book.admit("n2", "c", 50)
    assert book.acknowledged("n2", "b") and book.acknowledged("n2", "c")
    assert book.pending("n2") == Pending(0, 0)
    assert book.all_pending() == {}


def test_repeated_or_unknown_acknowledgements_change_nothing():
    book = HintBook()
    book.admit("n2", "a", 5)
    assert book.acknowledged("n2", "a")
    assert not book.acknowledged("n2", "a")
    assert not book.acknowledged("n9", "a")
    assert book.all_pending() == {}


def test_admitting_a_pending_hint_again_is_a_no_op():
    book = HintBook(HintPolicy(max_hints_per_target=1))
    assert book.admit("n2", "a", 5)
    assert book.admit("n2", "a", 5)  # a retry of the same write, even at the bound
    assert book.pending("n2") == Pending(1, 5)
    with pytest.raises(ValueError, match="already pending with size 5"):
        book.admit("n2", "a", 6)


@pytest.mark.parametrize("size", [-1, 1.5, True, None])
def test_sizes_are_non_negative_integers(size):
    with pytest.raises(ValueError, match="size"):
        HintBook().admit("n2", "a", size)


def test_all_pending_lists_targets_with_hints_sorted():
    book = HintBook()
    book.admit("n3", "a", 1)
    book.admit("n1", "b", 2)
    book.admit("n1", b"c", 3)  # ids are any hashable: LMDB keys are bytes
    assert book.all_pending() == {"n1": Pending(2, 5), "n3": Pending(1, 1)}
    assert list(book.all_pending()) == ["n1", "n3"]


def test_load_rebuilds_the_same_totals():
    book = HintBook(HintPolicy(max_hints_per_target=3))
    stored = []
    for i in range(5):
        for target in ("n1", "n2"):
            if book.admit(target, i, 100 + i):
                stored.append((target, i, 100 + i))
    book.acknowledged("n1", 0)
    stored.remove(("n1", 0, 100))
    rebuilt = HintBook(book.policy)
    rebuilt.load(stored)
    assert rebuilt.all_pending() == book.all_pending() == {
        "n1": Pending(2, 203), "n2": Pending(3, 303)
    }


def test_load_keeps_every_stored_hint_even_beyond_the_bounds():
    book = HintBook(HintPolicy(max_hints_per_target=2))
    book.load([("n2", i, 1) for i in range(5)])
    assert book.pending("n2") == Pending(5, 5)
    assert not book.admit("n2", "new", 1)
    for i in range(4):
        book.acknowledged("n2", i)
    assert book.admit("n2", "new", 1)


def test_load_replaces_what_the_book_held():
    book = HintBook()
    book.admit("n1", "old", 7)
    book.load([("n2", "a", 3)])
    assert book.all_pending() == {"n2": Pending(1, 3)}


def test_load_refuses_a_hint_stored_twice_and_keeps_the_book():
    book = HintBook()
    book.admit("n1", "a", 7)
    with pytest.raises(ValueError, match="stored twice"):
        book.load([("n2", "a", 3), ("n2", "a", 3)])
    assert book.all_pending() == {"n1": Pending(1, 7)}


operations = st.lists(
    st.tuples(
        st.sampled_from(["admit", "ack"]),
        st.sampled_from(["n1", "n2", "n3"]),
        st.integers(0, 15),  # hint id
        st.integers(0, 40),  # size
    ),
    max_size=80,
)


@PROPERTIES
@given(
    ops=operations,
    max_hints=st.integers(0, 6),
    max_bytes=st.integers(0, 120),
)
def test_book_matches_a_model_and_admit_never_passes_a_bound(ops, max_hints, max_bytes):
    book = HintBook(HintPolicy(max_hints_per_target=max_hints, max_bytes_per_target=max_bytes))
    model: dict[str, dict[int, int]] = {}
    for op, target, hint_id, size in ops:
        held = model.setdefault(target, {})
        if op == "ack":
            assert book.acknowledged(target, hint_id) == (held.pop(hint_id, None) is not None)
        elif hint_id in held:
            size = held[hint_id]  # re-admitting with another size is a caller bug
            assert book.admit(target, hint_id, size)
        else:
            fits = len(held) < max_hints and sum(held.values()) + size <= max_bytes
            assert (book.refusal(target, size) is None) == fits
            assert book.admit(target, hint_id, size) == fits
            if fits:
                held[hint_id] = size
        count, size_held = book.pending(target)
        assert count <= max_hints and size_held <= max_bytes
    expected = {t: Pending(len(h), sum(h.values())) for t, h in sorted(model.items()) if h}
    assert book.all_pending() == expected
    rebuilt = HintBook(book.policy)
    rebuilt.load((t, i, s) for t, held in model.items() for i, s in held.items())
    assert rebuilt.all_pending() == expected


# --- the replay limiter ------------------------------------------------------


def test_limiter_starts_full_and_refills_at_its_rate():
    # Times in eighths of a second are exact in binary floats; 100.1 - 100.0
    # is a hair under 0.1, so at 10/s it would not quite refill one token.
    limiter = ReplayLimiter(rate_per_second=8, burst=5)
    assert all(limiter.take(100.0) for _ in range(5))
    assert not limiter.take(100.0)
    assert not limiter.take(100.0625)
    assert limiter.take(100.125)
    assert not limiter.take(100.125)
    assert limiter.available(200.0) == 5  # never more than the burst


def test_take_takes_all_or_nothing():
    limiter = ReplayLimiter(rate_per_second=10, burst=5)
    assert limiter.take(0.0, 3)
    assert not limiter.take(0.0, 3)
    assert limiter.available(0.0) == 2
    assert limiter.take(0.0, 2)
    assert limiter.take(0.0, 0)


def test_wait_time_is_exact():
    limiter = ReplayLimiter(rate_per_second=10, burst=5)
    assert limiter.wait_time(0.0, 5) == 0.0
    assert limiter.take(0.0, 5)
    wait = limiter.wait_time(0.0, 3)
    assert wait == pytest.approx(0.3, abs=1e-12)
    assert not copy.deepcopy(limiter).take(wait - 1e-9, 3)
    assert limiter.take(wait, 3)


def test_time_going_backwards_adds_no_tokens():
    limiter = ReplayLimiter(rate_per_second=10, burst=2)
    assert limiter.take(10.0, 2)
    assert not limiter.take(5.0)
    assert limiter.available(10.0) == 0
    assert limiter.wait_time(5.0) == pytest.approx(5.1)  # the tokens come from 10.0 on


def test_a_request_beyond_the_burst_can_never_be_served():
    limiter = ReplayLimiter(rate_per_second=10, burst=5)
    with pytest.raises(ValueError, match="burst"):
        limiter.take(0.0, 6)
    with pytest.raises(ValueError, match="burst"):
        limiter.wait_time(0.0, 6)


@pytest.mark.parametrize(
    "rate, burst", [(0, 5), (-1, 5), (math.inf, 5), (10, 0.5), (10, math.nan), (True, 5)]
)
def test_bad_limiters_are_refused(rate, burst):
    with pytest.raises(ValueError):
        ReplayLimiter(rate, burst)


@PROPERTIES
@given(
    rate=st.floats(0.5, 1000.0),
    burst=st.integers(1, 50),
    attempts=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 10)), max_size=60),
)
def test_never_more_than_rate_times_t_plus_burst_tokens_in_any_span(rate, burst, attempts):
    limiter = ReplayLimiter(rate, burst)
    now, taken = 1000.0, []
    for step, n in attempts:
        now += step
        n = min(n, burst)
        if limiter.take(now, n):
            taken.append((now, n))
    for i, (start, _) in enumerate(taken):
        total = 0
        for end, n in taken[i:]:
            total += n
            assert total <= rate * (end - start) + burst + 1e-6


@PROPERTIES
@given(
    rate=st.floats(0.5, 1000.0),
    burst=st.integers(1, 50),
    steps=st.lists(st.tuples(st.floats(0.0, 0.5), st.integers(0, 10)), max_size=30),
    later=st.floats(-1.0, 1.0),
    n=st.integers(0, 50),
)
def test_wait_time_is_the_least_wait_after_which_take_succeeds(rate, burst, steps, later, n):
    limiter = ReplayLimiter(rate, burst)
    now = 1000.0
    for step, k in steps:
        now += step
        limiter.take(now, min(k, burst))
    now += later  # also ask from a time before the latest one seen
    n = min(n, burst)
    wait = limiter.wait_time(now, n)
    assert wait >= 0.0
    assert copy.deepcopy(limiter).take(now + wait, n)
    if wait > 1e-9:
        assert not copy.deepcopy(limiter).take(now + wait - 1e-9, n)


# --- sloppy quorum: who takes the write ------------------------------------

PREFERENCE = ["a", "b", "c"]
WALK = ["a", "b", "c", "d", "e", "f"]


def test_all_healthy_owners_take_the_write_themselves():
    assert fallback_nodes(PREFERENCE, WALK, set(), 3) == [
        ("a", None), ("b", None), ("c", None)
    ]


def test_one_down_owner_is_stood_in_for_by_the_next_healthy_node():
    assert fallback_nodes(PREFERENCE, WALK, {"b"}, 3) == [
        WriteTarget("a", None), WriteTarget("d", "b"), WriteTarget("c", None)
    ]


def test_two_down_owners_take_the_next_two_healthy_nodes_in_ring_order():
    assert fallback_nodes(PREFERENCE, WALK, {"a", "c", "d"}, 3) == [
        ("e", "a"), ("b", None), ("f", "c")
    ]


def test_too_few_healthy_nodes_give_fewer_targets():
    assert fallback_nodes(PREFERENCE, WALK, {"a", "b", "c", "d", "e"}, 3) == [("f", "a")]
    assert fallback_nodes(PREFERENCE, WALK, set(WALK), 3) == []
    assert fallback_nodes(PREFERENCE, PREFERENCE, {"b"}, 3) == [("a", None), ("c", None)]


def test_a_down_node_outside_the_preference_list_does_not_matter():
    assert fallback_nodes(PREFERENCE, WALK, {"d"}, 3) == [("a", None), ("b", None), ("c", None)]
    assert fallback_nodes(PREFERENCE, WALK, {"d", "b"}, 3) == [("a", None), ("e", "b"), ("c", None)]


def test_stand_ins_follow_the_walk_even_where_zones_interleave_it():
    # With zones the preference list can skip a node the walk meets first.
    assert fallback_nodes(["a", "c", "e"], ["a", "b", "c", "d", "e"], {"c"}, 3) == [
        ("a", None), ("b", "c"), ("e", None)
    ]


def test_only_the_first_n_nodes_are_owners():
    assert fallback_nodes(PREFERENCE, WALK, {"a"}, 2) == [("c", "a"), ("b", None)]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n "):
        fallback_nodes(PREFERENCE, WALK, set(), 0)
    with pytest.raises(ValueError, match="repeats"):
        fallback_nodes(["a", "b", "a"], WALK, set(), 3)


@st.composite
def placements(draw):
    nodes = [f"n{i}" for i in range(draw(st.integers(1, 9)))]
    walk = draw(st.permutations(nodes))
    owners = draw(st.integers(1, len(nodes)))
    # A preference list is a subsequence of the walk (zones may skip nodes).
    preference = [node for node in walk if draw(st.booleans())][:owners] or [walk[0]]
    down = draw(st.sets(st.sampled_from(nodes + ["elsewhere"])))
    n = draw(st.integers(1, len(preference) + 1))
    return preference, list(walk), down, n


@PROPERTIES
@given(placements())
def test_sloppy_quorum_properties(placement):
    preference, walk, down, n = placement
    targets = fallback_nodes(preference, walk, down, n)
    assert targets == fallback_nodes(preference, walk, down, n)  # deterministic
    owners = preference[:n]
    chosen = [t.node for t in targets]
    assert len(chosen) == len(set(chosen))
    stood_in_for = [t.intended_owner for t in targets if t.intended_owner is not None]
    assert len(stood_in_for) == len(set(stood_in_for))
    assert set(stood_in_for) <= set(owners) & down
    assert [t.node for t in targets if t.intended_owner is None] == [
        o for o in owners if o not in down
    ]
    stand_ins = [t.node for t in targets if t.intended_owner is not None]
    assert all(s not in down and s not in owners for s in stand_ins)
    # As many as possible: every down owner is covered unless spares ran out.
    spares = [node for node in walk if node not in owners and node not in down]
    assert len(stand_ins) == min(len([o for o in owners if o in down]), len(spares))
    assert stand_ins == spares[: len(stand_ins)]
