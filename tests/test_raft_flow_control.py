"""Flow control in the Raft core: the in-flight window per follower (count
and bytes), probe and replicate states, the byte limit per append, batching
and pipelining, and the bound on uncommitted bytes. Modelled on etcd-io/raft's
testdata/replicate_pause.txt, heartbeat_resp_recovers_from_probing.txt and
probe_and_replicate.txt, and raft_test.go TestUncommittedEntryLimit."""

import pytest

from kvstore.leader.raft.leadership import DropReason, ProposalDropped
from kvstore.leader.raft.messages import Append, AppendResponse, Message
from kvstore.leader.raft.progress import ProgressState
from tests.raft_cluster import Cluster


def appends_to(messages: list[Message], node: str) -> list[Append]:
    return [m for m in messages if isinstance(m, Append) and m.to == node]


def test_proposals_between_two_readies_travel_in_one_append() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    for n in range(5):
        cluster.propose("1", b"%d" % n)
    cluster.process_ready("1")
    sent = appends_to(cluster.in_flight, "2")
    assert len(sent) == 1 and len(sent[0].entries) == 5


def test_appends_are_cut_at_max_append_bytes_and_pipelined() -> None:
    cluster = Cluster(3, max_append_bytes=10)
    cluster.elect("1")
    for _ in range(4):
        cluster.propose("1", b"x" * 6)
    cluster.process_ready("1")
    sent = appends_to(cluster.in_flight, "2")
    # Replicating: several appends in flight at once, each within the limit
    # (but at least one entry).
    assert [len(m.entries) for m in sent] == [1, 1, 1, 1]
    assert [m.prev_index for m in sent] == [1, 2, 3, 4]
    cluster.stabilize()
    assert cluster.data("3") == [b"x" * 6] * 4


def test_a_full_in_flight_window_pauses_a_follower_until_acknowledgements_free_it() -> None:
    # replicate_pause.txt
    cluster = Cluster(3, max_inflight_appends=3, max_append_bytes=1)
    cluster.elect("1")
    for n in range(5):
        cluster.propose("1", b"%d" % n)
    cluster.process_ready("1")
    assert len(appends_to(cluster.in_flight, "3")) == 3  # the window, not 5
    cluster.take(only=lambda m: m.to == "3")  # all lost
    cluster.stabilize()
    status = cluster.nodes["1"].status()
    assert status.progress["3"].match == 1 and status.commit == 6  # 1 and 2 commit
    # A heartbeat response lets an empty append through, whose answer
    # (a rejection or not) restarts the flow.
    for _ in range(3):
        cluster.tick("1")
        cluster.stabilize()
    assert cluster.data("3") == [b"%d" % n for n in range(5)]


def test_the_window_also_bounds_bytes_in_flight() -> None:
    cluster = Cluster(3, max_inflight_appends=100, max_inflight_bytes=20, max_append_bytes=10)
    cluster.elect("1")
    for _ in range(6):
        cluster.propose("1", b"y" * 10)
    cluster.process_ready("1")
    assert len(appends_to(cluster.in_flight, "2")) == 2  # 20 bytes


def test_a_probing_follower_gets_one_append_at_a_time() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.nodes["1"].report_unreachable("2")
    assert cluster.nodes["1"].status().progress["2"].state is ProgressState.PROBE
    for n in range(3):
        cluster.propose("1", b"%d" % n)
        cluster.process_ready("1")
    assert len(appends_to(cluster.in_flight, "2")) == 1
    assert len(appends_to(cluster.in_flight, "3")) == 3  # replicating: pipelined
    cluster.stabilize()
    assert cluster.nodes["1"].status().progress["2"].state is ProgressState.REPLICATE


def test_a_caught_up_follower_in_probe_recovers_on_the_next_heartbeat() -> None:
    # heartbeat_resp_recovers_from_probing.txt
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.nodes["1"].report_unreachable("2")
    cluster.tick("1")
    cluster.stabilize()
    assert cluster.nodes["1"].status().progress["2"].state is ProgressState.REPLICATE


def test_a_rejection_in_replicate_falls_back_to_probe_from_match() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    leader = cluster.nodes["1"]
    leader.step(AppendResponse(to="1", sender="2", term=1, index=5, rejected=True,
                               hint_index=1, hint_term=1))
    progress = leader.status().progress["2"]
    assert progress.state is ProgressState.PROBE and progress.next == 2


def test_proposals_beyond_the_uncommitted_limit_are_refused_until_entries_apply() -> None:
    cluster = Cluster(3, max_uncommitted_bytes=25)
    cluster.elect("1")
    cluster.cut = {"2", "3"}
    cluster.propose("1", b"a" * 10)
    cluster.propose("1", b"b" * 10)
    with pytest.raises(ProposalDropped) as refused:
        cluster.propose("1", b"c" * 10)
    assert refused.value.reason is DropReason.UNCOMMITTED_LIMIT
    cluster.stabilize()
    cluster.cut = set()
    cluster.tick("1")
    cluster.stabilize()
    assert cluster.data("1") == [b"a" * 10, b"b" * 10]
    cluster.propose("1", b"c" * 10)  # the committed bytes no longer count


def test_an_empty_uncommitted_tail_takes_a_proposal_larger_than_the_limit() -> None:
    cluster = Cluster(3, max_uncommitted_bytes=5)
    cluster.elect("1")
    cluster.propose("1", b"z" * 50)
    with pytest.raises(ProposalDropped):
        cluster.propose("1", b"z")


def test_a_follower_refuses_proposals_and_names_the_leader() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    with pytest.raises(ProposalDropped) as refused:
        cluster.propose("2", b"x")
    assert refused.value.reason is DropReason.NOT_LEADER and refused.value.leader == "1"
    with pytest.raises(ValueError):
        cluster.propose("1", b"")  # empty data is the no-op's


def test_committed_entries_are_handed_out_within_max_apply_bytes_per_ready() -> None:
    cluster = Cluster(1, max_apply_bytes=10)
    cluster.elect("1")
    for _ in range(3):
        cluster.propose("1", b"q" * 8)
    cluster.process_ready("1")
    sizes = []
    while (ready := cluster.process_ready("1")) is not None:
        sizes.append(len(ready.committed_entries))
    assert sizes[:3] == [1, 1, 1] and cluster.data("1") == [b"q" * 8] * 3
