"""Leadership transfer in the Raft core (the Raft thesis, 3.10): the leader
brings the target's log up to date, sends TimeoutNow, and refuses proposals
meanwhile; the target campaigns at once, without PreVote and past the lease.
Modelled on etcd-io/raft's raft_test.go TestLeaderTransfer* tests."""

import pytest

from kvstore.leader.raft.leadership import DropReason, ProposalDropped
from kvstore.leader.raft.messages import TimeoutNow, Vote
from kvstore.leader.raft.raft import Role
from tests.raft_cluster import Cluster


def test_leadership_moves_to_a_caught_up_follower_at_once() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.nodes["1"].transfer_leadership("2")
    cluster.stabilize()
    assert cluster.role("2") is Role.LEADER and cluster.term("2") == 2
    assert cluster.leader_of("1") == "2" and cluster.leader_of("3") == "2"
    votes = [m for m in cluster.sent if isinstance(m, Vote) and m.sender == "2"]
    assert votes and all(m.transfer and not m.pre_vote for m in votes)


def test_a_lagging_target_is_caught_up_before_timeout_now() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.propose("1", b"x")
    cluster.stabilize()
    cluster.cut = set()
    cluster.nodes["1"].transfer_leadership("3")
    cluster.process_ready("1")
    assert not any(isinstance(m, TimeoutNow) for m in cluster.in_flight)
    cluster.stabilize()
    assert cluster.role("3") is Role.LEADER and cluster.data("3") == [b"x"]


def test_proposals_are_refused_while_a_transfer_is_under_way() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.nodes["1"].transfer_leadership("3")
    with pytest.raises(ProposalDropped) as refused:
        cluster.propose("1", b"x")
    assert refused.value.reason is DropReason.TRANSFERRING and refused.value.leader == "3"


def test_a_transfer_that_does_not_complete_in_an_election_timeout_is_abandoned() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.nodes["1"].transfer_leadership("3")
    assert cluster.nodes["1"].status().transferee == "3"
    for _ in range(10):
        cluster.tick("1")
        cluster.stabilize()
    status = cluster.nodes["1"].status()
    assert status.role is Role.LEADER and status.transferee is None
    cluster.propose("1", b"x")  # accepted again


def test_transfers_to_itself_are_ignored_and_to_a_stranger_refused() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.nodes["1"].transfer_leadership("1")
    assert cluster.nodes["1"].status().transferee is None
    with pytest.raises(ValueError):
        cluster.nodes["1"].transfer_leadership("9")
    with pytest.raises(ProposalDropped):
        cluster.nodes["2"].transfer_leadership("3")  # only the leader transfers


def test_a_transfer_succeeds_although_the_voters_hear_from_the_leader() -> None:
    cluster = Cluster(5)
    cluster.elect("1")
    for _ in range(3):
        cluster.tick("1")
        cluster.stabilize()
    cluster.nodes["1"].transfer_leadership("4")
    cluster.stabilize()
    assert cluster.role("4") is Role.LEADER


def test_a_candidate_ignores_timeout_now() -> None:
    cluster = Cluster(3)
    cluster.cut = {"2", "3"}
    cluster.nodes["1"].campaign()
    cluster.stabilize()
    term = cluster.term("1")
    cluster.nodes["1"].step(TimeoutNow(to="1", sender="2", term=term))
    assert cluster.term("1") == term
