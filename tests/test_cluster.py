"""Leaderless replication across real processes: 3 nodes and coordinators on
loopback, each test starting its own cluster."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib

import grpc
import pytest

import kvclient
from kvclient.pb import kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvstore.causality import versions
from kvstore.placement.membership import ClusterSpec
from kvstore.ops.processes import NodeProcess
from kvstore.rpc.channels import open_channel
from tests.clusters import Cluster, poll
from tests.clusters import heard_from as _heard_from
from tests.clusters import metric as _sample

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def replica_result(node: NodeProcess, key: bytes) -> replica_pb2.ReplicaResult:
    """One replica's answer for `key`, asked directly (as an admin)."""
    with open_channel(node.address, credentials=node.credentials) as channel:
        stub = replica_pb2_grpc.ReplicaStub(channel)
        op = replica_pb2.ReplicaOp(read=replica_pb2.ReplicaRead(key=key))
        return stub.Batch(replica_pb2.ReplicaBatchRequest(ops=[op]), timeout=5).results[0]


def replica_roots(node: NodeProcess, partitions: list[int]) -> replica_pb2.ReplicaResult:
    """One replica's Merkle roots of `partitions`, asked directly (as an admin)."""
    with open_channel(node.address, credentials=node.credentials) as channel:
        stub = replica_pb2_grpc.ReplicaStub(channel)
        op = replica_pb2.ReplicaOp(roots=replica_pb2.ReplicaRoots(partitions=partitions))
        return stub.Batch(replica_pb2.ReplicaBatchRequest(ops=[op]), timeout=5).results[0]


def replica_state(node: NodeProcess, key: bytes) -> versions.DVVSet | None:
    """What one replica holds for `key`, asked directly."""
    result = replica_result(node, key)
    assert result.status.code == 0, result.status.message
    return versions.decode(result.state) if result.found else None


async def _write_all(address: str, items: dict[bytes, bytes], w: int,
                     in_flight: int = 32) -> None:
    async with kvclient.AsyncClient([address], timeout=10) as client:
        semaphore = asyncio.Semaphore(in_flight)

        async def put(key: bytes, value: bytes) -> None:
            async with semaphore:
                await client.put(key, value, w=w)

        await asyncio.gather(*(put(k, v) for k, v in items.items()))


def test_acknowledged_writes_survive_a_replica_crash(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    coordinator = cluster.coordinators[0].address
    items = {b"key-%04d" % i: os.urandom(8).hex().encode() for i in range(1000)}
    asyncio.run(_write_all(coordinator, items, w=2))
    cluster.nodes["n2"].process.kill()  # SIGKILL one replica
    cluster.nodes["n2"].process.wait()
    keys = list(items)
    with kvclient.Client([coordinator], timeout=30) as client:
        results = []
        for start in range(0, len(keys), 250):
            results += client.get_many(keys[start:start + 250], r=2)
    wrong = [k for k, result in zip(keys, results) if result.value != items[k]]
    assert wrong == []


def test_concurrent_writes_from_one_context_become_siblings_and_a_merged_write_resolves_them(
    make_cluster,  # type: ignore[no-untyped-def]
) -> None:
    cluster = make_cluster()
    address = cluster.coordinators[0].address
    with kvclient.Client([address]) as alice, kvclient.Client([address]) as bob:
        alice.put(b"cart", b"empty")
        seen = alice.get(b"cart", r="all")
        alice.put(b"cart", b"apples", context=seen.context)
        bob.put(b"cart", b"pears", context=seen.context)
        both = alice.get(b"cart", r="all")
        assert sorted(both.siblings) == [b"apples", b"pears"]
        alice.put(b"cart", b"apples+pears", context=both.context)
        resolved = bob.get(b"cart", r="all")
        assert resolved.siblings == [b"apples+pears"]


def test_a_blind_write_replaces_the_value(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    with kvclient.Client([cluster.coordinators[0].address]) as client:
        client.put(b"k", b"first")
        client.put(b"k", b"second")
        assert client.get(b"k", r="all").siblings == [b"second"]
        client.delete(b"k")
        assert client.get(b"k", r="all").value is None


def test_a_stale_replica_is_repaired_by_a_read(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(anti_entropy=False)
    address = cluster.coordinators[0].address
    cluster.nodes["n3"].process.kill()
    cluster.nodes["n3"].process.wait()
    with kvclient.Client([address]) as client:
        client.put(b"repair-me", b"fresh", w=2)
    n3 = cluster.restart("n3")
    assert replica_state(n3, b"repair-me") is None  # it missed the write
    with kvclient.Client([address]) as client:
        # The coordinator reconnects to the restarted n3 within about a second
        # (its channel's reconnect backoff); until then r=all cannot succeed.
        def read_all() -> bool:
            try:
                return client.get(b"repair-me", r="all").value == b"fresh"
            except kvclient.errors.Unavailable:
                return False

        poll(read_all, 10, "a read at r=all through the coordinator")
    poll(lambda: (state := replica_state(n3, b"repair-me")) is not None
         and state.values == [b"fresh"], 10, "n3 repaired by the read")


def test_r_and_w_out_of_range_are_invalid_argument(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=0)
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        with pytest.raises(kvclient.errors.InvalidArgument, match="1..3"):
            client.put(b"k", b"v", w=4)
        with pytest.raises(kvclient.errors.InvalidArgument, match="r=5"):
            client.get(b"k", r=5)


def test_too_few_replicas_is_unavailable_naming_who_answered(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=0)
    for node_id in ("n2", "n3"):
        cluster.nodes[node_id].process.kill()
        cluster.nodes[node_id].process.wait()
    with kvclient.Client([cluster.nodes["n1"].address], timeout=10, max_attempts=1) as client:
        with pytest.raises(kvclient.errors.Unavailable) as caught:
            client.put(b"k", b"v", w=2)
        assert "w=2 needs 2 of 3 replicas" in caught.value.details
        assert "1 did" in caught.value.details
        with pytest.raises(kvclient.errors.Unavailable, match="r=2 needs 2 of 3"):
            client.get(b"k", r=2)
        client.put(b"k", b"v", w=1)  # one replica is enough when asked for one
        assert client.get(b"k", r=1).value == b"v"


def test_the_coordinator_cache_keeps_its_promise(make_cluster) -> None:  # type: ignore[no-untyped-def]
    ttl_ms = 1500
    cluster = make_cluster(coordinators=2, cache_ttl_ms=ttl_ms)
    first, second = (c.address for c in cluster.coordinators)
    with kvclient.Client([first]) as c1, kvclient.Client([second]) as c2:
        c1.put(b"profile", b"v1")
        assert c1.get(b"profile").value == b"v1"  # read-your-writes through c1
        written_at = time.monotonic()
        c2.put(b"profile", b"v2")  # c1 does not know
        assert c2.get(b"profile").value == b"v2"  # read-your-writes through c2
        assert c1.get(b"profile", r="all").value == b"v2"  # strong reads skip the cache
        c1.put(b"other", b"x")
        # c1's cached v1 may be served, but never once it is older than the ttl.
        poll(lambda: c1.get(b"profile").value == b"v2", 10, "c1 sees v2")
        assert time.monotonic() - written_at <= ttl_ms / 1000 + 1.0


def _total(cluster, sample: str, but: str) -> float:  # type: ignore[no-untyped-def]
    """`sample` summed over every node except `but`."""
    return sum(_sample(node, sample) or 0 for node_id, node in cluster.nodes.items()
               if node_id != but)


def _peer_up(server: NodeProcess, peer: str) -> float | None:
    return _sample(server, f'kvstore_peer_up{{node="{peer}"}}')


def test_a_dead_node_is_detected_routed_around_and_noticed_when_back(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    coordinator = cluster.coordinators[0]
    poll(lambda: _peer_up(coordinator, "n3") == 1.0, 10, "n3 seen up")
    cluster.nodes["n3"].process.kill()
    cluster.nodes["n3"].process.wait()
    took = poll(lambda: _peer_up(coordinator, "n3") == 0.0, 15, "n3 seen down")
    assert took < 10
    with kvclient.Client([coordinator.address], timeout=10, max_attempts=1) as client:
        started = time.monotonic()
        with pytest.raises(kvclient.errors.Unavailable, match="n3 down .*nothing was applied"):
            client.put(b"k", b"v", w="all")  # not waiting for a node known to be down
        client.put(b"k", b"v", w=2)
        assert client.get(b"k", r=2).value == b"v"  # n3 is not asked
        assert time.monotonic() - started < 2
    cluster.restart("n3")
    poll(lambda: _peer_up(coordinator, "n3") == 1.0, 10, "n3 seen up again")
    with kvclient.Client([coordinator.address], timeout=10) as client:
        client.put(b"k", b"v2", w="all")


def test_a_retried_write_is_applied_once_through_any_coordinator(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=0)
    spec = ClusterSpec.from_table(tomllib.loads(cluster.config.read_text())["cluster"])
    key = b"retry-me"
    first, second, third = spec.preference_list(key)
    with kvclient.Client([cluster.nodes[third].address]) as client:
        client.put(key, b"before", w="all")
        context = client.get(key, r="all").context
    # A write from that context (not blind: a blind write would hide a
    # duplicate by replacing it), acknowledged by all three replicas.
    put = kv_pb2.PutRequest(key=key, value=b"once", context=context, request_id=b"R" * 16,
                            w=kv_pb2.Consistency(level=kv_pb2.Consistency.ALL))
    with open_channel(cluster.nodes[third].address) as channel:
        kv_pb2_grpc.KVStub(channel).Put(put, timeout=10)  # origin: first
    cluster.nodes[first].process.kill()  # the origin, which remembers the id, is gone
    cluster.nodes[first].process.wait()
    retry = kv_pb2.PutRequest(key=key, value=b"once", context=context, request_id=b"R" * 16)
    with open_channel(cluster.nodes[second].address) as channel:
        kv_pb2_grpc.KVStub(channel).Put(retry, timeout=10)  # origin now: second
    with kvclient.Client([cluster.nodes[second].address]) as client:
        assert client.get(key, r=2).siblings == [b"once"]  # applied once, not twice


def test_a_corrupt_replica_is_repaired_from_the_healthy_ones(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=0, anti_entropy=False)
    marker = b"CORRUPT-ME-" + b"y" * 64
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        client.put(b"victim", marker, w="all")
    victim = cluster.nodes["n2"]
    assert victim.stop() == 0
    data_file = victim.data_dir / "data.mdb"
    content = bytearray(data_file.read_bytes())
    offset = content.find(marker)
    assert offset >= 0
    while offset >= 0:  # every copy, stale pages included
        content[offset + 20] ^= 0x01
        offset = content.find(marker, offset + 1)
    data_file.write_bytes(bytes(content))
    victim = cluster.restart("n2")
    corrupt = replica_result(victim, b"victim").status
    assert corrupt.code == grpc.StatusCode.DATA_LOSS.value[0] and "checksum" in corrupt.message
    with kvclient.Client([victim.address], timeout=10) as client:
        # n2 asks itself first, gets DATA_LOSS, and asks another replica instead.
        assert client.get(b"victim", r=2).value == marker
    poll(lambda: replica_result(victim, b"victim").status.code == 0, 10, "n2 repaired")
    assert replica_state(victim, b"victim").values == [marker]  # type: ignore[union-attr]


def test_hints_are_kept_while_a_replica_is_down_and_handed_over_when_it_is_back(  # type: ignore[no-untyped-def]
        make_cluster) -> None:
    cluster = make_cluster(nodes=5, coordinators=0)
    spec = ClusterSpec.from_table(tomllib.loads(cluster.config.read_text())["cluster"])
    key = b"hinted"
    first, _, third = spec.preference_list(key)
    coordinator = cluster.nodes[first]

    def hints_for_third() -> float:
        return _total(cluster, f'kvstore_hints_pending{{node="{third}"}}', but=third)

    cluster.nodes[third].process.kill()
    cluster.nodes[third].process.wait()
    poll(lambda: _peer_up(coordinator, third) == 0.0, 15, f"{third} seen down")
    with kvclient.Client([coordinator.address], timeout=10, max_attempts=1) as client:
        with pytest.raises(kvclient.errors.Unavailable, match="down"):
            client.put(key, b"strict", w="all", sloppy=False)  # no stand-ins allowed
        client.put(key, b"handed over", w="all")  # a stand-in keeps a hint for third
    assert hints_for_third() == 1
    assert _total(cluster, "kvstore_hints_written_total", but=third) == 1
    third_node = cluster.restart(third)
    # No read of the key: the stand-in hands the hint over by itself.
    poll(lambda: (state := replica_state(third_node, key)) is not None
         and state.values == [b"handed over"], 20, f"{third} given the hinted write")
    poll(lambda: hints_for_third() == 0, 10, "the hint deleted once handed over")
    # Counted at the end of the replay round that deleted it.
    poll(lambda: _total(cluster, "kvstore_hints_replayed_total", but=third) == 1, 10,
         "the hint counted as replayed")


def test_a_write_right_after_a_replica_dies_is_hinted_before_the_death_is_detected(  # type: ignore[no-untyped-def]
        make_cluster) -> None:
    cluster = make_cluster(nodes=5, coordinators=0)
    spec = ClusterSpec.from_table(tomllib.loads(cluster.config.read_text())["cluster"])
    key = b"hinted early"
    first, _, third = spec.preference_list(key)
    coordinator = cluster.nodes[first]
    cluster.nodes[third].process.kill()
    cluster.nodes[third].process.wait()
    assert _peer_up(coordinator, third) == 1.0  # not yet convicted (that takes seconds)
    with kvclient.Client([coordinator.address], timeout=10, max_attempts=1) as client:
        client.put(key, b"early", w="all")  # the failed merge falls back to a stand-in
    assert _total(cluster, f'kvstore_hints_pending{{node="{third}"}}', but=third) == 1
    assert _total(cluster, "kvstore_hints_written_total", but=third) == 1


def test_a_hint_goes_on_to_the_next_stand_in_when_the_first_is_dead_too(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(nodes=5, coordinators=0)
    spec = ClusterSpec.from_table(tomllib.loads(cluster.config.read_text())["cluster"])
    key = b"hinted twice"
    replicas = spec.preference_list(key)
    walk = spec.ring.preference_list(spec.partition_of(key), len(spec.members))
    first_stand_in, second_stand_in = [n for n in walk if n not in replicas]
    for dead in (replicas[2], first_stand_in):  # neither convicted yet
        cluster.nodes[dead].process.kill()
        cluster.nodes[dead].process.wait()
    coordinator = cluster.nodes[replicas[0]]
    with kvclient.Client([coordinator.address], timeout=10, max_attempts=1) as client:
        client.put(key, b"twice", w="all")
    assert _sample(cluster.nodes[second_stand_in],
                   f'kvstore_hints_pending{{node="{replicas[2]}"}}') == 1


def test_a_wiped_node_is_restored_by_anti_entropy_without_any_read(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=0)
    items = {b"ae-%03d" % i: b"value-%03d" % i for i in range(200)}
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        client.put_many(list(items.items()), w="all")
    victim = cluster.nodes["n2"]
    assert victim.stop() == 0
    shutil.rmtree(victim.data_dir)  # the disk is gone: n2 comes back empty
    victim = cluster.restart("n2")
    assert replica_state(victim, b"ae-000") is None

    def restored() -> bool:
        return all((state := replica_state(victim, key)) is not None and state.values == [value]
                   for key, value in items.items())

    took = poll(restored, 60, "every key back on n2")
    assert took < 60
    # Whichever side ran the exchange counted the key (n2 runs rounds too).
    repaired = sum(_sample(node, "kvstore_anti_entropy_keys_repaired_total") or 0
                   for node in cluster.nodes.values())
    assert repaired >= len(items)


def test_replicas_that_agree_report_equal_roots_and_a_bad_partition_is_invalid(
    make_cluster,  # type: ignore[no-untyped-def]
) -> None:
    cluster = make_cluster(coordinators=0)
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        client.put_many([(b"root-%d" % i, b"v") for i in range(50)], w="all")
    partitions = tomllib.loads(cluster.config.read_text())["cluster"]["partitions"]
    everything = list(range(partitions))  # 3 nodes, N=3: each replicates every partition
    roots = [list(replica_roots(node, everything).hashes) for node in cluster.nodes.values()]
    assert len(roots[0]) == partitions and roots[0] == roots[1] == roots[2]
    assert len(set(roots[0])) > 1  # partitions with keys differ from the empty ones
    bad = replica_roots(cluster.nodes["n1"], [3, partitions])
    assert bad.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert f"partition {partitions} does not exist" in bad.status.message


def test_a_deleted_key_stays_deleted_when_a_replica_that_missed_the_delete_comes_back(
    make_cluster,  # type: ignore[no-untyped-def]
) -> None:
    cluster = make_cluster(coordinators=0)
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        client.put(b"gone", b"was here", w="all")
        cluster.nodes["n3"].process.kill()  # n3 keeps the value and misses the delete
        cluster.nodes["n3"].process.wait()
        client.delete(b"gone", w=2)
    n3 = cluster.restart("n3")
    # Anti-entropy and reads spread the tombstone; the value never comes back.
    poll(lambda: (state := replica_state(n3, b"gone")) is not None and state.absent, 30,
         "n3 given the tombstone")
    with kvclient.Client([n3.address]) as client:
        for r in ("one", "all"):
            assert client.get(b"gone", r=r).value is None


def test_admin_repair_runs_anti_entropy_on_demand_with_progress(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=0, anti_entropy=False)  # nothing repairs by itself
    cluster.nodes["n3"].process.kill()
    cluster.nodes["n3"].process.wait()
    keys = [b"missed-%02d" % i for i in range(20)]
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        client.put_many([(key, b"v") for key in keys], w=2)
    n3 = cluster.restart("n3")
    assert all(replica_state(n3, key) is None for key in keys)
    run = subprocess.run(
        [sys.executable, "-m", "kvstore", "admin", "repair", "--config", str(cluster.config),
         "--node", "n3", "--data-dir", str(cluster.config.parent)],
        capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "n3: partition 0 (1/16)" in run.stdout
    repaired = int(run.stdout.strip().splitlines()[-1].split()[1])
    assert repaired >= len(keys)
    assert all((s := replica_state(n3, key)) is not None and s.values == [b"v"] for key in keys)
    bad = subprocess.run(
        [sys.executable, "-m", "kvstore", "admin", "repair", "--config", str(cluster.config),
         "--partition", "99"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "partition 99 does not exist" in bad.stderr


def _rounds(node: NodeProcess) -> float:
    return _sample(node, "kvstore_anti_entropy_rounds_total") or 0


def test_a_tombstone_outlives_its_grace_period_until_every_replica_holds_it_then_goes(
    make_cluster,  # type: ignore[no-untyped-def]
) -> None:
    grace = 2.0
    cluster = make_cluster(coordinators=0, node_settings=(
        f"tombstone_grace_seconds = {grace}\nanti_entropy_interval_seconds = 0.05\n"))
    key = b"short-lived"
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        client.put(key, b"deleted value", w="all")
        cluster.nodes["n3"].process.kill()  # n3 keeps the value and misses the delete
        cluster.nodes["n3"].process.wait()
        client.delete(key, w=2)
        deleted_at = time.time()
        # n1 and n2 hold the tombstone past its grace period, through many
        # rounds, because n3 (a replica) is down and cannot confirm it.
        poll(lambda: time.time() > deleted_at + grace, grace + 5, "the grace period over")
        survivors = [cluster.nodes["n1"], cluster.nodes["n2"]]
        start = [_rounds(node) for node in survivors]
        poll(lambda: all(_rounds(node) >= seen + 40 for node, seen in zip(survivors, start)),
             60, "40 more anti-entropy rounds on n1 and n2")
        assert all((state := replica_state(node, key)) is not None and state.absent
                   for node in survivors)
        cluster.restart("n3")
        # Anti-entropy hands n3 the tombstone, then all three purge it.
        poll(lambda: all(not replica_result(node, key).found for node in cluster.nodes.values()),
             60, "the tombstone purged on every replica")
        for node in cluster.nodes.values():
            with kvclient.Client([node.address]) as direct:
                assert direct.get(key, r="one").value is None  # the value did not come back
        assert client.get(key, r="all").value is None
    purged = sum(_sample(node, "kvstore_tombstones_purged_total") or 0
                 for node in cluster.nodes.values())
    assert purged >= 3  # every replica (a purge racing a round may spread it once more)


def _spec_of(cluster: Cluster) -> ClusterSpec:
    return ClusterSpec.from_table(tomllib.loads(cluster.config.read_text())["cluster"])


def _signal_all(cluster: Cluster, node_ids: list[str], sig: int) -> None:
    for node_id in node_ids:
        os.kill(cluster.nodes[node_id].pid, sig)


def test_sloppy_quorum_an_acknowledged_write_can_be_unseen_at_r_plus_w_over_n_until_handed_off(  # type: ignore[no-untyped-def]
        make_cluster) -> None:
    """Sloppy quorum's promise is durability, not R + W > N visibility: a
    write acknowledged by its origin and a stand-in is missed by a read of
    the other two replicas while the origin and the stand-ins are away, and
    is there once they are back (hand-off), as in Dynamo."""
    cluster = make_cluster(nodes=5, coordinators=0, anti_entropy=False)
    key = b"sloppy"
    origin, second, third = _spec_of(cluster).preference_list(key)
    others = [n for n in cluster.nodes if n not in (origin, second, third)]
    for node_id in (second, third):
        cluster.nodes[node_id].kill()
    with kvclient.Client([cluster.nodes[origin].address], timeout=10, max_attempts=1) as client:
        client.put(key, b"v", w=2)  # the origin and a stand-in keep it
    paused = [origin, *others]
    _signal_all(cluster, paused, signal.SIGSTOP)
    try:
        for node_id in (second, third):
            cluster.restart(node_id)
        poll(lambda: _heard_from(cluster.nodes[second], [third]), 15, f"{second} hears {third}")
        # Read through `second` itself (not routed to the paused origin).
        with kvclient.Client([cluster.nodes[second].address], timeout=10,
                             max_attempts=1, token_aware=False) as client:
            assert client.get(key, r=2).value is None  # R + W > N, and still not seen
    finally:
        _signal_all(cluster, paused, signal.SIGCONT)
    with kvclient.Client([cluster.nodes[second].address], timeout=10) as client:
        poll(lambda: client.get(key, r=2).value == b"v", 30, "the write handed off")


def test_strict_quorum_a_read_at_r_plus_w_over_n_sees_every_acknowledged_write(  # type: ignore[no-untyped-def]
        make_cluster) -> None:
    """With sloppy=False a write is acknowledged only by W of its own
    replicas, so any R of them with R + W > N include one that has it; and a
    write that cannot find W of them up is refused with nothing applied."""
    cluster = make_cluster(nodes=5, coordinators=0, anti_entropy=False)
    key = b"strict"
    origin, second, third = _spec_of(cluster).preference_list(key)
    cluster.nodes[third].kill()
    with kvclient.Client([cluster.nodes[origin].address], timeout=10, max_attempts=1) as client:
        client.put(key, b"v", w=2, sloppy=False)
    os.kill(cluster.nodes[origin].pid, signal.SIGSTOP)
    try:
        cluster.restart(third)
        poll(lambda: _heard_from(cluster.nodes[third], [second]), 15, f"{third} hears {second}")
        # Read through `third` itself (not routed to the paused origin).
        with kvclient.Client([cluster.nodes[third].address], timeout=10,
                             max_attempts=1, token_aware=False) as client:
            assert client.get(key, r=2).value == b"v"
    finally:
        os.kill(cluster.nodes[origin].pid, signal.SIGCONT)

    # Two replicas down and convicted: refused before anything is applied.
    for node_id in (second, third):
        cluster.nodes[node_id].kill()
    poll(lambda: _peer_up(cluster.nodes[origin], second) == 0.0
         and _peer_up(cluster.nodes[origin], third) == 0.0, 15, "both seen down")
    with kvclient.Client([cluster.nodes[origin].address], timeout=10, max_attempts=1) as client:
        with pytest.raises(kvclient.errors.Unavailable) as caught:
            client.put(key, b"refused", w=2, sloppy=False)
        assert caught.value.outcome == "not_applied"
        assert caught.value.reason == "QUORUM_NOT_REACHED"
        assert client.get(key, r=1).value == b"v"  # the origin applied nothing


def _stream_messages(cluster: Cluster) -> tuple[float, float]:
    """Replica.Stream messages and Replica.Batch calls the nodes served."""
    return (_total(cluster, 'kvstore_requests_total{code="OK",method="Replica.Stream"}', ""),
            _total(cluster, 'kvstore_requests_total{code="OK",method="Replica.Batch"}', ""))


def test_replica_operations_go_over_streams_and_half_megabyte_values_all_go_through(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    coordinator = cluster.coordinators[0].address
    # 64 writes of 500 KB in flight: 32 MB that bounds by count alone would
    # pack into messages over the 4 MiB limit.
    items = {b"big-%02d" % i: os.urandom(512_000) for i in range(64)}
    asyncio.run(_write_all(coordinator, items, w=2, in_flight=64))
    with kvclient.Client([coordinator], timeout=30) as client:
        assert all(client.get(key, r=2).value == value for key, value in items.items())
    streamed, batched = _stream_messages(cluster)
    assert streamed > 0 and batched == 0  # the nodes' heartbeats and replication: streams


def test_a_node_with_peer_streams_open_stops_without_waiting_out_its_grace(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    coordinator = cluster.coordinators[0].address
    asyncio.run(_write_all(coordinator, {b"key-%d" % i: b"v" for i in range(200)}, w=3))
    started = time.monotonic()
    assert cluster.nodes["n2"].stop() == 0
    took = time.monotonic() - started
    assert took < 5, f"stopping took {took:.1f}s (the grace period is 10 s)"
    with kvclient.Client([coordinator], timeout=10) as client:
        client.put(b"after", b"v", w=2)  # its streams failed over: stand-ins, other origins
        assert client.get(b"after", r=2).value == b"v"
