"""Log replication in the Raft core: the no-op of a new term, commit by a
majority of persisted copies and only of the leader's own term, the
consistency check with fast backtracking, conflicting tails, and what may be
sent before persisting. Modelled on etcd-io/raft's testdata/
probe_and_replicate.txt (the Raft paper's figure 7) and lagging_commit.txt,
and raft_paper_test.go (sections 5.3 and 5.4.2)."""

from kvstore.leader.raft.messages import (
    Append, AppendResponse, Entry, HardState, Heartbeat, Message,
)
from kvstore.leader.raft.progress import ProgressState
from kvstore.leader.raft.raft import Role
from tests.raft_cluster import Cluster


def appends(messages: list[Message]) -> list[Append]:
    return [m for m in messages if isinstance(m, Append)]


def test_a_new_leader_appends_an_empty_entry_of_its_term_and_commits_it() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    for node in "123":
        assert cluster.log(node) == [(1, 1)]
        assert cluster.applied[node] == [b""]
        assert cluster.nodes[node].status().commit == 1


def test_every_member_applies_the_proposals_in_the_same_order() -> None:
    cluster = Cluster(5)
    cluster.elect("2")
    for value in (b"a", b"b", b"c"):
        cluster.propose("2", value)
    cluster.stabilize()
    assert {tuple(cluster.data(n)) for n in cluster.ids} == {(b"a", b"b", b"c")}


def test_propose_returns_the_entry_whose_index_and_term_identify_the_write() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    entry = cluster.propose("1", b"x")
    assert (entry.index, entry.term) == (2, 1)
    cluster.stabilize()
    assert cluster.applied_entries["1"][-1] == entry


def test_the_leader_sends_appends_before_persisting_but_counts_itself_only_after() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.propose("1", b"x")
    leader = cluster.nodes["1"]
    ready = leader.ready()
    assert ready.entries and appends(list(ready.messages))  # may leave before the fsync
    assert not ready.messages_after_persist
    # Without its own copy persisted, one follower is not a majority yet...
    for m in ready.messages:
        cluster.nodes[m.to].step(m)
    acks = []
    for node in "23":
        follower = cluster.nodes[node].ready()
        assert not follower.messages  # a follower's acknowledgement waits for its fsync
        acks += follower.messages_after_persist
        cluster.storage[node].append(follower.entries)
        if follower.hard_state:
            cluster.storage[node].set_hard_state(follower.hard_state)
        cluster.nodes[node].advance(follower)
    cluster.storage["1"].append(ready.entries)
    leader.advance(ready)
    assert leader.status().commit == 1
    leader.step(acks[0])
    assert leader.status().commit == 2  # its own and one follower's: a majority


def test_a_single_node_commits_its_entries_once_persisted() -> None:
    cluster = Cluster(1)
    cluster.elect("1")
    cluster.propose("1", b"x")
    ready = cluster.nodes["1"].ready()
    assert not ready.committed_entries
    cluster.storage["1"].append(ready.entries)
    cluster.nodes["1"].advance(ready)
    assert cluster.nodes["1"].status().commit == 2


def test_entries_commit_only_when_a_majority_holds_them() -> None:
    cluster = Cluster(5)
    cluster.elect("1")
    cluster.cut = {"3", "4", "5"}
    cluster.propose("1", b"x")
    cluster.stabilize()
    assert cluster.nodes["1"].status().commit == 1 and cluster.data("1") == []
    cluster.cut = {"4", "5"}
    cluster.tick("1")  # a heartbeat response from 3 makes the leader resend
    cluster.stabilize()
    assert cluster.data("1") == [b"x"] and cluster.data("3") == [b"x"]


def test_a_leader_does_not_commit_an_older_terms_entry_by_counting_replicas() -> None:
    """The Raft paper's figure 8 rule: the leader of term 2 learns that a
    majority holds an entry of term 1; that commits nothing until an entry
    of its own term (its no-op) is on a majority too."""
    cluster = Cluster(3, pre_vote=False)
    for node, terms in {"1": [1, 1], "2": [1], "3": [1]}.items():
        cluster.storage[node].append([Entry(index=i + 1, term=t) for i, t in enumerate(terms)])
        cluster.storage[node].set_hard_state(HardState(term=1, commit=1))
        cluster.restart(node)
    cluster.nodes["1"].campaign()
    for _ in range(5):  # elect, but let no append through
        cluster.process_all()
        cluster.deliver(drop=lambda m: isinstance(m, Append))
    leader = cluster.nodes["1"]
    assert leader.status().role is Role.LEADER and leader.status().term == 2
    leader.step(AppendResponse(to="1", sender="2", term=2, index=2))
    assert leader.status().commit == 1  # index 2 is of term 1: not by counting
    leader.step(AppendResponse(to="1", sender="2", term=2, index=3))
    assert leader.status().commit == 3  # the no-op of term 2 commits, and 2 with it


def test_a_follower_rejects_an_append_that_does_not_follow_its_log_and_hints_where() -> None:
    cluster = Cluster(3)
    node = cluster.nodes["2"]
    cluster.storage["2"].append([Entry(index=1, term=1), Entry(index=2, term=1)])
    cluster.restart("2")
    node = cluster.nodes["2"]
    node.step(Append(to="2", sender="1", term=3, prev_index=5, prev_term=3,
                     entries=(Entry(index=6, term=3),), commit=5))
    answer = node.ready().messages_after_persist[-1]
    assert isinstance(answer, AppendResponse)
    assert (answer.rejected, answer.index, answer.hint_index, answer.hint_term) == (
        True, 5, 2, 1)


def figure_7() -> Cluster:
    """The logs of the Raft paper's figure 7 (as etcd's probe_and_replicate.txt):
    n1 is about to lead term 8 and must bring each of the others in line."""
    logs = {
        "1": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6],
        "2": [1, 1, 1, 4, 4, 5, 5, 6, 6],
        "3": [1, 1, 1, 4],
        "4": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        "5": [1, 1, 1, 4, 4, 5, 5, 6, 7, 7, 7, 7],
        "6": [1, 1, 1, 4, 4, 4, 4],
        "7": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    }
    cluster = Cluster(7, pre_vote=False, check_quorum=False)
    for node, terms in logs.items():
        storage = cluster.storage[node]
        storage.append([Entry(index=i + 1, term=t, data=b"%s:%d" % (node.encode(), i + 1))
                        for i, t in enumerate(terms)])
        storage.set_hard_state(HardState(term=7, commit=3))
        cluster.restart(node)
    return cluster


def test_the_leader_brings_every_divergent_log_in_line_backtracking_a_term_at_a_time() -> None:
    # probe_and_replicate.txt
    cluster = figure_7()
    cluster.nodes["1"].campaign()
    cluster.stabilize(nodes=["1", "2", "3", "6", "7"])  # n1's log is up to date for these
    assert cluster.role("1") is Role.LEADER
    cluster.stabilize()
    leader_log = cluster.log("1")
    assert leader_log[-1] == (11, 8)  # its no-op
    for node in cluster.ids:
        assert cluster.log(node) == leader_log, node
    rejections: dict[str, int] = {}
    for m in cluster.sent:
        if isinstance(m, AppendResponse) and m.rejected:
            rejections[m.sender] = rejections.get(m.sender, 0) + 1
    # One rejection per divergent term at most, not one per entry.
    assert max(rejections.values()) <= 3, rejections
    assert cluster.nodes["1"].status().commit == 11


def test_a_follower_learns_the_commit_index_from_heartbeats_but_not_past_what_it_holds() -> None:
    # lagging_commit.txt
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.propose("1", b"x")
    cluster.process_ready("1")
    cluster.deliver()
    cluster.process_all()
    cluster.take(only=lambda m: m.sender == "3")  # node 3's acknowledgement is lost
    cluster.stabilize(nodes=["1", "2"])
    cluster.take()
    assert cluster.nodes["1"].status().commit == 2 and cluster.nodes["3"].status().commit == 1
    cluster.tick("1")
    cluster.process_ready("1")
    beats = {m.to: m.commit for m in cluster.in_flight if isinstance(m, Heartbeat)}
    assert beats == {"2": 2, "3": 1}  # capped at what 3 is known to hold
    cluster.stabilize()
    assert cluster.nodes["3"].status().commit == 2 and cluster.data("3") == [b"x"]


def test_a_new_leader_overwrites_an_uncommitted_conflicting_tail() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"2", "3"}
    cluster.propose("1", b"lost")  # only on 1, never committed
    cluster.stabilize()
    cluster.cut = {"1"}
    cluster.tick("3", 10)  # no longer hears a leader: grants votes again
    cluster.elect("2")
    cluster.propose("2", b"kept")
    cluster.stabilize()
    cluster.cut = set()
    cluster.tick("2")
    cluster.stabilize()
    assert [cluster.data(n) for n in "123"] == [[b"kept"]] * 3
    assert cluster.log("1") == cluster.log("2")


def test_duplicated_and_reordered_appends_change_nothing() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.propose("1", b"a")
    cluster.process_ready("1")
    first = list(cluster.in_flight)
    cluster.propose("1", b"b")
    cluster.process_ready("1")
    second = [m for m in cluster.in_flight if m not in first]
    cluster.in_flight = second + first + first  # late and twice
    cluster.stabilize()
    assert [cluster.data(n) for n in "123"] == [[b"a", b"b"]] * 3


def test_a_probing_follower_moves_to_replicate_once_an_append_succeeds() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    status = cluster.nodes["1"].status()
    assert {p.state for n, p in status.progress.items()} == {ProgressState.REPLICATE}
