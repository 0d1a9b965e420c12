"""The Admin service: `Admin.Status`, what a running process tells an
operator's tools about itself and the cluster as it sees it (who it is, the
members and whether its failure detector holds them up, the ring, and its
own figures). Served by nodes and coordinators alike; each passes what it
has (`node_stats` or `coordinator_stats`).
"""

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from kvclient.pb import admin_pb2, admin_pb2_grpc
from kvstore.errors import FailedPrecondition
from kvstore.health.failure_detector import NodeStatus
from kvstore.leader.operator import RaftOperator
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc.servicers import rpc
from kvstore.server.metrics import RequestMetrics, build_version


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, process_id: str, role: str, address: str, spec: ClusterSpec,
                 peers: Callable[[], Mapping[str, NodeStatus]], metrics: RequestMetrics, *,
                 node_stats: Callable[[], admin_pb2.NodeStats] | None = None,
                 coordinator_stats: Callable[[], admin_pb2.CoordinatorStats] | None = None,
                 snapshot: tuple[Callable[[int], None], Path] | None = None,
                 raft: RaftOperator | None = None,
                 request_timeout: float = 30.0) -> None:
        """`address`: where it is reached (its advertised address); `peers`:
        the failure detector's view of every other node; `snapshot`: a
        storage node's (copy the database to this fd, the directory to
        stage the copy in: its data dir, sized for the data);
        `raft`: a leader-mode node's Raft groups."""
        self._snapshot = snapshot
        self._raft = raft
        self._request_timeout = request_timeout
        self.metrics = metrics
        self._process_id = process_id
        self._role = role
        self._address = address
        self._spec = spec
        self._peers = peers
        self._node_stats = node_stats
        self._coordinator_stats = coordinator_stats
        self._started = time.monotonic()
        self._ring = [
            admin_pb2.PartitionReplicas(
                partition=p, replicas=spec.ring.preference_list(p, spec.replicas))
            for p in range(spec.partitions)]

    @rpc("Admin.Status")
    async def Status(self, request: admin_pb2.StatusRequest,
                     context: Any) -> admin_pb2.StatusResponse:
        seen = self._peers()
        members = []
        for member in self._spec.members:
            is_self = member.node_id == self._process_id
            status = seen.get(member.node_id)
            members.append(admin_pb2.MemberStatus(
                id=member.node_id, address=member.address, self=is_self,
                up=is_self or (status is not None and status.up),
                phi=0.0 if status is None else status.phi))
        response = admin_pb2.StatusResponse(
            id=self._process_id, role=self._role, version=build_version(),
            address=self._address, uptime_seconds=time.monotonic() - self._started,
            mode=self._spec.mode, replicas=self._spec.replicas,
            partitions=self._spec.partitions, members=members, ring=self._ring)
        if self._node_stats is not None:
            response.node.CopyFrom(self._node_stats())
        if self._coordinator_stats is not None:
            response.coordinator.CopyFrom(self._coordinator_stats())
        if self._raft is not None:
            response.raft.extend(
                admin_pb2.RaftGroupStatus(
                    partition=g.partition, role=g.role, leader=g.leader or "", term=g.term,
                    commit=g.commit, applied=g.applied, last_index=g.last_index,
                    quiesced=g.quiesced, halted=g.halted or "", fenced=g.fenced)
                for g in self._raft.groups())
        return response

    @rpc("Admin.TransferLeader")
    async def TransferLeader(self, request: admin_pb2.TransferLeaderRequest,
                             context: Any) -> admin_pb2.TransferLeaderResponse:
        if self._raft is None:
            raise FailedPrecondition(
                f"{self._process_id} is a {self._role} of a {self._spec.mode} cluster and leads "
                "no Raft group; ask the partition's leader (kvstore ring shows it)")
        remaining = context.time_remaining()
        timeout = self._request_timeout if remaining is None else remaining
        leader, term = await self._raft.transfer(request.partition, request.to, timeout)
        return admin_pb2.TransferLeaderResponse(leader=leader, term=term)

    async def Snapshot(self, request: admin_pb2.SnapshotRequest,
                       context: Any) -> AsyncIterator[admin_pb2.SnapshotChunk]:
        """The database copy, staged in a temporary file (deleted after) and
        streamed in chunks; the last chunk carries its SHA-256."""
        started = time.perf_counter()
        if self._snapshot is None:
            self.metrics.observe_request("Admin.Snapshot", "FAILED_PRECONDITION", 0.0)
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{self._process_id} is a {self._role} and holds no data; ask a storage node "
                "for its snapshot")
        assert self._snapshot is not None
        code = "OK"
        try:
            copy, staging = self._snapshot
            with tempfile.TemporaryFile(dir=staging, prefix="snapshot-") as staged:
                await asyncio.to_thread(copy, staged.fileno())
                total = os.fstat(staged.fileno()).st_size
                staged.seek(0)
                digest = hashlib.sha256()
                first = True
                while chunk := await asyncio.to_thread(staged.read, SNAPSHOT_CHUNK_BYTES):
                    digest.update(chunk)
                    piece = admin_pb2.SnapshotChunk(data=chunk)
                    if first:
                        piece.node_id, piece.total_bytes, first = self._process_id, total, False
                    yield piece
                yield admin_pb2.SnapshotChunk(sha256=digest.digest())
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        finally:
            self.metrics.observe_request("Admin.Snapshot", code, time.perf_counter() - started)


SNAPSHOT_CHUNK_BYTES = 1024 * 1024
