"""`kvstore admin repair`: anti-entropy on demand, one partition at a time.

Asks each node, for each partition it replicates, to compare its Merkle tree
with the other replicas now (`Replica.Batch` repair) and prints a line per
partition. Reads only the cluster's [cluster] table; no state of its own.
"""

import tomllib
from collections.abc import Callable
from pathlib import Path

import grpc

from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvstore.placement.membership import ClusterSpec, MembershipError
from kvstore.rpc.channels import open_channel


class RepairError(RuntimeError):
    """The repair could not run; the message says why."""


def repair_cluster(config_file: Path, node_ids: list[str], partition: int | None,
                   timeout: float, say: Callable[[str], None]) -> int:
    try:
        spec = ClusterSpec.from_table(tomllib.loads(config_file.read_text())["cluster"])
    except (OSError, KeyError, tomllib.TOMLDecodeError, MembershipError, ValueError) as exc:
        raise RepairError(f"cannot read the [cluster] table of {config_file}: {exc}") from exc
    unknown = sorted(set(node_ids) - {m.node_id for m in spec.members})
    if unknown:
        raise RepairError(f"not members of the cluster: {', '.join(unknown)}")
    if partition is not None and not 0 <= partition < spec.partitions:
        raise RepairError(f"partition {partition} does not exist; use 0..{spec.partitions - 1}")
    total = 0
    for member in spec.members:
        if node_ids and member.node_id not in node_ids:
            continue
        held = [p for p in range(spec.partitions)
                if member.node_id in spec.ring.preference_list(p, spec.replicas)
                and (partition is None or p == partition)]
        with open_channel(member.address) as channel:
            stub = replica_pb2_grpc.ReplicaStub(channel)
            for done, p in enumerate(held, 1):
                repaired = _repair(stub, member.node_id, p, timeout)
                total += repaired
                say(f"{member.node_id}: partition {p} ({done}/{len(held)}): "
                    f"{repaired} key(s) repaired")
    return total


def _repair(stub: replica_pb2_grpc.ReplicaStub, node_id: str, partition: int,
            timeout: float) -> int:
    op = replica_pb2.ReplicaOp(repair=replica_pb2.ReplicaRepair(partition=partition))
    try:
        result = stub.Batch(replica_pb2.ReplicaBatchRequest(ops=[op]), timeout=timeout).results[0]
    except grpc.RpcError as exc:
        raise RepairError(f"{node_id}: {exc.code().name}: {exc.details()}") from exc
    if result.status.code:
        raise RepairError(f"{node_id}: partition {partition}: {result.status.message}")
    return result.repaired
