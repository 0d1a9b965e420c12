"""PreVote and CheckQuorum in the Raft core (the Raft thesis, 9.6): a node
that cannot win does not disrupt the group, a leader without a quorum steps
down, and voters ignore (pre-)votes while they hear from a leader (the
lease). Modelled on etcd-io/raft's testdata/prevote.txt, checkquorum.txt and
prevote_checkquorum.txt."""

from kvstore.leader.raft.messages import AppendResponse, Heartbeat, Vote, VoteResponse
from kvstore.leader.raft.raft import Role
from tests.raft_cluster import Cluster


def vote_answers(cluster: Cluster, to: str) -> list[tuple[str, bool, bool]]:
    return [(m.sender, m.pre_vote, m.granted) for m in cluster.sent
            if isinstance(m, VoteResponse) and m.to == to and m.sender != to]


def test_a_node_behind_on_the_log_gets_no_pre_votes_and_keeps_its_term() -> None:
    # prevote.txt
    cluster = Cluster(3, check_quorum=False)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.propose("1", b"x")
    cluster.stabilize()
    cluster.cut = set()
    cluster.nodes["3"].campaign()
    assert cluster.role("3") is Role.PRE_CANDIDATE and cluster.term("3") == 1
    cluster.stabilize()
    assert cluster.role("3") is Role.FOLLOWER and cluster.term("3") == 1
    assert [cluster.term(n) for n in "12"] == [1, 1] and cluster.role("1") is Role.LEADER
    # An up-to-date node can hold an election (pre-vote, then vote).
    cluster.elect("2")
    assert [cluster.term(n) for n in "123"] == [2, 2, 2]


def test_a_partitioned_node_with_pre_vote_does_not_inflate_its_term() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.tick("3", 100)  # it times out again and again, alone
    assert cluster.term("3") == 1 and cluster.role("3") is Role.PRE_CANDIDATE
    cluster.cut = set()
    cluster.tick("1")
    cluster.stabilize()
    assert cluster.role("1") is Role.LEADER and cluster.term("1") == 1  # no disruption
    assert cluster.leader_of("3") == "1"


def test_without_pre_vote_a_returning_node_forces_a_new_term() -> None:
    cluster = Cluster(3, pre_vote=False, check_quorum=False)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.tick("3", 100)
    assert cluster.term("3") > 1
    cluster.cut = set()
    cluster.tick("1")
    cluster.stabilize()
    assert cluster.term("1") > 1  # the disruption PreVote prevents


def test_a_leader_without_a_quorum_of_active_followers_steps_down() -> None:
    # checkquorum.txt
    cluster = Cluster(3, pre_vote=False)
    cluster.elect("1")
    cluster.cut = {"2", "3"}
    cluster.tick("1", 10)  # the followers were active in this interval
    assert cluster.role("1") is Role.LEADER
    cluster.tick("1", 10)  # and not in this one
    assert cluster.role("1") is Role.FOLLOWER and cluster.term("1") == 1
    assert cluster.leader_of("1") is None


def test_a_leader_with_its_quorum_active_stays() -> None:
    cluster = Cluster(5)
    cluster.elect("1")
    cluster.cut = {"4", "5"}
    for _ in range(50):
        cluster.tick("1")
        cluster.stabilize()
    assert cluster.role("1") is Role.LEADER


def test_without_check_quorum_a_cut_off_leader_stays_leader() -> None:
    cluster = Cluster(3, check_quorum=False, pre_vote=False)
    cluster.elect("1")
    cluster.cut = {"2", "3"}
    cluster.tick("1", 50)
    assert cluster.role("1") is Role.LEADER


def test_voters_ignore_votes_while_they_hear_from_a_leader() -> None:
    # checkquorum.txt: "campaigning will fail when there is an active leader"
    cluster = Cluster(3, pre_vote=False)
    cluster.elect("1")
    cluster.nodes["2"].campaign()
    cluster.stabilize()
    assert cluster.role("1") is Role.LEADER and cluster.term("1") == 1
    assert cluster.term("3") == 1  # ignored: not even its term moved
    assert cluster.term("2") == 2 and cluster.role("2") is Role.CANDIDATE


def test_a_voter_grants_pre_votes_once_it_has_not_heard_from_the_leader_for_a_timeout() -> None:
    # prevote_checkquorum.txt
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.nodes["2"].campaign()
    cluster.stabilize()
    assert cluster.role("1") is Role.LEADER  # 3 heard from 1: it refused 2's pre-vote
    assert ("3", True, True) not in vote_answers(cluster, "2")
    cluster.cut = {"1"}
    cluster.tick("3", 10)  # 3 has not heard from 1 for an election timeout
    cluster.elect("2")
    assert cluster.term("2") == 2 and ("3", True, True) in vote_answers(cluster, "2")


def test_pre_candidates_can_replace_a_leader_they_all_consider_dead() -> None:
    # prevote_checkquorum.txt: the lease binds followers, not pre-candidates.
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.nodes["2"].campaign()  # alone it loses: 3 hears from 1
    cluster.stabilize()
    assert cluster.role("2") is Role.PRE_CANDIDATE
    cluster.elect("3")  # 2, a pre-candidate, grants it
    assert cluster.term("3") == 2 and cluster.leader_of("1") == "3"


def test_a_transfer_campaign_is_granted_despite_the_lease() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    node = cluster.nodes["3"]
    node.step(Vote(to="3", sender="2", term=2, last_index=1, last_term=1, transfer=True))
    answer = node.ready().messages_after_persist[-1]
    assert isinstance(answer, VoteResponse) and answer.granted and answer.term == 2


def test_a_stale_leader_is_told_the_newer_term_and_steps_down() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"1"}
    cluster.tick("2", 10)
    cluster.tick("3", 10)
    cluster.elect("2")
    node = cluster.nodes["3"]
    node.step(Heartbeat(to="3", sender="1", term=1, commit=1))
    answer = node.ready().messages_after_persist[-1]
    assert isinstance(answer, AppendResponse) and answer.term == 2
    cluster.cut = set()
    cluster.nodes["1"].step(answer)
    assert cluster.role("1") is Role.FOLLOWER and cluster.term("1") == 2


def test_a_pre_vote_of_a_lower_term_is_rejected_with_the_voters_term() -> None:
    cluster = Cluster(3)
    node = cluster.nodes["3"]
    node.step(Heartbeat(to="3", sender="1", term=5, commit=0))
    node.step(Vote(to="3", sender="2", term=3, last_index=9, last_term=3, pre_vote=True))
    answers = [m for m in node.ready().messages_after_persist if isinstance(m, VoteResponse)]
    assert [(a.granted, a.pre_vote, a.term) for a in answers] == [(False, True, 5)]
