"""Values at exactly the size limit (and keys at theirs) go through every
hop of real processes: the client's stream (several coalescing at once),
the coordinator's replica streams and their answers, batches, hint replay
to a replica that was down, and anti-entropy's repair of one that missed
the write; one byte more is refused."""

import asyncio
import os
import tomllib

import pytest

import kvclient
from kvclient import errors
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc.channels import open_channel
from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvstore.causality import versions
from kvstore.ops.processes import NodeProcess
from tests.clusters import Cluster, metric, poll

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

MAX_VALUE = 1024 * 1024  # the default max_value_bytes
MAX_KEY = 1024  # the default max_key_bytes


def _key(tag: bytes) -> bytes:
    return tag + b"." * (MAX_KEY - len(tag))


def _held(node: NodeProcess, key: bytes) -> list[bytes] | None:
    """The values one replica holds for `key`, asked directly, as an admin
    (None: nothing)."""
    with open_channel(node.address, credentials=node.credentials) as channel:
        op = replica_pb2.ReplicaOp(read=replica_pb2.ReplicaRead(key=key))
        [result] = replica_pb2_grpc.ReplicaStub(channel).Batch(
            replica_pb2.ReplicaBatchRequest(ops=[op]), timeout=10).results
    assert result.status.code == 0, result.status.message
    return versions.decode(result.state).values if result.found else None


def _replicas(cluster: Cluster, key: bytes) -> list[str]:
    spec = ClusterSpec.from_table(tomllib.loads(cluster.config.read_text())["cluster"])
    return spec.preference_list(key)


async def _put_together(address: str, items: dict[bytes, bytes]) -> None:
    async with kvclient.AsyncClient([address], timeout=60) as client:
        await asyncio.gather(*(client.put(key, value, w="all") for key, value in items.items()))


def test_values_at_the_limit_go_through_the_client_stream_the_coordinator_and_every_replica(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster()
    coordinator = cluster.coordinators[0].address
    # Eight at once: the client's messages and the coordinator's to each
    # replica would be 8 MiB if bounded by count alone; each goes alone.
    items = {_key(b"at-limit-%d" % i): os.urandom(MAX_VALUE) for i in range(8)}
    asyncio.run(_put_together(coordinator, items))
    for key, value in items.items():
        for node in cluster.nodes.values():
            assert _held(node, key) == [value]
    with kvclient.Client([coordinator], timeout=60) as client:
        # Back through the replicas' answers and the coordinator's (r=all: no cache).
        assert all(client.get(key, r="all").value == value for key, value in items.items())
        # A batch of three: a message of 3 MiB to the coordinator, one apply each onward.
        batch = {_key(b"batch-%d" % i): os.urandom(MAX_VALUE) for i in range(3)}
        client.put_many(batch, w="all")
        assert [r.value for r in client.get_many(list(batch), r="all")] == list(batch.values())
        with pytest.raises(errors.InvalidArgument, match="max_value_bytes"):
            client.put(b"too-big", b"x" * (MAX_VALUE + 1))
    with kvclient.Client([cluster.nodes["n2"].address], timeout=60) as client:
        # A node coordinating: the same hops, with its own replica among them.
        key = _key(b"via-node")
        value = os.urandom(MAX_VALUE)
        client.put(key, value, w="all")
        assert client.get(key, r="all").value == value


def test_a_value_at_the_limit_is_hinted_and_handed_over_and_repaired_by_anti_entropy(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(nodes=4, coordinators=0)
    hinted = _key(b"hinted")
    down = _replicas(cluster, hinted)[2]
    # A key of which `down` is a replica too, written without hints: only
    # anti-entropy can bring it there.
    repaired = next(k for k in (_key(b"repaired-%d" % i) for i in range(1000))
                    if down in _replicas(cluster, k))
    coordinator = cluster.nodes[next(n for n in _replicas(cluster, hinted) if n != down)]
    cluster.nodes[down].process.kill()
    cluster.nodes[down].process.wait()
    poll(lambda: metric(coordinator, f'kvstore_peer_up{{node="{down}"}}') == 0.0, 20,
         f"{down} seen down")
    values = {hinted: os.urandom(MAX_VALUE), repaired: os.urandom(MAX_VALUE)}
    with kvclient.Client([coordinator.address], timeout=60) as client:
        client.put(hinted, values[hinted], w="all")  # a stand-in holds it for `down`
        client.put(repaired, values[repaired], w=2, sloppy=False)  # no stand-in: no hint
    assert sum(metric(node, f'kvstore_hints_pending{{node="{down}"}}') or 0
               for node_id, node in cluster.nodes.items() if node_id != down) == 1
    back = cluster.restart(down)
    # No read of either key: the hint is replayed, the other repaired by anti-entropy.
    poll(lambda: _held(back, hinted) == [values[hinted]], 60, "the hint handed over")
    poll(lambda: _held(back, repaired) == [values[repaired]], 90, "anti-entropy repaired it")
