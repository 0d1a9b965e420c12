"""`KV.Topology`: what a process tells a client about the cluster so that the
client can send each operation straight to a replica of its key (members by
the address they advertise, one preference list per partition, how a key
maps to its partition), with a version that changes whenever any of it does.

Built once per process from its cluster spec: membership is static. In
leader mode each answer adds the partitions' leaders as the process knows
them then (`leaders_topology`); they are not part of the version.
"""

import hashlib
from collections.abc import Callable

from kvclient.pb import kv_pb2
from kvstore.leader.leaders import LeaderBook
from kvstore.placement.membership import ClusterSpec

# ring.partition_of: the top bits of the key's 64-bit BLAKE2b digest. A client
# that knows this name computes a key's partition exactly as the nodes do.
HASH_SCHEME = "blake2b-64-top-bits"


def topology_response(spec: ClusterSpec, process_id: str, role: str) -> kv_pb2.TopologyResponse:
    """The answer of process `process_id` ("node" or "coordinator") of `spec`'s cluster."""
    response = kv_pb2.TopologyResponse(
        mode=spec.mode, role=role, id=process_id, hash=HASH_SCHEME, replicas=spec.replicas,
        members=[kv_pb2.TopologyMember(id=m.node_id, address=m.address) for m in spec.members],
        partitions=[kv_pb2.TopologyPartition(replicas=spec.ring.preference_list(p, spec.replicas))
                    for p in range(spec.partitions)])
    response.version = topology_version(response)
    return response


def topology_version(response: kv_pb2.TopologyResponse) -> int:
    """A digest of everything but the answering process, the leaders and
    the version itself: the same on every process of one cluster, and different as soon
    as a member, an address or a preference list differs."""
    shared = kv_pb2.TopologyResponse()
    shared.CopyFrom(response)
    shared.ClearField("version")
    shared.ClearField("role")
    shared.ClearField("id")
    for partition in shared.partitions:  # leader mode's leaders move; the cluster does not
        partition.ClearField("leader")
        partition.ClearField("term")
    digest = hashlib.blake2b(shared.SerializeToString(deterministic=True), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def leaders_topology(base: kv_pb2.TopologyResponse,
                     book: LeaderBook) -> Callable[[], kv_pb2.TopologyResponse]:
    """What a leader-mode process answers: `base` with each partition's
    leader (and its term) from `book`, as it stands at each call."""

    def answer() -> kv_pb2.TopologyResponse:
        response = kv_pb2.TopologyResponse()
        response.CopyFrom(base)
        for partition, entry in enumerate(response.partitions):
            known = book.known(partition)
            if known is not None:
                entry.leader, entry.term = known.leader, known.term
        return response

    return answer
