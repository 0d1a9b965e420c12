"""Linearizable reads in the Raft core: ReadIndex (the default; the Raft
thesis, 6.4) and the lease option (6.4.1). Modelled on etcd-io/raft's
raft_test.go TestReadOnlyOptionSafe / TestReadOnlyOptionLease /
TestReadOnlyForNewLeader, and forget_leader_read_only_lease_based.txt."""

import pytest

from kvstore.leader.raft.config import Config, ReadMode
from kvstore.leader.raft.leadership import ProposalDropped
from kvstore.leader.raft.messages import (
    Append, Entry, HardState, Heartbeat, HeartbeatResponse, ReadIndex, Vote,
)
from kvstore.leader.raft.raft import Role
from tests.raft_cluster import Cluster

LEASE = {"read_mode": ReadMode.LEASE}


def heartbeats(cluster: Cluster) -> list[Heartbeat]:
    return [m for m in cluster.in_flight if isinstance(m, Heartbeat)]


def test_a_read_is_released_only_after_a_quorum_acknowledges_a_heartbeat_round() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.propose("1", b"x")
    cluster.stabilize()
    cluster.nodes["1"].read_index(b"r")
    cluster.process_ready("1")
    assert cluster.read_states["1"] == []  # not on the leader's word alone
    assert len(heartbeats(cluster)) == 2
    cluster.deliver(only=lambda m: m.to == "2")
    cluster.process_ready("2")
    cluster.deliver()
    cluster.process_ready("1")
    assert [(s.index, s.context) for s in cluster.read_states["1"]] == [(2, b"r")]


def test_a_leader_cut_off_from_its_quorum_never_releases_a_read() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"2", "3"}
    cluster.nodes["1"].read_index(b"r")
    for _ in range(9):
        cluster.tick("1")
        cluster.stabilize()
    assert cluster.read_states["1"] == []


def test_reads_arriving_together_share_one_heartbeat_round() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    for n in range(5):
        cluster.nodes["1"].read_index(b"r%d" % n)
    cluster.process_ready("1")
    assert len(heartbeats(cluster)) == 2  # one round, not five
    cluster.stabilize()
    assert [s.context for s in cluster.read_states["1"]] == [b"r%d" % n for n in range(5)]


def test_a_read_arriving_after_a_round_was_sent_waits_for_the_next_round() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.nodes["1"].read_index(b"first")
    cluster.process_ready("1")
    round_one = cluster.take()
    cluster.nodes["1"].read_index(b"second")
    cluster.process_ready("1")
    cluster.in_flight = round_one  # the second round is lost
    cluster.stabilize()
    assert [s.context for s in cluster.read_states["1"]] == [b"first"]
    cluster.tick("1")  # the next round confirms it
    cluster.stabilize()
    assert [s.context for s in cluster.read_states["1"]] == [b"first", b"second"]


def test_a_new_leader_releases_reads_only_after_its_first_entry_commits() -> None:
    """Until its no-op commits, its commit index may lag what earlier leaders
    committed (TestReadOnlyForNewLeader)."""
    cluster = Cluster(3)
    for node in cluster.ids:
        cluster.storage[node].append([Entry(index=1, term=1), Entry(index=2, term=1, data=b"x")])
        cluster.storage[node].set_hard_state(HardState(term=1, commit=1))
        cluster.restart(node)
    cluster.nodes["1"].campaign()
    no_appends = lambda m: isinstance(m, Append)  # noqa: E731
    cluster.exchange(6, drop=no_appends)
    assert cluster.role("1") is Role.LEADER
    cluster.nodes["1"].read_index(b"r")
    cluster.tick("1", 3)  # heartbeat rounds go out and are answered
    cluster.exchange(6, drop=no_appends)
    assert cluster.read_states["1"] == []  # it cannot know index 2 was committed
    cluster.tick("1")  # the next heartbeat's answers resume the appends
    cluster.stabilize()
    assert [(s.index, s.context) for s in cluster.read_states["1"]] == [(3, b"r")]


def test_a_follower_read_is_confirmed_by_the_leader_and_released_on_the_follower() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.propose("1", b"x")
    cluster.stabilize()
    cluster.nodes["3"].read_index(b"r")
    cluster.process_ready("3")
    assert [type(m) for m in cluster.in_flight] == [ReadIndex]
    cluster.stabilize()
    assert [(s.index, s.context) for s in cluster.read_states["3"]] == [(2, b"r")]
    assert cluster.read_states["1"] == []


def test_a_read_with_no_leader_known_is_refused_at_once() -> None:
    cluster = Cluster(3)
    with pytest.raises(ProposalDropped):
        cluster.nodes["1"].read_index(b"r")


def test_a_single_node_confirms_reads_by_itself() -> None:
    cluster = Cluster(1)
    cluster.elect("1")
    cluster.nodes["1"].read_index(b"r")
    cluster.stabilize()
    assert [(s.index, s.context) for s in cluster.read_states["1"]] == [(1, b"r")]


def test_an_acknowledgement_from_an_old_round_confirms_no_newer_read() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    leader = cluster.nodes["1"]
    leader.read_index(b"r")
    cluster.process_ready("1")
    cluster.take()
    leader.step(HeartbeatResponse(to="1", sender="2", term=1, round=0))
    cluster.process_ready("1")
    assert cluster.read_states["1"] == []


# -- lease reads ----------------------------------------------------------------------


def test_with_a_lease_the_leader_answers_at_once_after_a_confirmed_round() -> None:
    cluster = Cluster(3, **LEASE)
    cluster.elect("1")
    cluster.tick("1")  # a heartbeat round, acknowledged: the lease starts
    cluster.stabilize()
    cluster.nodes["1"].read_index(b"r")
    ready = cluster.process_ready("1")
    assert ready is not None and not heartbeats(cluster)
    assert [s.context for s in cluster.read_states["1"]] == [b"r"]


def test_the_lease_runs_out_and_reads_fall_back_to_read_index() -> None:
    cluster = Cluster(3, **LEASE)
    cluster.elect("1")
    cluster.tick("1")
    cluster.stabilize()
    lease = cluster.config.lease_ticks
    cluster.cut = {"2", "3"}
    cluster.tick("1", lease)
    cluster.nodes["1"].read_index(b"r")
    cluster.process_ready("1")
    assert cluster.read_states["1"] == []  # asks the quorum instead (which is cut off)


def test_the_lease_is_shorter_than_a_followers_refusal_by_the_drift_bound() -> None:
    config = Config(id="1", voters=("1", "2", "3"), election_ticks=10,
                    read_mode=ReadMode.LEASE, clock_drift_bound=1.1)
    assert config.lease_ticks == 8  # (10 - 1) / 1.1
    with pytest.raises(ValueError, match="check_quorum"):
        Config(id="1", voters=("1",), read_mode=ReadMode.LEASE, check_quorum=False)


def test_no_lease_reads_once_a_transfer_was_asked_for() -> None:
    cluster = Cluster(3, **LEASE)
    cluster.elect("1")
    cluster.tick("1")
    cluster.stabilize()
    cluster.nodes["1"].transfer_leadership("2")
    cluster.process_ready("1")
    cluster.take()  # the TimeoutNow is delayed: 2 may still take over
    cluster.nodes["1"].read_index(b"r")
    cluster.process_ready("1")
    assert cluster.read_states["1"] == []


def test_a_restarted_voter_keeps_the_lease_it_may_have_promised() -> None:
    cluster = Cluster(3, **LEASE)
    cluster.elect("1")
    cluster.restart("3")
    node = cluster.nodes["3"]
    node.step(_vote_for_2(term=2))
    ready = cluster.process_ready("3")
    assert node.status().term == 1  # ignored: it may have acknowledged 1 just before
    assert ready is not None and not ready.messages_after_persist
    cluster.tick("3", 10)
    node.step(_vote_for_2(term=2))
    assert node.status().term == 2


def _vote_for_2(term: int) -> Vote:
    return Vote(to="3", sender="2", term=term, last_index=1, last_term=1)


def test_lease_settings_are_validated_at_construction() -> None:
    with pytest.raises(ValueError, match="too short"):
        Config(id="1", voters=("1",), election_ticks=2, heartbeat_ticks=1,
               read_mode=ReadMode.LEASE, clock_drift_bound=2.0)
