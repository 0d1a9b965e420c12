"""`kvstore admin repair`: anti-entropy on demand, one partition at a time.

Asks each node, for each partition it replicates, to compare its Merkle tree
with the other replicas now (`Replica.Batch` repair) and prints a line per
partition. Reads only the cluster's [cluster] table; no state of its own.
"""

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvstore.ops.remote import RemoteError, fetch_status
from kvstore.placement.membership import ClusterSpec, MembershipError
from kvclient.security import PLAINTEXT, Credentials
from kvstore.rpc.channels import open_channel


class RepairError(RuntimeError):
    """The repair could not run; the message says why."""


@dataclass(frozen=True)
class RepairTarget:
    node_id: str
    address: str
    partitions: list[int]  # the partitions it replicates that are to be repaired


def targets_from_config(config_file: Path) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """(members as (id, address), each partition's replicas) from a [cluster] table."""
    try:
        spec = ClusterSpec.from_table(tomllib.loads(config_file.read_text())["cluster"])
    except (OSError, KeyError, tomllib.TOMLDecodeError, MembershipError, ValueError) as exc:
        raise RepairError(f"cannot read the [cluster] table of {config_file}: {exc}") from exc
    return ([(m.node_id, m.address) for m in spec.members],
            [spec.ring.preference_list(p, spec.replicas) for p in range(spec.partitions)])


def targets_from_status(address: str, timeout: float, credentials: Credentials = PLAINTEXT
                        ) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """The same, from a running process's `Admin.Status`."""
    try:
        status = fetch_status(address, timeout, credentials)
    except RemoteError as exc:
        raise RepairError(str(exc)) from exc
    return ([(m.id, m.address) for m in status.members],
            [list(p.replicas) for p in status.ring])


def repair_targets(members: list[tuple[str, str]], ring: list[list[str]], node_ids: list[str],
                   partition: int | None) -> list[RepairTarget]:
    """Which node repairs which partitions: every node (or those named),
    every partition it replicates (or the one named)."""
    unknown = sorted(set(node_ids) - {node_id for node_id, _ in members})
    if unknown:
        raise RepairError(f"not members of the cluster: {', '.join(unknown)}")
    if partition is not None and not 0 <= partition < len(ring):
        raise RepairError(f"partition {partition} does not exist; use 0..{len(ring) - 1}")
    return [RepairTarget(node_id, address,
                         [p for p, replicas in enumerate(ring)
                          if node_id in replicas and partition in (None, p)])
            for node_id, address in members if not node_ids or node_id in node_ids]


def repair_cluster(targets: list[RepairTarget], timeout: float,
                   say: Callable[[str], None], credentials: Credentials = PLAINTEXT) -> int:
    """Repair each target's partitions in turn; the keys repaired in all.
    `credentials` must make an admin: the cluster secret, or an admin certificate."""
    total = 0
    for target in targets:
        with open_channel(target.address, credentials=credentials) as channel:
            stub = replica_pb2_grpc.ReplicaStub(channel)
            for done, p in enumerate(target.partitions, 1):
                repaired = _repair(stub, target.node_id, p, timeout)
                total += repaired
                say(f"{target.node_id}: partition {p} ({done}/{len(target.partitions)}): "
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
