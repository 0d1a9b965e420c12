"""Token-aware routing on a real cluster: given one node's address, the
client sends each call on a key straight to the key's preferred replica
(every node's request counts show it); given a coordinator, everything goes
through the coordinator unless asked `token_aware=True`; a preferred replica
that is down sends its keys to the next replica. In leader mode, a leader
that moved is followed: the old one forwards the first call and names the
new one, and the next calls go there."""

import tomllib
from collections import Counter
from collections.abc import Callable

import pytest

import kvclient
from kvstore.ops.leadership import transfer_leader
from kvstore.placement.membership import ClusterSpec
from tests.clusters import Cluster, metric
from tests.test_leader_cluster import elected

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

KEYS = [f"key-{i}".encode() for i in range(40)]


def spec_of(cluster: Cluster) -> ClusterSpec:
    return ClusterSpec.from_table(tomllib.loads(cluster.config.read_text())["cluster"])


def counts(cluster: Cluster, method: str, down: str | None = None) -> dict[str, float]:
    """Each running server's count of `method` calls answered OK (`down`: one not running)."""
    servers = [s for s in [*cluster.nodes.values(), *cluster.coordinators] if s.node_id != down]
    return {s.node_id: metric(s, f'kvstore_requests_total{{code="OK",method="{method}"}}') or 0
            for s in servers}


def grew(before: dict[str, float], after: dict[str, float]) -> Counter[str]:
    return Counter({name: int(after[name] - before[name]) for name in after
                    if after[name] != before[name]})


def test_given_a_node_each_call_goes_to_its_keys_preferred_replica(
        make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(nodes=3, coordinators=1)
    spec = spec_of(cluster)
    preferred = Counter(spec.preference_list(key)[0] for key in KEYS)
    assert len(preferred) == 3  # every node is the first replica of some key
    with kvclient.Client([cluster.nodes["n1"].address]) as client:
        before = counts(cluster, "Put")
        for key in KEYS:
            client.put(key, b"v")
        assert grew(before, counts(cluster, "Put")) == preferred
        before = counts(cluster, "Get")
        assert all(client.get(key).value == b"v" for key in KEYS)
        assert grew(before, counts(cluster, "Get")) == preferred
        before = counts(cluster, "Delete")
        client.delete_many(KEYS[:10])
        assert grew(before, counts(cluster, "Delete")) == Counter(
            spec.preference_list(key)[0] for key in KEYS[:10])

    # The preferred replica of some keys goes down: they go to the next one.
    cluster.nodes["n2"].kill()
    on_n2 = [key for key in KEYS if spec.preference_list(key)[0] == "n2"]
    with kvclient.Client([cluster.nodes["n1"].address], timeout=10) as client:
        before = counts(cluster, "Put", down="n2")
        for key in on_n2:
            client.put(key, b"after")
        moved = grew(before, counts(cluster, "Put", down="n2"))
    assert sum(moved.values()) == len(on_n2) and "c1" not in moved


def test_given_a_coordinator_calls_go_through_it_unless_asked_to_route(
        make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(nodes=3, coordinators=1)
    spec = spec_of(cluster)
    coordinator = cluster.coordinators[0].address
    with kvclient.Client([coordinator]) as client:
        before = counts(cluster, "Put")
        for key in KEYS:
            client.put(key, b"v")
        assert grew(before, counts(cluster, "Put")) == Counter({"c1": len(KEYS)})
    with kvclient.Client([coordinator], token_aware=True) as client:
        before = counts(cluster, "Put")
        for key in KEYS:
            client.put(key, b"w")
        assert grew(before, counts(cluster, "Put")) == Counter(
            spec.preference_list(key)[0] for key in KEYS)
    with kvclient.Client([cluster.nodes["n1"].address], token_aware=False) as client:
        before = counts(cluster, "Put")
        for key in KEYS:
            client.put(key, b"x")
        assert grew(before, counts(cluster, "Put")) == Counter({"n1": len(KEYS)})


def test_in_leader_mode_the_client_follows_a_leader_that_moved(
        make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(nodes=3, coordinators=0, mode="leader")
    spec = spec_of(cluster)
    key = KEYS[0]
    partition = spec.partition_of(key)
    entry = cluster.nodes["n1"]
    with kvclient.Client([entry.address], timeout=10) as client:
        old = elected(cluster)[partition]
        before = counts(cluster, "Put")
        client.put(key, b"1")  # the table is fetched with every leader known
        assert grew(before, counts(cluster, "Put")) == Counter({old: 1})

        for step, (rpc, call) in enumerate([("Put", lambda: client.put(key, b"2")),
                                            ("Get", lambda: client.get(key))]):
            new = next(n for n in spec.preference_list(key) if n != old)
            moved = transfer_leader(entry.address, partition, new, 10, entry.credentials)
            assert moved.leader == new, moved
            before = counts(cluster, rpc)
            call()  # to the old leader, which forwards it and names the new one
            call()  # straight to the new one
            assert grew(before, counts(cluster, rpc)) == Counter({old: 1, new: 1}), step
            old = new
        assert client.get(key).value == b"2"
