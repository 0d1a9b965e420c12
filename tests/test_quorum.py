"""The quorum decision: when a request is done or can no longer succeed, what a
failed one tells the client, and what a read answers and repairs."""

from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.leaderless.quorum import ReadQuorum, WriteQuorum
from kvstore.causality.versions import (
    DVVSet,
    Dot,
    Sibling,
    VersionVector,
    equal,
    join,
    lww_sync,
    lww_update,
    sync,
    update,
)

NODES = ("n1", "n2", "n3")
PROPERTIES = properties(200)


def write(current, context, node, value, ts):
    return update(current, context, node, value, False, ts)


# --- writes ----------------------------------------------------------------


def test_write_is_done_once_w_replicas_acknowledge():
    q = WriteQuorum(NODES, 2)
    q.ack("n2")
    assert not q.done and not q.settled and q.acks == 1
    q.ack("n1")
    assert q.done and q.settled and not q.failed
    assert q.acks == 2 and q.pending == ("n3",)


def test_write_fails_as_soon_as_too_few_replicas_are_left():
    q = WriteQuorum(NODES, 3)
    q.ack("n1")
    q.fail("n3", "connection refused")
    assert q.failed and q.settled and not q.done
    assert q.pending == ("n2",)
    assert dict(q.failures) == {"n3": "connection refused"}


def test_write_with_enough_replicas_left_has_not_failed_yet():
    q = WriteQuorum(NODES, 2)
    q.fail("n1", "deadline exceeded")
    assert not q.settled
    assert q.pending == ("n2", "n3")


def test_failed_write_explains_what_each_replica_did():
    q = WriteQuorum(NODES, 2)
    q.ack("n1")
    q.fail("n2", "deadline exceeded")
    q.fail("n3", "connection refused")
    assert q.error_message() == (
        "w=2 needs 2 of 3 replicas to acknowledge; 1 did, "
        "2 failed (n2: deadline exceeded; n3: connection refused)"
    )


def test_error_message_names_the_replicas_that_did_not_answer():
    q = WriteQuorum(NODES, 3)
    q.fail("n2", "unavailable")
    assert q.failed
    assert q.error_message() == (
        "w=3 needs 3 of 3 replicas to acknowledge; 0 did, "
        "1 failed (n2: unavailable), 2 did not answer (n1, n3)"
    )


def test_error_message_of_an_unsettled_quorum_says_who_is_still_out():
    # E.g. the coordinator's deadline passed before the replicas answered.
    q = WriteQuorum(NODES, 2)
    q.ack("n3")
    assert q.error_message() == (
        "w=2 needs 2 of 3 replicas to acknowledge; 1 did, 2 did not answer (n1, n2)"
    )


def test_error_message_never_raises_even_once_the_quorum_is_met():
    # A reply can land between the coordinator's deadline firing and its
    # building the error; that must not turn into a crash.
    q = WriteQuorum(["n1", "n2"], 1)
    q.ack("n1")
    assert q.error_message() == (
        "w=1 needs 1 of 2 replicas to acknowledge; 1 did, 1 did not answer (n2)"
    )


@pytest.mark.parametrize(
    "first, second",
    [("ack", "ack"), ("ack", "fail"), ("fail", "ack"), ("fail", "fail")],
)
def test_a_replica_answers_once(first, second):
    q = WriteQuorum(NODES, 2)
    answer = {"ack": lambda: q.ack("n1"), "fail": lambda: q.fail("n1", "boom")}
    answer[first]()
    with pytest.raises(ValueError, match="'n1' has already answered"):
        answer[second]()


def test_an_unknown_node_cannot_answer():
    q = WriteQuorum(NODES, 2)
    with pytest.raises(ValueError, match="'n9' is not one of the replicas"):
        q.ack("n9")
    with pytest.raises(ValueError, match="not one of the replicas"):
        q.fail("n9", "boom")
    assert q.pending == NODES


@pytest.mark.parametrize("required", [0, -1, 4])
def test_required_must_be_between_one_and_the_replica_count(required):
    with pytest.raises(ValueError, match=r"required must be 1\.\.3"):
        WriteQuorum(NODES, required)
    with pytest.raises(ValueError, match=r"required must be 1\.\.3"):
        ReadQuorum(NODES, required)


def test_no_replicas_is_refused():
    with pytest.raises(ValueError, match=r"required must be 1\.\.0"):
        WriteQuorum([], 1)


def test_replicas_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        WriteQuorum(["n1", "n1", "n2"], 2)


def test_answers_after_settling_are_recorded_without_changing_the_outcome():
    q = WriteQuorum(NODES, 1)
    q.ack("n1")
    q.fail("n2", "late")
    q.ack("n3")
    assert q.done and not q.failed and q.acks == 2 and q.pending == ()

    q = WriteQuorum(NODES, 3)
    q.fail("n1", "down")
    q.ack("n2")
    q.ack("n3")
    assert q.failed and not q.done and q.acks == 2


def test_failures_are_read_only():
    q = WriteQuorum(NODES, 2)
    q.fail("n1", "down")
    with pytest.raises(TypeError):
        q.failures["n2"] = "forged"  # type: ignore[index]


# --- reads -----------------------------------------------------------------

A1 = write(None, VersionVector(), "n1", b"v1", 10)


def test_read_is_done_once_r_replicas_reply_even_with_nothing():
    q = ReadQuorum(NODES, 2)
    q.reply("n1", A1)
    q.reply("n3", None)
    assert q.done and not q.failed and q.pending == ("n2",)
    assert dict(q.replies) == {"n1": A1, "n3": None}


def test_failed_read_explains_what_each_replica_did():
    q = ReadQuorum(NODES, 2)
    q.fail("n1", "deadline exceeded")
    q.reply("n2", A1)
    q.fail("n3", "data loss: checksum mismatch")
    assert q.failed
    assert q.error_message() == (
        "r=2 needs 2 of 3 replicas to answer; 1 did, "
        "2 failed (n1: deadline exceeded; n3: data loss: checksum mismatch)"
    )


def test_a_replica_replies_once():
    q = ReadQuorum(NODES, 2)
    q.reply("n1", None)
    with pytest.raises(ValueError, match="already answered"):
        q.reply("n1", A1)
    with pytest.raises(ValueError, match="not one of the replicas"):
        q.reply("n4", A1)


def test_merged_is_none_until_some_replica_holds_the_key():
    q = ReadQuorum(NODES, 2)
    assert q.merged() is None
    q.reply("n1", None)
    q.reply("n2", None)
    assert q.merged() is None
    assert q.stale(q.merged()) == ()


def test_merged_keeps_concurrent_writes_as_siblings():
    ctx = join(A1)
    alice = write(A1, ctx, "n1", b"alice", 11)
    bob = write(None, ctx, "n2", b"bob", 12)
    q = ReadQuorum(NODES, 3)
    q.reply("n1", alice)
    q.reply("n2", bob)
    q.reply("n3", A1)
    merged = q.merged()
    assert merged is not None and sorted(merged.values) == [b"alice", b"bob"]
    assert q.stale(merged) == NODES


def test_merged_drops_values_a_newer_reply_overwrote():
    newer = write(A1, join(A1), "n1", b"v2", 11)
    q = ReadQuorum(NODES, 2)
    q.reply("n2", A1)
    q.reply("n1", newer)
    assert q.merged() == newer
    assert q.stale(newer) == ("n2",)


def test_a_replica_that_holds_nothing_is_stale_when_another_holds_the_key():
    q = ReadQuorum(NODES, 2)
    q.reply("n1", None)
    q.reply("n2", A1)
    assert q.stale(q.merged()) == ("n1",)


def test_a_deleted_key_is_repaired_onto_replicas_that_hold_nothing():
    tombstone = update(A1, join(A1), "n1", b"", True, 11)
    q = ReadQuorum(NODES, 2)
    q.reply("n1", tombstone)
    q.reply("n2", None)
    merged = q.merged()
    assert merged is not None and merged.absent
    assert q.stale(merged) == ("n2",)


def test_replicas_that_failed_or_did_not_answer_are_not_repair_targets():
    q = ReadQuorum(NODES, 1)
    q.reply("n1", A1)
    q.fail("n2", "down")
    assert q.stale(None) == ("n1",)
    assert q.stale(A1) == ()


def test_an_empty_set_and_nothing_are_the_same_state():
    q = ReadQuorum(NODES, 2)
    q.reply("n1", DVVSet())
    q.reply("n2", None)
    assert q.stale(q.merged()) == ()
    assert q.stale(None) == ()


def test_a_different_copy_of_the_same_write_is_stale_though_histories_match():
    # versions.equal compares histories only; repair must compare siblings too.
    history = VersionVector({"n1": 1})
    good = DVVSet(history, (Sibling(Dot("n1", 1), b"value", False, 10),))
    other = DVVSet(history, (Sibling(Dot("n1", 1), b"valuf", False, 10),))
    assert equal(good, other)
    q = ReadQuorum(NODES, 2)
    q.reply("n1", good)
    q.reply("n2", other)
    merged = q.merged()
    assert merged == sync(good, other)
    assert q.stale(merged) == (("n1",) if merged == other else ("n2",))


def test_lww_read_keeps_only_the_newest_write():
    old = lww_update(None, "n1", b"old", False, 10)
    new = lww_update(None, "n2", b"new", False, 20)
    q = ReadQuorum(NODES, 2, lww=True)
    q.reply("n1", old)
    q.reply("n2", new)
    merged = q.merged()
    assert merged is not None and merged.values == [b"new"]
    assert merged.history == VersionVector({"n1": 1, "n2": 1})
    assert q.stale(merged) == ("n1", "n2")  # n2 has not seen n1's write yet


def test_without_lww_the_same_replies_are_siblings():
    old = lww_update(None, "n1", b"old", False, 10)
    new = lww_update(None, "n2", b"new", False, 20)
    q = ReadQuorum(NODES, 2)
    q.reply("n1", old)
    q.reply("n2", new)
    merged = q.merged()
    assert merged is not None and merged.values == [b"old", b"new"]


# --- properties --------------------------------------------------------------


@st.composite
def answer_orders(draw):
    """N replicas, a required count, and every replica's answer in some order."""
    n = draw(st.integers(1, 7))
    required = draw(st.integers(1, n))
    nodes = [f"n{i}" for i in range(1, n + 1)]
    order = draw(st.permutations(nodes))
    oks = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return nodes, required, list(zip(order, oks))


@PROPERTIES
@given(answer_orders(), st.booleans())
def test_a_quorum_settles_once_and_in_one_direction(case, reads):
    nodes, required, answers = case
    q: ReadQuorum | WriteQuorum
    if reads:
        q = read_quorum = ReadQuorum(nodes, required)
        succeed = lambda node: read_quorum.reply(node, None)  # noqa: E731
    else:
        q = write_quorum = WriteQuorum(nodes, required)
        succeed = write_quorum.ack
    succeeded, outcome = 0, None
    for node, ok in answers:
        if ok:
            succeed(node)
        else:
            q.fail(node, "boom")
        succeeded += ok
        assert not (q.done and q.failed)
        assert q.done == (succeeded >= required)
        assert q.failed == (succeeded + len(q.pending) < required)
        assert q.settled == (q.done or q.failed)
        if outcome is not None:
            assert (q.done, q.failed) == outcome
        elif q.settled:
            outcome = (q.done, q.failed)
    assert q.settled and q.pending == ()
    assert len(q.failures) == len(nodes) - succeeded
    if not reads:
        assert write_quorum.acks == succeeded
    assert q.error_message().startswith(f"{'r' if reads else 'w'}={required} needs")


@st.composite
def replica_states(draw, lww=False):
    """Each replica's set (None if it never held the key) after a random run of
    client writes and replica-to-replica syncs, so the sets are ones a real
    cluster could hold: diverged, overwritten, deleted, concurrent."""
    n = draw(st.integers(1, 5))
    nodes = [f"n{i}" for i in range(1, n + 1)]
    states: dict[str, DVVSet | None] = dict.fromkeys(nodes)
    seen: list[DVVSet | None] = [None]  # every set that existed: contexts to write from
    steps = st.tuples(
        st.sampled_from(nodes), st.sampled_from(nodes), st.booleans(), st.integers(0, 99),
        st.booleans(),
    )
    plan = draw(st.lists(steps, max_size=15))
    for step, (node, peer, is_write, pick, tombstone) in enumerate(plan):
        current = states[node]
        if is_write:
            value, stamp = (b"" if tombstone else b"v%d" % step), step % 4  # ties happen
            if lww:
                new = lww_update(current, node, value, tombstone, stamp)
            else:
                context = join(seen[pick % len(seen)])
                new = update(current, context, node, value, tombstone, stamp, max_siblings=99)
        else:
            other = states[peer]
            if other is None:
                continue
            new = other if current is None else (lww_sync if lww else sync)(current, other)
        states[node] = new
        seen.append(new)
    return states


@st.composite
def read_cases(draw):
    lww = draw(st.booleans())
    states = draw(replica_states(lww))
    nodes = list(states)
    order = draw(st.permutations(nodes))
    repliers = order[: draw(st.integers(1, len(nodes)))]
    return lww, states, repliers


def read(states, repliers, lww):
    q = ReadQuorum(list(states), len(repliers), lww=lww)
    for node in repliers:
        q.reply(node, states[node])
    return q


@PROPERTIES
@given(read_cases(), st.randoms(use_true_random=False))
def test_merged_is_the_sync_of_the_replies_in_any_order(case, random):
    lww, states, repliers = case
    merge = lww_sync if lww else sync
    held = [states[node] for node in repliers if states[node] is not None]
    expected = reduce(merge, held) if held else None
    shuffled = list(repliers)
    random.shuffle(shuffled)
    assert read(states, repliers, lww).merged() == expected
    assert read(states, shuffled, lww).merged() == expected


@PROPERTIES
@given(read_cases())
def test_repairing_the_stale_replicas_makes_every_replier_hold_the_merged_set(case):
    lww, states, repliers = case
    merge = lww_sync if lww else sync
    q = read(states, repliers, lww)
    merged = q.merged()
    stale = q.stale(merged)
    for node in repliers:
        if node not in stale:
            assert states[node] == merged or (merged is None and states[node] in (None, DVVSet()))
    repaired = dict(states)
    for node in stale:
        assert merged is not None  # nothing held anywhere means nothing to repair
        # A replica applies a repair as it applies any replica write: by merging.
        current = repaired[node]
        repaired[node] = merged if current is None else merge(current, merged)
    for node in repliers:
        assert repaired[node] == merged or (merged is None and repaired[node] in (None, DVVSet()))
    again = read(repaired, repliers, lww)
    assert again.merged() == merged
    assert again.stale(merged) == ()
