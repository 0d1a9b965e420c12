"""Leader mode across real processes: 3 nodes (N=3, a Raft group per
partition) and a coordinator on loopback, each test starting its own
cluster. Versions and compare-and-set through a node and a coordinator, a
killed leader replaced with every acknowledged write kept, a restarted node
catching up, the minority side of a partition refusing in seconds, and a
node cut off counting its groups without leader."""

import signal
import time
from collections.abc import Iterator

import pytest

import kvclient
from kvclient import errors
from kvstore.ops.processes import NodeProcess
from kvstore.ops.remote import fetch_status
from kvstore.placement.ring import partition_of
from tests.clusters import Cluster, metric, poll

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

PARTITIONS = 16  # tests/clusters.py's


def leaders(cluster: Cluster) -> dict[int, str]:
    """partition -> the node that says it leads it (among those answering)."""
    found: dict[int, tuple[int, str]] = {}
    for node in cluster.nodes.values():
        try:
            status = fetch_status(node.address, 2)
        except Exception:
            continue
        for group in status.raft:
            if group.role == "leader" and group.term >= found.get(group.partition, (0, ""))[0]:
                found[group.partition] = (group.term, status.id)
    return {partition: leader for partition, (_, leader) in found.items()}


def elected(cluster: Cluster, among: set[str] | None = None, seconds: float = 20) -> dict[int, str]:
    """Wait until every partition has a leader (among `among`, if given)."""
    def every_partition_led() -> bool:
        found = leaders(cluster)
        return len(found) == PARTITIONS and (among is None or set(found.values()) <= among)

    poll(every_partition_led, seconds, "every partition has a leader")
    return leaders(cluster)


@pytest.fixture
def leader_cluster(make_cluster) -> Cluster:  # type: ignore[no-untyped-def]
    cluster = make_cluster(mode="leader")
    elected(cluster)
    return cluster


def client(*servers: NodeProcess, **settings: object) -> kvclient.Client:
    settings.setdefault("timeout", 10)
    return kvclient.Client([s.address for s in servers], **settings)  # type: ignore[arg-type]


def wait_caught_up(node: NodeProcess, written: dict[bytes, int], seconds: float) -> None:
    """Until `node`'s own (stale) reads show every write in `written` at its version."""
    with client(node, token_aware=False) as kv:
        poll(lambda: all(kv.get(key, stale=True).version == version
                         for key, version in written.items()),
             seconds, f"{node.node_id} holds every write made while it was down")


def check_versions_and_compare_and_set(kv: kvclient.Client, prefix: bytes) -> None:
    key = prefix + b"cas"
    first = kv.put(key, b"v1")
    assert first.version is not None and first.version > 0 and first.context == b""
    seen = kv.get(key)
    assert (seen.value, seen.version, seen.siblings, seen.context) == (
        b"v1", first.version, [b"v1"], b"")
    second = kv.put(key, b"v2", if_version=first.version)
    assert second.version is not None and second.version > first.version
    with pytest.raises(errors.VersionMismatch) as lost:
        kv.put(key, b"v3", if_version=first.version)
    assert lost.value.current_version == second.version
    assert isinstance(lost.value, errors.FailedPrecondition)
    assert lost.value.reason == "VERSION_MISMATCH" and lost.value.outcome == "not_applied"
    assert kv.get(key).value == b"v2"
    # 0: only if absent.
    fresh = prefix + b"fresh"
    created = kv.put(fresh, b"new", if_version=0)
    with pytest.raises(errors.VersionMismatch) as taken:
        kv.put(fresh, b"again", if_version=0)
    assert taken.value.current_version == created.version
    with pytest.raises(errors.VersionMismatch):
        kv.delete(key, if_version=first.version)
    gone = kv.delete(key, if_version=second.version)
    assert gone.version == 0
    absent = kv.get(key)
    assert (absent.value, absent.found, absent.version) == (None, False, 0)
    assert kv.get(prefix + b"never").version == 0
    assert kv.get(fresh, stale=True).value in (b"new", None)  # any replica: maybe behind


def test_versions_and_compare_and_set_through_a_node_and_a_coordinator(
        leader_cluster: Cluster) -> None:
    nodes = list(leader_cluster.nodes.values())
    with client(nodes[0]) as kv:
        check_versions_and_compare_and_set(kv, b"node/")
    with client(*leader_cluster.coordinators) as kv:
        check_versions_and_compare_and_set(kv, b"coordinator/")
    # A node that leads no partition of a key forwards its writes: every key
    # written through n1 alone (unrouted) is applied, whoever leads it.
    with client(nodes[0], token_aware=False) as kv:
        for i in range(40):
            assert kv.put(f"spread/{i}".encode(), b"x").version
    owners = leaders(leader_cluster)
    assert set(owners.values()) != {nodes[0].node_id}, "n1 leads everything: nothing forwarded"


def test_batches_take_stale_and_an_if_version_per_item(leader_cluster: Cluster) -> None:
    with client(*leader_cluster.coordinators) as kv:
        written = kv.put_many({b"b/1": b"one", b"b/2": b"two"})
        assert all(w.version for w in written)
        again = kv.put_many([kvclient.PutItem(b"b/1", b"uno", if_version=written[0].version),
                             kvclient.PutItem(b"b/3", b"tres", if_version=0)])
        assert again[0].version > written[0].version  # type: ignore[operator]
        with pytest.raises(errors.VersionMismatch) as lost:
            kv.put_many([kvclient.PutItem(b"b/2", b"dos", if_version=written[1].version + 100)])
        assert lost.value.current_version == written[1].version
        assert "batch item 0" in lost.value.details
        read = kv.get_many([b"b/1", b"b/2", b"b/3", b"b/none"])
        assert [r.value for r in read] == [b"uno", b"two", b"tres", None]
        assert [r.version for r in read][3] == 0
        stale = kv.get_many([b"b/1", b"b/none"], stale=True)
        assert stale[1].value is None


def test_leaderless_options_are_refused_in_leader_mode_and_back(make_cluster) -> None:  # type: ignore[no-untyped-def]
    leader = make_cluster(mode="leader", coordinators=0)
    with client(*leader.nodes.values()) as kv:
        for call in (lambda: kv.get(b"k", r="all"), lambda: kv.put(b"k", b"v", w=1),
                     lambda: kv.put(b"k", b"v", context=b"\x01"),
                     lambda: kv.delete(b"k", sloppy=False)):
            with pytest.raises(errors.InvalidArgument, match="leader mode"):
                call()
    leader.stop_all()
    leaderless = make_cluster(coordinators=0)
    with client(*leaderless.nodes.values()) as kv:
        assert kv.put(b"k", b"v").version is None and kv.get(b"k").version is None
        for call in (lambda: kv.get(b"k", stale=True), lambda: kv.put(b"k", b"v", if_version=1),
                     lambda: kv.delete(b"k", if_version=0),
                     lambda: kv.put_many([kvclient.PutItem(b"k", b"v", if_version=2)])):
            with pytest.raises(errors.InvalidArgument, match="only in leader mode"):
                call()


def test_a_killed_leader_is_replaced_and_acknowledged_writes_survive(
        leader_cluster: Cluster) -> None:
    owners = leaders(leader_cluster)
    victim = max(leader_cluster.nodes, key=lambda n: list(owners.values()).count(n))
    led = {p for p, n in owners.items() if n == victim}
    acknowledged: dict[bytes, int] = {}
    survivors = [n for n in leader_cluster.nodes.values() if n.node_id != victim]
    with client(*leader_cluster.nodes.values()) as kv:
        for i in range(60):
            key = f"before/{i}".encode()
            acknowledged[key] = kv.put(key, key).version  # type: ignore[assignment]
    leader_cluster.nodes[victim].kill()
    started = time.monotonic()
    new = elected(leader_cluster, among={n.node_id for n in survivors}, seconds=15)
    assert all(new[p] != victim for p in led)
    with client(*survivors) as kv:
        for i in range(60):
            key = f"after/{i}".encode()
            acknowledged[key] = kv.put(key, key).version  # type: ignore[assignment]
        assert time.monotonic() - started < 30
        for key, version in acknowledged.items():
            seen = kv.get(key)
            assert (seen.value, seen.version) == (key, version), key


def test_a_restarted_node_catches_up(leader_cluster: Cluster) -> None:
    nodes = list(leader_cluster.nodes.values())
    behind = nodes[2]
    behind.kill()
    with client(nodes[0], nodes[1]) as kv:
        written = {f"missed/{i}".encode(): kv.put(f"missed/{i}".encode(), b"v").version
                   for i in range(40)}
    back = leader_cluster.restart(behind.node_id)
    wait_caught_up(back, written, 20)
    status = fetch_status(back.address, 2)
    assert all(group.applied == group.commit for group in status.raft)


def test_a_node_restarted_behind_the_compacted_log_catches_up_by_snapshot(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    # Compaction after every 8 entries applied, 2 kept behind: a node down
    # for ~10 writes per partition finds its next entry compacted away.
    cluster = make_cluster(mode="leader",
                           node_settings="raft_snapshot_every = 8\nraft_keep_entries = 2\n")
    elected(cluster)
    nodes = list(cluster.nodes.values())
    behind = nodes[2]
    received = 'kvstore_raft_snapshots_total{direction="received"}'
    behind.kill()
    with client(nodes[0], nodes[1]) as kv:
        written = {f"compacted/{i}".encode(): kv.put(f"compacted/{i}".encode(), b"v").version
                   for i in range(PARTITIONS * 12)}
    back = cluster.restart(behind.node_id)
    wait_caught_up(back, written, 30)
    assert (metric(back, received) or 0) >= 1  # by snapshot, not only by log
    sent = sum(metric(node, 'kvstore_raft_snapshots_total{direction="sent"}') or 0
               for node in nodes[:2])
    assert sent >= 1


@pytest.mark.timeout(180)
def test_a_snapshot_larger_than_a_message_reaches_a_node_behind_in_pieces(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    # One partition's state grows past gRPC's 4 MiB message limit while n3
    # is down; its log is compacted, so only the snapshot can bring n3 back.
    cluster = make_cluster(mode="leader",
                           node_settings="raft_snapshot_every = 4\nraft_keep_entries = 1\n")
    elected(cluster)
    nodes = list(cluster.nodes.values())
    behind = nodes[2]
    keys = [k for k in (f"big/{i}".encode() for i in range(2000))
            if partition_of(k, PARTITIONS) == 5][:12]
    behind.kill()
    with client(nodes[0], nodes[1], timeout=30) as kv:
        written = {key: kv.put(key, bytes([n]) * 500_000).version for n, key in enumerate(keys)}
    back = cluster.restart(behind.node_id)
    wait_caught_up(back, written, 60)
    with client(back, token_aware=False) as kv:
        assert kv.get(keys[-1], stale=True).value == bytes([len(keys) - 1]) * 500_000
    assert (metric(back, 'kvstore_raft_snapshots_total{direction="received"}') or 0) >= 1


@pytest.fixture
def paused() -> Iterator[list[NodeProcess]]:
    """Nodes a test SIGSTOPs: resumed at the end whatever happens."""
    stopped: list[NodeProcess] = []
    yield stopped
    for node in stopped:
        node.process.send_signal(signal.SIGCONT)


def test_the_minority_side_refuses_writes_and_linearizable_reads_within_3_seconds(
        leader_cluster: Cluster, paused: list[NodeProcess]) -> None:
    alone, *others = leader_cluster.nodes.values()
    with client(alone) as kv:
        kv.put(b"minority/before", b"v")
    for node in others:
        node.process.send_signal(signal.SIGSTOP)
        paused.append(node)
    with client(alone, max_attempts=1, token_aware=False) as kv:
        for i in range(3):
            key = f"minority/{i}".encode()
            started = time.monotonic()
            with pytest.raises(errors.Unavailable) as refused:
                kv.put(key, b"lost?")
            assert time.monotonic() - started < 3.0
            error = refused.value
            assert error.reason in ("NOT_LEADER", "NO_QUORUM")
            assert error.outcome in ("unknown", "not_applied")
            partition = partition_of(key, PARTITIONS)
            assert error.metadata["partition"] == str(partition)
            assert f"partition {partition}" in error.details
            assert "leader last known" in error.details or "no leader" in error.details
            started = time.monotonic()
            with pytest.raises(errors.Unavailable) as unread:
                kv.get(key)
            assert time.monotonic() - started < 3.0
            assert unread.value.reason in ("NOT_LEADER", "NO_QUORUM")
        # A stale read is this replica's own: it answers.
        assert kv.get(b"minority/before", stale=True).value == b"v"
    for node in others:
        node.process.send_signal(signal.SIGCONT)
    paused.clear()
    with client(*leader_cluster.nodes.values()) as kv:
        assert kv.put(b"minority/after", b"v").version


def test_a_node_cut_off_from_the_others_counts_every_group_without_leader(
        leader_cluster: Cluster, paused: list[NodeProcess]) -> None:
    # What the KvstoreRaftGroupsWithoutLeader alert (deploy/prometheus) reads.
    alone, *others = leader_cluster.nodes.values()
    gauge = "kvstore_raft_groups_without_leader"
    poll(lambda: metric(alone, gauge) == 0.0, 10, f"{gauge} 0 while all are up")
    for node in others:
        node.process.send_signal(signal.SIGSTOP)
        paused.append(node)
    # N=3 on 3 nodes: every group is on `alone`, and none keeps a leader,
    # those it led while quiesced included (they wake and step down).
    poll(lambda: metric(alone, gauge) == PARTITIONS, 15, f"{gauge} {PARTITIONS}, cut off")
    for node in others:
        node.process.send_signal(signal.SIGCONT)
    paused.clear()
    poll(lambda: metric(alone, gauge) == 0.0, 20, f"{gauge} back to 0")


def test_the_coordinator_forwards_to_leaders_and_keeps_its_cache_promise(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(mode="leader", cache_ttl_ms=1000)
    elected(cluster)
    coordinator = cluster.coordinators[0]
    node = next(iter(cluster.nodes.values()))
    with client(coordinator) as through, client(node, token_aware=False) as beside:
        through.put(b"cached", b"v1")
        # Read-your-writes for stale reads through the same coordinator.
        assert through.get(b"cached", stale=True).value == b"v1"
        beside.put(b"cached", b"v2")  # the coordinator's cache does not hear of it
        hits = metric(coordinator, "kvstore_cache_hits_total") or 0
        cached_at = time.monotonic()
        # A linearizable read never comes from the cache (it refreshes it).
        assert through.get(b"cached").value == b"v2"
        assert (metric(coordinator, "kvstore_cache_hits_total") or 0) == hits
        beside.put(b"cached", b"v3")
        # A stale read may come from the cache, never older than its ttl.
        assert through.get(b"cached", stale=True).value == b"v2"
        assert (metric(coordinator, "kvstore_cache_hits_total") or 0) == hits + 1
        poll(lambda: through.get(b"cached", stale=True).value == b"v3", 5,
             "a stale read through the coordinator sees the write once the ttl passed")
        # Until then it was served from the cache: its entry is the read's, after cached_at.
        assert time.monotonic() - cached_at >= 1.0
