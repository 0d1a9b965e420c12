"""Leader election in the Raft core: randomized timeouts, terms, one vote per
term, the log up-to-date check, and that a vote is only sent once persisted.
Modelled on etcd-io/raft's testdata/campaign.txt and single_node.txt and on
raft_paper_test.go (sections 5.2 and 5.4.1)."""

import random

import pytest

from kvstore.leader.raft.config import Config
from kvstore.leader.raft.messages import Entry, HardState, Vote, VoteResponse
from kvstore.leader.raft.node import RawNode
from kvstore.leader.raft.raft import Role
from kvstore.leader.raft.storage import MemoryLogStorage
from tests.raft_cluster import Cluster

NO_PRE_VOTE = {"pre_vote": False, "check_quorum": False}


def ticks_to_campaign(seed: int, election_ticks: int = 10) -> int:
    node = RawNode(Config(id="1", voters=("1", "2", "3"), election_ticks=election_ticks,
                          pre_vote=False), MemoryLogStorage(), random.Random(seed))
    for tick in range(1, 3 * election_ticks):
        node.tick()
        if node.status().role is Role.CANDIDATE:
            return tick
    raise AssertionError("never campaigned")


def test_a_follower_campaigns_after_a_randomized_timeout_in_one_to_two_election_timeouts() -> None:
    timeouts = {ticks_to_campaign(seed) for seed in range(40)}
    assert min(timeouts) >= 10 and max(timeouts) <= 19
    assert len(timeouts) > 5  # spread, so split votes do not repeat


def test_the_timeout_jitter_comes_only_from_the_seeded_rng() -> None:
    assert [ticks_to_campaign(7) for _ in range(3)] == [ticks_to_campaign(7)] * 3


def test_a_candidate_with_a_majority_of_votes_becomes_leader_and_others_follow() -> None:
    # campaign.txt
    cluster = Cluster(3, **NO_PRE_VOTE)
    cluster.nodes["1"].campaign()
    assert cluster.role("1") is Role.CANDIDATE and cluster.term("1") == 1
    cluster.stabilize()
    assert [cluster.role(n) for n in "123"] == [Role.LEADER, Role.FOLLOWER, Role.FOLLOWER]
    assert {cluster.leader_of(n) for n in "123"} == {"1"}
    assert {cluster.storage[n].hard_state().term for n in "123"} == {1}
    assert [cluster.storage[n].hard_state().vote for n in "123"] == ["1", "1", "1"]


def test_a_candidate_without_a_majority_stays_candidate_and_retries_in_a_new_term() -> None:
    cluster = Cluster(3, **NO_PRE_VOTE)
    cluster.cut = {"2", "3"}
    cluster.nodes["1"].campaign()
    cluster.stabilize()
    assert cluster.role("1") is Role.CANDIDATE
    cluster.tick("1", 20)
    assert cluster.role("1") is Role.CANDIDATE and cluster.term("1") == 2


def test_a_single_node_elects_itself_once_its_vote_is_persisted() -> None:
    # single_node.txt
    cluster = Cluster(1, **NO_PRE_VOTE)
    cluster.nodes["1"].campaign()
    assert cluster.role("1") is Role.CANDIDATE
    ready = cluster.process_ready("1")
    assert ready is not None and ready.hard_state == HardState(term=1, vote="1", commit=0)
    assert cluster.role("1") is Role.LEADER  # counted its vote at advance()
    cluster.stabilize()
    assert cluster.nodes["1"].status().commit == 1  # its no-op


def test_a_member_votes_at_most_once_per_term() -> None:
    cluster = Cluster(3, **NO_PRE_VOTE)
    node = cluster.nodes["3"]
    node.step(Vote(to="3", sender="1", term=1, last_index=0, last_term=0))
    node.step(Vote(to="3", sender="2", term=1, last_index=0, last_term=0))
    node.step(Vote(to="3", sender="1", term=1, last_index=0, last_term=0))  # a repeat
    ready = node.ready()
    answers = [(m.to, m.granted) for m in ready.messages_after_persist
               if isinstance(m, VoteResponse)]
    assert answers == [("1", True), ("2", False), ("1", True)]
    assert ready.hard_state == HardState(term=1, vote="1")


def test_votes_and_their_hard_state_leave_only_after_persisting() -> None:
    cluster = Cluster(3, **NO_PRE_VOTE)
    cluster.nodes["3"].step(Vote(to="3", sender="1", term=1, last_index=0, last_term=0))
    ready = cluster.nodes["3"].ready()
    assert ready.must_sync and ready.hard_state is not None
    assert not ready.messages  # nothing may go before the vote is on disk
    assert [type(m) for m in ready.messages_after_persist] == [VoteResponse]


def stored(node_terms: list[int], term: int) -> MemoryLogStorage:
    storage = MemoryLogStorage()
    storage.append([Entry(index=i + 1, term=t) for i, t in enumerate(node_terms)])
    storage.set_hard_state(HardState(term=term))
    return storage


@pytest.mark.parametrize("candidate_log, granted", [
    ([1, 1, 2], True),    # the same log
    ([1, 1, 2, 2], True),  # longer
    ([1, 1], False),       # shorter, same last term
    ([1, 1, 1, 1, 1], False),  # longer but an older last term
    ([3], True),           # shorter but a newer last term
])
def test_a_vote_goes_only_to_a_candidate_whose_log_is_at_least_as_up_to_date(
        candidate_log: list[int], granted: bool) -> None:
    voter = RawNode(Config(id="2", voters=("1", "2", "3"), **NO_PRE_VOTE),
                    stored([1, 1, 2], term=3), random.Random(0))
    voter.step(Vote(to="2", sender="1", term=4, last_index=len(candidate_log),
                    last_term=candidate_log[-1]))
    answer = voter.ready().messages_after_persist[0]
    assert isinstance(answer, VoteResponse) and answer.granted is granted
    assert voter.status().term == 4  # the term moves on either way


def test_a_node_with_a_stale_log_cannot_win_and_an_up_to_date_one_then_wins() -> None:
    cluster = Cluster(3, **NO_PRE_VOTE)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.propose("1", b"x")
    cluster.stabilize()
    cluster.cut = set()
    cluster.nodes["3"].campaign()  # its log lacks b"x"
    cluster.stabilize()
    assert cluster.role("3") is not Role.LEADER
    cluster.elect("2")
    assert cluster.data("3") == [b"x"]


def test_a_leader_steps_down_on_a_message_of_a_higher_term() -> None:
    cluster = Cluster(3, **NO_PRE_VOTE)
    cluster.elect("1")
    cluster.cut = {"1"}
    cluster.elect("2")
    cluster.cut = set()
    cluster.tick("2", 1)  # a heartbeat of term 2 reaches the old leader
    cluster.stabilize()
    assert cluster.role("1") is Role.FOLLOWER and cluster.term("1") == 2
    assert cluster.leader_of("1") == "2"


def test_messages_of_a_lower_term_are_ignored() -> None:
    cluster = Cluster(3, **NO_PRE_VOTE)
    cluster.elect("1")
    cluster.elect("2")
    before = cluster.nodes["3"].status()
    cluster.nodes["3"].step(Vote(to="3", sender="1", term=1, last_index=9, last_term=1))
    assert cluster.nodes["3"].status() == before and not cluster.nodes["3"].has_ready()


def test_a_restarted_member_keeps_its_term_and_vote_and_does_not_vote_again() -> None:
    cluster = Cluster(3, **NO_PRE_VOTE)
    node = cluster.nodes["3"]
    node.step(Vote(to="3", sender="1", term=5, last_index=0, last_term=0))
    cluster.process_ready("3")
    cluster.restart("3")
    assert cluster.nodes["3"].status().term == 5 and cluster.nodes["3"].status().vote == "1"
    cluster.nodes["3"].step(Vote(to="3", sender="2", term=5, last_index=0, last_term=0))
    answer = cluster.nodes["3"].ready().messages_after_persist[0]
    assert isinstance(answer, VoteResponse) and not answer.granted


def test_five_members_elect_exactly_one_leader_by_ticking_alone() -> None:
    for seed in range(10):
        cluster = Cluster(5, seed=seed)
        for _ in range(60):
            cluster.tick_all()
            cluster.stabilize()
        leaders = [n for n in cluster.ids if cluster.role(n) is Role.LEADER]
        assert len(leaders) == 1, (seed, leaders)
        assert {cluster.leader_of(n) for n in cluster.ids} == set(leaders)
