"""Leader mode over the peer links (`peers.Peers`: one `Replica.Stream` per
peer, the same one leaderless replication and the heartbeats use):

- `RaftLinks`, the Raft driver's `Transport`: each envelope goes one way
  (`PeerLink.post`: ahead of the queue, never held behind a write awaiting
  its commit, and never answered: an answer per envelope cost a message
  and a future each way, about a tenth of a busy node's loop). A broken
  stream to a peer tells the host the peer is unreachable (its leaders
  stop streaming appends to it until it answers again). Raft sends again
  what matters, so nothing is retried here.
- `LeaderPeers`, `access.LeaderOps` for this process: this node's
  `LocalLeader` directly, another node through `leader_write` and
  `leader_read` operations of its link. A node's refusal raises its error,
  with its reason and fields; no answer raises `access.Unreachable`.
"""

from collections.abc import Callable

from kvclient.pb import kv_pb2, replica_pb2
from kvstore.errors import KVStoreError
from kvstore.leader import snapshot_chunks, wire
from kvstore.leader.access import Unreachable
from kvstore.leader.commands import Command, Put
from kvstore.leader.envelopes import Envelope
from kvstore.leader.local import LocalLeader
from kvstore.leader.raft.messages import InstallSnapshot, NodeId
from kvstore.leader.state_machine import Outcome, Status
from kvstore.leader.waiters import ReadValue
from kvstore.rpc.peers import Peers
from kvstore.rpc.status import error_of


class RaftLinks:
    def __init__(self, peers: Peers, *, on_unreachable: Callable[[NodeId], None],
                 on_snapshot_sent: Callable[[], None] = lambda: None) -> None:
        self._peers = peers
        self._on_unreachable = on_unreachable
        self._on_snapshot_sent = on_snapshot_sent
        self._watched: set[NodeId] = set()  # the peers whose links tell of broken streams

    def send(self, envelope: Envelope) -> None:
        for m in envelope.messages:
            if isinstance(m.message, InstallSnapshot):
                self._on_snapshot_sent()
        peer = envelope.to
        link = self._peers.link(peer)
        if peer not in self._watched:
            self._watched.add(peer)
            link.on_broken(lambda: self._on_unreachable(peer))
        # A snapshot larger than a message goes ahead of its envelope, in pieces.
        for piece in snapshot_chunks.split(wire.to_proto(envelope)):
            link.post(replica_pb2.ReplicaOp(raft=piece))


class LeaderPeers:
    def __init__(self, peers: Peers, local: LocalLeader | None) -> None:
        self._peers = peers
        self._local = local

    async def write(self, node: NodeId, partition: int, command: Command,
                    timeout: float) -> Outcome:
        if self._local is not None and node == self._local.node_id:
            return await self._local.write(partition, command, timeout)
        op = replica_pb2.ReplicaOp(leader_write=replica_pb2.ReplicaLeaderWrite(
            partition=partition, key=command.key, request_id=command.request_id,
            value=command.value if isinstance(command, Put) else b"",
            delete=not isinstance(command, Put), timeout_ms=_milliseconds(timeout),
            if_version=command.if_version))
        result = await self._ask(node, op, timeout)
        return Outcome(Status.APPLIED, result.version, result.index)

    async def read(self, node: NodeId, partition: int, key: bytes, stale: bool,
                   timeout: float) -> ReadValue:
        if self._local is not None and node == self._local.node_id:
            if stale:
                return self._local.read_stale(partition, key)
            return await self._local.read(partition, key, timeout)
        op = replica_pb2.ReplicaOp(leader_read=replica_pb2.ReplicaLeaderRead(
            partition=partition, key=key, stale=stale, timeout_ms=_milliseconds(timeout)))
        result = await self._ask(node, op, timeout)
        return ReadValue(result.version, result.value) if result.found else ReadValue(0, None)

    async def _ask(self, node: NodeId, op: replica_pb2.ReplicaOp,
                   timeout: float) -> replica_pb2.ReplicaResult:
        # A little longer than the node's own deadline, so that its answer
        # (say, that it ran out of time) arrives before the link gives up.
        future = self._peers.submit(node, op, _itself, timeout + _ANSWER_GRACE_SECONDS,
                                    any_answer=True)
        try:
            result = await future
        except KVStoreError as error:
            raise Unreachable(f"{node}: {error}") from error
        if result.status.code:
            raise _refusal(node, result.status)
        return result


_ANSWER_GRACE_SECONDS = 0.1


def _itself(result: replica_pb2.ReplicaResult) -> replica_pb2.ReplicaResult:
    return result


def _refusal(node: NodeId, status: kv_pb2.ItemStatus) -> KVStoreError:
    error = error_of(status.code, f"{node}: {status.message}")
    error.reason = status.reason or None
    error.metadata = dict(status.metadata)
    return error


def _milliseconds(seconds: float) -> int:
    return max(1, min(2**32 - 1, int(seconds * 1000)))
