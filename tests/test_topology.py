"""KV.Topology: what a process tells a client so it can route by key (the
members by advertised address, each partition's preference list, the hash
scheme, a version shared by every process of a cluster), and --advertise."""

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvclient import routing
from kvclient.pb import kv_pb2, kv_pb2_grpc
from kvstore.placement.ring import partition_of
from kvstore.ops.processes import NodeProcess
from kvstore.placement.membership import ClusterMember, ClusterSpec
from kvstore.rpc.channels import open_channel
from kvstore.rpc.topology import HASH_SCHEME, topology_response
from kvstore.security.secret import ensure_secret
from kvstore.security.settings import AuthSettings, Security
from kvstore.server.config import ConfigError, NodeConfig

pytestmark = pytest.mark.timeout(60)

SPEC = ClusterSpec(tuple(ClusterMember(f"n{i}", f"10.0.0.{i}:7101") for i in range(1, 5)),
                   replicas=3, partitions=16)


def test_it_lists_members_and_every_partitions_preference_list() -> None:
    topology = topology_response(SPEC, "n2", "node")
    assert (topology.mode, topology.role, topology.id) == ("leaderless", "node", "n2")
    assert (topology.hash, topology.replicas) == (HASH_SCHEME, 3)
    assert [(m.id, m.address) for m in topology.members] == [
        (m.node_id, m.address) for m in SPEC.members]
    assert [list(p.replicas) for p in topology.partitions] == [
        SPEC.ring.preference_list(p, 3) for p in range(16)]


def test_the_version_is_the_clusters_not_the_answering_processes() -> None:
    version = topology_response(SPEC, "n1", "node").version
    assert version != 0
    assert topology_response(SPEC, "c1", "coordinator").version == version
    moved = ClusterSpec((*SPEC.members[:3], ClusterMember("n4", "10.0.0.9:7101")),
                        replicas=3, partitions=16)
    fewer_replicas = ClusterSpec(SPEC.members, replicas=2, partitions=16)
    assert topology_response(moved, "n1", "node").version != version
    assert topology_response(fewer_replicas, "n1", "node").version != version


@given(st.binary(max_size=64))
def test_the_hash_scheme_is_what_its_name_says(key: bytes) -> None:
    # What a client in any language computes from the scheme's description.
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    assert digest >> (64 - 4) == SPEC.partition_of(key)  # 16 partitions: the top 4 bits


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=16))
def test_the_client_computes_a_keys_partition_as_the_nodes_do(key: bytes, bits: int) -> None:
    assert routing.partition_of(key, 1 << bits) == partition_of(key, 1 << bits)


@given(st.binary(max_size=64))
def test_the_routing_table_sends_a_key_to_its_replicas_in_preference_order(key: bytes) -> None:
    table = routing.RoutingTable.from_topology(topology_response(SPEC, "c1", "coordinator"))
    assert table is not None and table.role == "coordinator"
    replicas = table.replicas_of(key)
    assert replicas == tuple(SPEC.member(n).address for n in SPEC.preference_list(key))
    given_addresses = ["10.0.0.4:7101", "c1:7201"]
    assert table.candidates(key, given_addresses) == replicas + tuple(
        a for a in given_addresses if a not in replicas)


def test_a_topology_the_client_cannot_route_by_gives_no_table() -> None:
    unknown_hash = topology_response(SPEC, "n1", "node")
    unknown_hash.hash = "murmur3"
    no_member = topology_response(SPEC, "n1", "node")
    del no_member.members[0]
    not_a_power_of_two = topology_response(SPEC, "n1", "node")
    del not_a_power_of_two.partitions[0]
    empty = topology_response(SPEC, "n1", "node")
    del empty.partitions[3].replicas[:]
    for topology in (unknown_hash, no_member, not_a_power_of_two, empty,
                     kv_pb2.TopologyResponse()):
        assert routing.RoutingTable.from_topology(topology) is None


def test_leaders_are_named_beside_the_replicas_outside_the_version_and_routed_to_first() -> None:
    from kvstore.leader.leaders import LeaderBook
    from kvstore.rpc.topology import leaders_topology

    spec = ClusterSpec(SPEC.members, replicas=3, partitions=16, mode="leader")
    base = topology_response(spec, "c1", "coordinator")
    book = LeaderBook()
    answer = leaders_topology(base, book)
    assert all(p.leader == "" for p in answer().partitions)
    follower = spec.ring.preference_list(5, 3)[2]
    book.learn(5, follower, term=3)
    now = answer()
    assert (now.partitions[5].leader, now.partitions[5].term) == (follower, 3)
    assert now.version == base.version  # leaders move; the cluster is the same
    table = routing.RoutingTable.from_topology(now)
    assert table is not None
    address = {m.node_id: m.address for m in spec.members}
    assert table.replicas[5][0] == address[follower]
    assert sorted(table.replicas[5]) == sorted(address[n] for n in spec.ring.preference_list(5, 3))
    assert table.replicas[4] == tuple(address[n] for n in spec.ring.preference_list(4, 3))


def test_an_answer_naming_a_leader_moves_it_first_in_that_partition_only() -> None:
    spec = ClusterSpec(SPEC.members, replicas=3, partitions=16, mode="leader")
    table = routing.RoutingTable.from_topology(topology_response(spec, "n1", "node"))
    assert table is not None
    key = next(k for k in (b"k%d" % i for i in range(1000))
               if partition_of(k, 16) == 5)
    address = {m.node_id: m.address for m in spec.members}
    first, second, third = spec.ring.preference_list(5, 3)
    moved = table.with_leader(key, third)
    assert moved.replicas[5] == (address[third], address[first], address[second])
    assert moved.replicas[:5] == table.replicas[:5] and moved.replicas[6:] == table.replicas[6:]
    assert moved.with_leader(key, third) is moved  # first already
    outsider = next(m.node_id for m in spec.members if m.node_id not in (first, second, third))
    assert table.with_leader(key, outsider) is table  # not a replica of the partition
    assert table.with_leader(key, "nobody") is table  # not a member


def test_advertise_is_the_single_nodes_address_and_must_match_its_member_entry(
        tmp_path: Path) -> None:
    # Plaintext beyond loopback needs --insecure, and with peers the cluster
    # secret too (tests/test_secure_defaults.py).
    insecure = Security(insecure=True)
    alone = NodeConfig("n1", listen="0.0.0.0:7101", advertise="db1.example:7101",
                       security=insecure)
    assert alone.advertised_address == "db1.example:7101"
    assert alone.cluster_spec.member("n1").address == "db1.example:7101"
    assert NodeConfig("n1", listen="127.0.0.1:7101").advertised_address == "127.0.0.1:7101"
    guarded = Security(auth=AuthSettings(cluster_secret_file=ensure_secret(tmp_path)),
                       insecure=True)
    member = NodeConfig("n2", listen="0.0.0.0:7101", cluster=SPEC, security=guarded)
    assert member.advertised_address == "10.0.0.2:7101"
    with pytest.raises(ConfigError, match=r"address of node 'n2' in \[cluster\]"):
        NodeConfig("n2", advertise="10.0.0.7:7101", cluster=SPEC)
    with pytest.raises(ConfigError, match="advertise must be HOST:PORT"):
        NodeConfig("n1", advertise="nowhere")


@pytest.mark.process
def test_a_node_answers_topology_with_its_advertised_address(start) -> None:  # type: ignore[no-untyped-def]
    node: NodeProcess = start(extra=["--advertise", "kv-n1.example:7101"])
    with open_channel(node.address) as channel:
        topology = kv_pb2_grpc.KVStub(channel).Topology(kv_pb2.TopologyRequest(), timeout=10)
    assert [(m.id, m.address) for m in topology.members] == [("n1", "kv-n1.example:7101")]
    assert (topology.role, topology.id, topology.replicas) == ("node", "n1", 1)
    assert len(topology.partitions) == 64 and all(
        list(p.replicas) == ["n1"] for p in topology.partitions)
