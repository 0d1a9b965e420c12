"""Where a leader-mode request goes (`kvstore.leader.route`) and who is known
to lead (`kvstore.leader.leaders`): pure, fed refusals, silences and time."""

import pytest

from kvstore.errors import (
    DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable,
)
from kvstore.leader.leaders import LeaderBook
from kvstore.leader.route import Attempt, GiveUp, Kind, Pause, Route

pytestmark = pytest.mark.timeout(10)

REPLICAS = ("n1", "n2", "n3")


def route(kind: Kind = Kind.WRITE, *, self_id: str | None = "n1", leader: str | None = None,
          last_known: str | None = None, timeout: float = 5.0,
          leader_timeout: float = 2.0) -> Route:
    return Route(7, REPLICAS, kind, self_id=self_id, leader=leader, last_known=last_known,
                 now=0.0, timeout=timeout, leader_timeout=leader_timeout)


def not_leader(leader: str | None = None) -> Unavailable:
    metadata = {"outcome": "not_applied"}
    if leader:
        metadata["leader"] = leader
    return Unavailable("not the leader", reason="NOT_LEADER", metadata=metadata)


def test_a_write_goes_to_the_known_leader_first_and_a_read_to_this_replica() -> None:
    assert route(Kind.WRITE, leader="n3").next(0.0) == Attempt("n3", 2.0)
    assert route(Kind.READ, leader="n3").next(0.0) == Attempt("n1", 2.0)
    assert route(Kind.STALE_READ, leader="n3").next(0.0) == Attempt("n1", 2.0)
    # A coordinator (no replica of its own) with no leader known: the first replica.
    assert route(Kind.WRITE, self_id="c1").next(0.0) == Attempt("n1", 2.0)
    assert route(Kind.STALE_READ, self_id="c1", leader="n2").next(0.0) == Attempt("n2", 2.0)


def test_a_refusal_naming_the_leader_is_followed() -> None:
    r = route()
    assert r.next(0.0) == Attempt("n1", 2.0)
    r.refused("n1", not_leader("n3"))
    assert r.next(0.1) == Attempt("n3", pytest.approx(1.9))
    assert r.leader_last_known == "n3"


def test_two_nodes_naming_each_other_do_not_bounce_the_request() -> None:
    r = route()
    r.next(0.0)
    r.refused("n1", not_leader("n2"))
    assert r.next(0.0).node == "n2"  # type: ignore[union-attr]
    r.refused("n2", not_leader("n1"))
    assert r.next(0.0) == Attempt("n3", 2.0)


def test_when_no_replica_knows_a_leader_the_route_pauses_longer_each_round_then_gives_up() -> None:
    r = route()
    pauses = []
    now = 0.0
    while True:
        step = r.next(now)
        if isinstance(step, GiveUp):
            break
        if isinstance(step, Pause):
            pauses.append(step.seconds)
            now += step.seconds
        else:
            r.refused(step.node, not_leader())
    assert pauses[:4] == [0.025, 0.05, 0.1, 0.2] and max(pauses) == 0.2
    error = step.error
    assert isinstance(error, Unavailable) and error.reason == "NOT_LEADER"
    assert error.outcome == "not_applied" and error.metadata["partition"] == "7"
    assert "partition 7" in str(error) and "no leader was known" in str(error)
    assert now == pytest.approx(2.0)


def test_a_write_a_node_took_and_did_not_answer_fails_with_an_unknown_outcome() -> None:
    r = route(leader="n2")
    assert r.next(0.0) == Attempt("n2", 2.0)
    r.unanswered("n2")
    step = r.next(2.0)
    assert isinstance(step, GiveUp) and r.next(2.1) == step  # and it stays given up
    error = step.error
    assert isinstance(error, Unavailable) and error.reason == "NO_QUORUM"
    assert error.outcome == "unknown" and error.metadata["leader"] == "n2"
    assert "n2" in str(error) and "may still apply" in str(error)


def test_an_unknown_outcome_stays_unknown_after_later_refusals() -> None:
    r = route(leader="n2")
    r.next(0.0)
    r.unanswered("n2")
    assert r.next(0.5).node == "n1"  # type: ignore[union-attr]
    r.refused("n1", not_leader())
    r.next(0.6)
    r.refused("n3", not_leader())
    while not isinstance(step := r.next(3.0), GiveUp):
        pass
    assert step.error.outcome == "unknown"


def test_the_request_deadline_first_is_a_deadline_exceeded() -> None:
    r = route(leader="n2", timeout=1.0, leader_timeout=2.0)
    assert r.next(0.0) == Attempt("n2", 1.0)
    r.refused("n2", DeadlineExceeded("no time", metadata={"outcome": "unknown"}))
    error = r.next(1.0).error  # type: ignore[union-attr]
    assert isinstance(error, DeadlineExceeded) and error.reason == "DEADLINE_EXCEEDED"
    assert error.outcome == "unknown"


def test_a_definite_answer_ends_the_route() -> None:
    mismatch = FailedPrecondition("version", reason="VERSION_MISMATCH",
                                  metadata={"current_version": "4"})
    r = route()
    r.next(0.0)
    r.refused("n1", mismatch)
    assert r.next(0.0) == GiveUp(mismatch)
    bad = InvalidArgument("bad key")
    r = route()
    r.next(0.0)
    r.refused("n1", bad)
    assert r.next(0.0) == GiveUp(bad)


def test_a_read_has_no_outcome_and_a_stale_read_tries_each_replica_once() -> None:
    r = route(Kind.READ)
    r.next(0.0)
    r.unanswered("n1")
    while not isinstance(step := r.next(2.5), GiveUp):
        pass
    assert "outcome" not in step.error.metadata
    r = route(Kind.STALE_READ, leader="n3")
    seen = []
    while isinstance(step := r.next(0.0), Attempt):
        seen.append(step.node)
        r.unanswered(step.node)
    assert seen == ["n1", "n3", "n2"]
    assert isinstance(step.error, Unavailable) and step.error.reason == "NO_REPLICA"


def test_the_book_keeps_the_newest_leader_and_the_last_known() -> None:
    book = LeaderBook()
    assert book.learn(3, "n1", term=4)
    assert not book.learn(3, "n2", term=3)  # older news
    assert book.leader_of(3) == "n1"
    assert book.learn(3, "n2")  # a hint: newer than anything known
    assert book.known(3).term == 4  # type: ignore[union-attr]
    book.forget(3, "n1")  # not the one known: nothing changes
    assert book.leader_of(3) == "n2"
    book.forget(3, "n2")
    assert book.leader_of(3) is None and book.last_known(3) == "n2"
    assert book.learn(3, "n3", term=5)
    assert book.learn(3, None, term=6) and book.leader_of(3) is None
    assert not book.learn(3, None, term=6)
