"""`kvstore admin transfer-leader PARTITION NODE`: move a partition's Raft
leadership to another of its replicas, over the network.

It asks the process at the address for the ring and every node for its
groups (as `kvstore ring` does), finds the partition's leader, and sends it
`Admin.TransferLeader`, which answers once the leadership has moved. Bad
input (no such partition, a node that is not a replica, a leaderless
cluster) is refused before anything is sent.
"""

from dataclasses import dataclass

import grpc

from kvclient.pb import admin_pb2, admin_pb2_grpc
from kvclient.security import PLAINTEXT, Credentials
from kvstore.ops.remote import RemoteError, fetch_status, leaderships, member_statuses
from kvstore.rpc.channels import open_channel


class TransferError(RuntimeError):
    """The transfer could not be made; the message says why and what to do."""


@dataclass(frozen=True)
class Transferred:
    partition: int
    previous: str
    leader: str
    term: int


def transfer_leader(address: str, partition: int, to: str, timeout: float,
                    credentials: Credentials = PLAINTEXT) -> Transferred:
    try:
        first = fetch_status(address, min(timeout, 5.0), credentials)
    except RemoteError as exc:
        raise TransferError(str(exc)) from None
    if first.mode != "leader":
        raise TransferError(f"the cluster is {first.mode}: only a leader-mode cluster has "
                            "partition leaders to move")
    if not 0 <= partition < first.partitions:
        raise TransferError(f"partition {partition} does not exist; use "
                            f"0..{first.partitions - 1}")
    replicas = list(first.ring[partition].replicas)
    if to not in replicas:
        raise TransferError(f"{to} is not a replica of partition {partition}; its replicas "
                            f"are {', '.join(replicas)}")
    answers = member_statuses(first, min(timeout, 5.0), credentials)
    current = leaderships(answers).get(partition)
    if current is None:
        raise TransferError(f"partition {partition} has no leader that answers now; retry "
                            "once it has one (kvstore ring shows it)")
    if current["leader"] == to:
        return Transferred(partition, to, to, current["term"])
    leader_address = next(m.address for m in first.members if m.id == current["leader"])
    with open_channel(leader_address, credentials=credentials) as channel:
        try:
            answer = admin_pb2_grpc.AdminStub(channel).TransferLeader(
                admin_pb2.TransferLeaderRequest(partition=partition, to=to), timeout=timeout)
        except grpc.RpcError as exc:
            raise TransferError(f"{current['leader']} ({leader_address}): {exc.code().name}: "
                                f"{exc.details()}") from None
    return Transferred(partition, current["leader"], answer.leader, answer.term)
