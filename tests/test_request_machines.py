"""The leaderless read and write machines, fed replies, failures, liveness
and deadlines by hand: no I/O, no event loop, no clock."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.causality import versions
from kvstore.causality.versions import DVVSet
from kvstore.errors import (
    NOT_APPLIED, UNKNOWN, DataLoss, DeadlineExceeded, InvalidArgument, KVStoreError,
    ResourceExhausted, Unavailable,
)
from kvstore.leaderless import read_request as read
from kvstore.leaderless import write_request as write
from kvstore.leaderless.read_request import ReadRequest
from kvstore.leaderless.write_request import WriteRequest

pytestmark = pytest.mark.timeout(60)

REPLICAS = ("n1", "n2", "n3")
RING = ("n1", "n2", "n3", "n4", "n5")


def state(value: bytes, node: str = "n1", counter: int = 1) -> DVVSet:
    return versions.update(None, versions.VersionVector(), node, value, False, counter)


def down(*nodes: str):  # type: ignore[no-untyped-def]
    return lambda node: node not in nodes


# -- reads ------------------------------------------------------------------------


def test_a_read_asks_r_replicas_this_node_first_and_answers_with_their_merge() -> None:
    request = ReadRequest(REPLICAS, 2, self_id="n2")
    assert request.start() == [read.Ask("n2"), read.Ask("n1")]
    newer = versions.update(state(b"a"), versions.join(state(b"a")), "n2", b"b", False, 2)
    assert request.reply("n2", newer) == []
    actions = request.reply("n1", state(b"a"))
    assert actions == [read.Answer(newer), read.Repair(("n1",), newer)]


def test_a_read_asks_convicted_replicas_last() -> None:
    request = ReadRequest(REPLICAS, 2, is_up=down("n1"))
    assert request.start() == [read.Ask("n2"), read.Ask("n3")]


def test_a_failed_replica_is_replaced_by_the_next_and_a_corrupt_one_repaired() -> None:
    request = ReadRequest(REPLICAS, 2, self_id="n1")
    request.start()
    assert request.failure("n1", DataLoss("checksum mismatch")) == [read.Ask("n3")]
    assert request.reply("n2", state(b"v")) == []
    assert request.reply("n3", state(b"v")) == [
        read.Answer(state(b"v")), read.Repair(("n1",), state(b"v"))]


def test_a_read_fails_once_too_few_replicas_are_left_naming_them() -> None:
    request = ReadRequest(REPLICAS, 3)
    request.start()
    (fail,) = request.failure("n2", Unavailable("connection refused"))
    assert isinstance(fail, read.Fail) and isinstance(fail.error, Unavailable)
    assert "r=3 needs 3 of 3 replicas" in str(fail.error)
    assert "n2: connection refused" in str(fail.error)


def test_a_read_past_its_deadline_says_who_answered_and_is_answered_once() -> None:
    request = ReadRequest(REPLICAS, 2)
    request.start()
    request.reply("n1", None)
    (fail,) = request.deadline()
    assert isinstance(fail, read.Fail) and isinstance(fail.error, DeadlineExceeded)
    assert "1 did, 2 did not answer (n2, n3)" in str(fail.error)
    assert request.reply("n2", state(b"v")) == [read.Repair(("n1",), state(b"v"))]
    assert request.deadline() == []


@properties(300)
@given(r=st.integers(1, 3), seed=st.integers(0, 2**32), self_id=st.sampled_from([None, *REPLICAS]))
def test_a_read_answers_once_and_only_after_r_replies(r: int, seed: int,
                                                      self_id: str | None) -> None:
    rng = random.Random(seed)
    request = ReadRequest(REPLICAS, r, self_id=self_id, is_up=lambda n: rng.random() < 0.7)
    outstanding = [a.node for a in request.start() if isinstance(a, read.Ask)]
    asked, replies, answers = list(outstanding), 0, []
    while outstanding:
        node = outstanding.pop(rng.randrange(len(outstanding)))
        if rng.random() < 0.5:
            replies += 1
            actions = request.reply(node, state(node.encode(), node))
        else:
            actions = request.failure(node, Unavailable("down"))
        for action in actions:
            if isinstance(action, read.Ask):
                assert action.node not in asked, "a replica is asked once"
                asked.append(action.node)
                outstanding.append(action.node)
            elif isinstance(action, (read.Answer, read.Fail)):
                answers.append(action)
                if isinstance(action, read.Answer):
                    assert replies >= r
    assert len(answers) == 1
    assert isinstance(answers[0], read.Answer) == (replies >= r)


# -- writes -----------------------------------------------------------------------------


def test_a_write_goes_through_the_first_replica_that_is_up_then_to_the_others() -> None:
    request = WriteRequest(REPLICAS, 2, ring_walk=RING, is_up=down("n1"))
    assert request.start() == [write.Apply("n2")]
    v = state(b"v", "n2")
    assert request.applied("n2", v) == [write.Hint("n1", "n4", v), write.Replicate("n3", v)]
    assert request.replicated("n3") == [write.Answer(v)]
    assert request.hinted("n1", "n4") == []


def test_a_replica_that_cannot_be_reached_is_hinted_and_an_unreachable_stand_in_passed_over() -> None:  # noqa: E501 (the name says the property)
    request = WriteRequest(REPLICAS, 3, ring_walk=RING)
    request.start()
    v = state(b"v")
    assert request.applied("n1", v) == [write.Replicate("n2", v), write.Replicate("n3", v)]
    assert request.replicate_failed("n3", Unavailable("connection refused")) == [
        write.Hint("n3", "n4", v)]
    assert request.hint_failed("n3", "n4", DeadlineExceeded("no answer")) == [
        write.Hint("n3", "n5", v)]
    assert request.replicated("n2") == []
    assert request.hinted("n3", "n5") == [write.Answer(v)]


def test_a_stand_in_whose_hint_bound_is_full_fails_the_write_that_may_still_appear() -> None:
    request = WriteRequest(REPLICAS, 3, ring_walk=RING, is_up=down("n3"))
    request.start()
    v = state(b"v")
    request.applied("n1", v)
    request.replicated("n2")
    (fail,) = request.hint_failed("n3", "n4", ResourceExhausted("holds 10 hints for n3"))
    # Every failure was a full store: the write fails as the store did.
    assert isinstance(fail, write.Fail) and isinstance(fail.error, ResourceExhausted)
    assert "via n4: holds 10 hints" in str(fail.error)
    assert fail.error.outcome == UNKNOWN and "may still appear" in str(fail.error)


def test_a_write_that_cannot_reach_w_is_refused_before_anything_is_applied() -> None:
    strict = WriteRequest(REPLICAS, 2, ring_walk=RING, is_up=down("n2", "n3"), sloppy=False)
    (fail,) = strict.start()
    assert isinstance(fail, write.Fail) and isinstance(fail.error, Unavailable)
    assert fail.error.outcome == NOT_APPLIED and fail.error.reason == "QUORUM_NOT_REACHED"
    assert "n2, n3 down" in str(fail.error) and "nothing was applied" in str(fail.error)
    # Sloppy, the stand-ins n4 and n5 make up for n2 and n3.
    sloppy = WriteRequest(REPLICAS, 3, ring_walk=RING, is_up=down("n2", "n3"))
    assert sloppy.start() == [write.Apply("n1")]
    # ... but not when they are down too.
    (fail,) = WriteRequest(REPLICAS, 2, ring_walk=RING, is_up=down("n2", "n3", "n4", "n5")).start()
    assert isinstance(fail, write.Fail) and fail.error.outcome == NOT_APPLIED


def test_a_write_failing_after_its_origin_applied_it_says_it_may_still_appear() -> None:
    request = WriteRequest(REPLICAS, 2, sloppy=False)
    request.start()
    request.applied("n1", state(b"v"))
    request.replicate_failed("n2", Unavailable("connection refused"))
    (fail,) = request.replicate_failed("n3", Unavailable("connection refused"))
    assert isinstance(fail, write.Fail) and fail.error.outcome == UNKNOWN
    assert fail.error.metadata == {"outcome": UNKNOWN, "required": "2", "acknowledged": "1"}
    assert "w=2 needs 2 of 3 replicas to acknowledge; 1 did" in str(fail.error)


def test_an_origin_that_fails_is_replaced_and_a_bad_request_is_not_retried() -> None:
    request = WriteRequest(REPLICAS, 2)
    request.start()
    assert request.apply_failed("n1", ResourceExhausted("store full")) == [write.Apply("n2")]
    (fail,) = request.apply_failed("n2", ResourceExhausted("store full"))
    assert isinstance(fail, write.Fail) and isinstance(fail.error, ResourceExhausted)
    assert fail.error.outcome == NOT_APPLIED
    bad = WriteRequest(REPLICAS, 2)
    bad.start()
    error = InvalidArgument("bad context")
    (fail,) = bad.apply_failed("n1", error)
    assert isinstance(fail, write.Fail) and fail.error is error
    assert bad.answered


def test_an_origin_past_the_deadline_may_or_may_not_have_applied() -> None:
    request = WriteRequest(REPLICAS, 2)
    request.start()
    (fail,) = request.deadline()
    assert isinstance(fail, write.Fail) and isinstance(fail.error, DeadlineExceeded)
    assert "origin replica n1 did not answer in time" in str(fail.error)
    assert fail.error.outcome == UNKNOWN


@properties(400)
@given(w=st.integers(1, 3), seed=st.integers(0, 2**32), sloppy=st.booleans())
def test_a_write_is_acknowledged_only_once_w_owners_hold_it(w: int, seed: int,
                                                            sloppy: bool) -> None:
    """Whatever the liveness and the outcomes: answered exactly once; an
    Answer only when W distinct owners acknowledged (themselves or by a
    hint); no hints under a strict quorum; a failure before any apply was
    sent says NOT_APPLIED, one after the origin applied UNKNOWN."""
    rng = random.Random(seed)
    request = WriteRequest(REPLICAS, w, ring_walk=RING, is_up=lambda n: rng.random() < 0.7,
                           sloppy=sloppy)
    pending = list(request.start())
    acked: set[str] = set()
    applied = sent = uncertain = False
    answers: list[write.Answer | write.Fail] = []
    while pending:
        action = pending.pop(rng.randrange(len(pending)))
        ok = rng.random() < 0.6
        error: KVStoreError = rng.choice([Unavailable("x"), DeadlineExceeded("x"),
                                          ResourceExhausted("x")])
        match action:
            case write.Apply(node):
                sent = True
                if ok:
                    applied = True
                    acked.add(node)
                    pending += request.applied(node, state(b"v", node))
                else:
                    uncertain |= not isinstance(error, ResourceExhausted)
                    pending += request.apply_failed(node, error)
            case write.Replicate(node):
                assert node in REPLICAS
                if ok:
                    acked.add(node)
                pending += request.replicated(node) if ok else request.replicate_failed(node, error)
            case write.Hint(owner, via):
                assert sloppy, "a strict quorum never hints"
                assert owner in REPLICAS and via not in REPLICAS
                if ok:
                    acked.add(owner)
                pending += (request.hinted(owner, via) if ok
                            else request.hint_failed(owner, via, error))
            case write.Answer() | write.Fail():
                answers.append(action)
    assert len(answers) == 1
    (answer,) = answers
    if isinstance(answer, write.Answer):
        assert len(acked) >= w
    else:
        assert answer.error.outcome == (UNKNOWN if applied or uncertain else NOT_APPLIED)
        if not sent:
            assert answer.error.outcome == NOT_APPLIED
