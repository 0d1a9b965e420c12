"""A leader-mode node's side of the peer-pair stream (`Replica.Stream` and
`Replica.Batch`, through `servicers.ReplicaService`): the operations of
leader mode, each turned into a call on this node's Raft driver or
`LocalLeader`, and its answer or refusal back into a `ReplicaResult`.

- `raft`: an envelope of Raft messages from the sender's host, handed to
  this node's host and answered at once (the answer is only a receipt; Raft
  messages flow both ways as envelopes of their own). An envelope this node
  cannot read is refused, and the sender's link logs nothing more: Raft
  will send again what matters.
- `leader_write`: a write forwarded to this node as the partition's
  leader: proposed here, answered once applied, or refused (NOT_LEADER names
  the leader this node knows). Never forwarded again.
- `leader_read`: a linearizable read (through this node's host, which as a
  follower asks its leader) or a stale one (what this replica applied).
"""

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from kvclient.pb import replica_pb2
from kvstore.errors import InvalidArgument, KVStoreError
from kvstore.leader import snapshot_chunks, wire
from kvstore.leader.commands import Command, Delete, Put
from kvstore.leader.driver import RaftDriver
from kvstore.leader.local import LocalLeader
from kvstore.leader.raft.messages import InstallSnapshot
from kvstore.rpc import validation
from kvstore.rpc.replica_stream import Started
from kvstore.rpc.status import item_status

log = logging.getLogger(__name__)

KINDS = frozenset({"raft", "leader_write", "leader_read"})


class LeaderReplicaOps:
    def __init__(self, driver: RaftDriver, local: LocalLeader, limits: validation.Limits, *,
                 partitions: int, max_timeout: float,
                 on_snapshot_received: Callable[[], None] = lambda: None) -> None:
        """`max_timeout`: the longest a forwarded operation may take here
        (the node's request timeout)."""
        self._driver = driver
        self._local = local
        self._limits = limits
        self._partitions = partitions
        self._max_timeout = max_timeout
        self._on_snapshot_received = on_snapshot_received
        self._snapshots = snapshot_chunks.SnapshotAssembly()

    def start(self, op: replica_pb2.ReplicaOp) -> Started:
        """Start one operation of a kind in KINDS: its result now, or a
        coroutine returning it (which never raises)."""
        kind = op.WhichOneof("op")
        try:
            if kind == "raft":
                return self._receive(op.raft)
            if kind == "leader_write":
                return _settled(self._write(op.leader_write))
            if kind == "leader_read":
                return self._read(op.leader_read)
        except KVStoreError as exc:
            return replica_pb2.ReplicaResult(status=item_status(exc))
        raise ValueError(f"not a leader-mode operation: {kind}")

    def _receive(self, envelope: Any) -> replica_pb2.ReplicaResult:
        whole = self._snapshots.take(envelope)
        if whole is None:
            return replica_pb2.ReplicaResult()  # a piece of a snapshot, kept
        try:
            decoded = wire.from_proto(whole)
        except KVStoreError as exc:
            log.warning("refused a Raft envelope from %s: %s", envelope.sender, exc)
            raise
        for m in decoded.messages:
            if isinstance(m.message, InstallSnapshot):
                self._on_snapshot_received()
        self._driver.receive(decoded)
        return replica_pb2.ReplicaResult()

    def _write(self, write: replica_pb2.ReplicaLeaderWrite,
               ) -> Coroutine[Any, Any, replica_pb2.ReplicaResult]:
        partition = self._partition(write.partition)
        validation.check_key(write.key, self._limits)
        validation.check_value(write.value, self._limits)
        validation.check_write_extras(b"", write.request_id)
        if not write.request_id:
            raise InvalidArgument("a forwarded write carries no request id")
        if_version = write.if_version if write.HasField("if_version") else None
        command: Command = (Delete(write.key, write.request_id, if_version=if_version)
                            if write.delete else
                            Put(write.key, write.value, write.request_id, if_version=if_version))
        return self._written(partition, command, self._timeout(write.timeout_ms))

    async def _written(self, partition: int, command: Command,
                       timeout: float) -> replica_pb2.ReplicaResult:
        outcome = await self._local.write(partition, command, timeout)
        return replica_pb2.ReplicaResult(found=True, version=outcome.version, index=outcome.index)

    def _read(self, read: replica_pb2.ReplicaLeaderRead) -> Started:
        partition = self._partition(read.partition)
        validation.check_key(read.key, self._limits)
        if read.stale:
            return _value(self._local.read_stale(partition, read.key))
        return _settled(self._linearizable(partition, read.key, self._timeout(read.timeout_ms)))

    async def _linearizable(self, partition: int, key: bytes,
                            timeout: float) -> replica_pb2.ReplicaResult:
        return _value(await self._local.read(partition, key, timeout))

    def _partition(self, partition: int) -> int:
        if partition >= self._partitions:
            raise InvalidArgument(f"partition {partition} does not exist; "
                                  f"use 0..{self._partitions - 1}")
        return partition

    def _timeout(self, timeout_ms: int) -> float:
        return min(self._max_timeout, timeout_ms / 1000) if timeout_ms else self._max_timeout


def _value(read: Any) -> replica_pb2.ReplicaResult:
    if read.value is None:
        return replica_pb2.ReplicaResult(found=False, version=0)
    return replica_pb2.ReplicaResult(found=True, version=read.version, value=read.value)


async def _settled(work: Coroutine[Any, Any, replica_pb2.ReplicaResult],
                   ) -> replica_pb2.ReplicaResult:
    try:
        return await work
    except Exception as exc:
        return replica_pb2.ReplicaResult(status=item_status(exc))
