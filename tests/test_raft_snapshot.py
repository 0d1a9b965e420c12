"""Log compaction and snapshots in the Raft core: the application snapshots
and compacts its log, the leader sends a snapshot to a follower that is
behind its first index (one at a time, retried after a while), and the
follower restores from it. Modelled on etcd-io/raft's testdata/
snapshot_succeed_via_app_resp.txt, snapshot_succeed_via_app_resp_behind.txt
and slow_follower_after_compaction.txt."""

from kvstore.leader.raft.messages import (
    AppendResponse, InstallSnapshot, Message, Snapshot,
)
from kvstore.leader.raft.progress import ProgressState
from tests.raft_cluster import Cluster, encode_state


def snapshots(messages: list[Message]) -> list[InstallSnapshot]:
    return [m for m in messages if isinstance(m, InstallSnapshot)]


def lagging_cluster(retry: int = 30) -> Cluster:
    """Node 3 misses entries 2..6, which the leader then compacts away."""
    cluster = Cluster(3, snapshot_retry_ticks=retry)
    cluster.elect("1")
    cluster.cut = {"3"}
    for n in range(5):
        cluster.propose("1", b"v%d" % n)
    cluster.stabilize()
    cluster.snapshot_and_compact("1")
    assert cluster.storage["1"].first_index() == 7
    cluster.cut = set()
    return cluster


def lose_the_snapshot(cluster: Cluster) -> None:
    """Run the exchange until the leader sends its snapshot, and lose it."""
    for _ in range(10):
        cluster.process_all()
        if cluster.take(only=lambda m: isinstance(m, InstallSnapshot)):
            return
        cluster.deliver()
    raise AssertionError("no snapshot was sent")


def test_the_application_compacts_the_log_behind_a_snapshot() -> None:
    cluster = lagging_cluster()
    storage = cluster.storage["1"]
    assert storage.snapshot().index == 6 and storage.last_index() == 6
    cluster.propose("1", b"after")
    cluster.stabilize(nodes=["1", "2"])
    assert cluster.data("2")[-1] == b"after"


def test_a_follower_behind_the_first_index_gets_the_snapshot_and_catches_up() -> None:
    # snapshot_succeed_via_app_resp.txt
    cluster = lagging_cluster()
    cluster.tick("1")  # heartbeat; the answer shows 3 is behind
    cluster.stabilize()
    sent = snapshots(cluster.sent)
    assert [(m.to, m.snapshot.index) for m in sent] == [("3", 6)]
    assert cluster.data("3") == [b"v%d" % n for n in range(5)]
    assert cluster.storage["3"].snapshot().index == 6
    # The snapshot's acknowledgement moved it straight to replicating.
    assert cluster.nodes["1"].status().progress["3"].state is ProgressState.REPLICATE
    cluster.propose("1", b"next")
    cluster.stabilize()
    assert cluster.data("3")[-1] == b"next"


def test_a_lost_snapshot_is_sent_again_but_not_before_the_retry_interval() -> None:
    cluster = lagging_cluster(retry=5)
    cluster.tick("1")
    lose_the_snapshot(cluster)
    for _ in range(4):
        cluster.tick("1")
        cluster.stabilize()
    assert len(snapshots(cluster.sent)) == 1  # one in flight per follower
    for _ in range(3):
        cluster.tick("1")
        cluster.stabilize()
    assert len(snapshots(cluster.sent)) == 2
    assert cluster.data("3") == [b"v%d" % n for n in range(5)]


def test_a_reported_failure_makes_the_leader_probe_and_send_it_again() -> None:
    cluster = lagging_cluster()
    cluster.tick("1")
    lose_the_snapshot(cluster)
    cluster.nodes["1"].report_snapshot("3", succeeded=False)
    assert cluster.nodes["1"].status().progress["3"].state is ProgressState.PROBE
    cluster.tick("1")
    cluster.stabilize()
    assert len(snapshots(cluster.sent)) == 2 and cluster.data("3")[-1] == b"v4"


def test_a_slow_follower_after_compaction_is_caught_up_by_snapshot() -> None:
    # slow_follower_after_compaction.txt: its appends were in flight when the
    # leader compacted past them.
    cluster = Cluster(3, max_inflight_appends=2, max_append_bytes=1)
    cluster.elect("1")
    for n in range(6):
        cluster.propose("1", b"s%d" % n)
    cluster.process_ready("1")
    cluster.take(only=lambda m: m.to == "3")
    cluster.stabilize(nodes=["1", "2"])
    cluster.snapshot_and_compact("1")
    for _ in range(3):
        cluster.tick("1")
        cluster.stabilize()
    assert cluster.data("3") == [b"s%d" % n for n in range(6)]


def test_a_follower_ignores_a_snapshot_it_has_already_committed() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.propose("1", b"x")
    cluster.stabilize()
    node = cluster.nodes["2"]
    node.step(InstallSnapshot(to="2", sender="1", term=1,
                              snapshot=Snapshot(index=1, term=1, data=encode_state([b""]))))
    ready = node.ready()
    assert ready.snapshot is None
    answer = ready.messages_after_persist[-1]
    assert isinstance(answer, AppendResponse) and answer.index == 2  # its commit index
    node.advance(ready)


def test_a_snapshot_the_log_already_holds_only_moves_the_commit_index() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.cut = {"3"}
    cluster.propose("1", b"x")
    cluster.process_ready("1")
    cluster.deliver()
    cluster.process_ready("2")  # 2 has entry 2 but does not know it committed
    node = cluster.nodes["2"]
    node.step(InstallSnapshot(to="2", sender="1", term=1,
                              snapshot=Snapshot(index=2, term=1, data=b"unused")))
    assert node.status().commit == 2
    ready = cluster.process_ready("2")
    assert ready is not None and ready.snapshot is None and cluster.data("2") == [b"x"]


def test_a_node_restarts_from_its_snapshot_and_applies_only_what_follows() -> None:
    cluster = lagging_cluster()
    cluster.propose("1", b"tail")
    cluster.stabilize(nodes=["1", "2"])
    cluster.restart("1")
    assert cluster.applied["1"] == [b""] + [b"v%d" % n for n in range(5)]  # from the snapshot
    cluster.stabilize(nodes=["1"])
    assert cluster.data("1") == [b"v%d" % n for n in range(5)] + [b"tail"]
    assert [e.index for e in cluster.applied_entries["1"]] == [7]
