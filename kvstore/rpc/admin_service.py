"""The Admin service: `Admin.Status`, what a running process tells an
operator's tools about itself and the cluster as it sees it (who it is, the
members and whether its failure detector holds them up, the ring, and its
own figures). Served by nodes and coordinators alike; each passes what it
has (`node_stats` or `coordinator_stats`).
"""

import time
from collections.abc import Callable, Mapping
from typing import Any

from kvclient.pb import admin_pb2, admin_pb2_grpc
from kvstore.health.failure_detector import NodeStatus
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc.servicers import rpc
from kvstore.server.metrics import RequestMetrics, build_version


class AdminService(admin_pb2_grpc.AdminServicer):
    def __init__(self, process_id: str, role: str, listen: str, spec: ClusterSpec,
                 peers: Callable[[], Mapping[str, NodeStatus]], metrics: RequestMetrics, *,
                 node_stats: Callable[[], admin_pb2.NodeStats] | None = None,
                 coordinator_stats: Callable[[], admin_pb2.CoordinatorStats] | None = None
                 ) -> None:
        """`peers`: the failure detector's view of every other node."""
        self.metrics = metrics
        self._process_id = process_id
        self._role = role
        self._listen = listen
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
            address=self._listen, uptime_seconds=time.monotonic() - self._started,
            mode=self._spec.mode, replicas=self._spec.replicas,
            partitions=self._spec.partitions, members=members, ring=self._ring)
        if self._node_stats is not None:
            response.node.CopyFrom(self._node_stats())
        if self._coordinator_stats is not None:
            response.coordinator.CopyFrom(self._coordinator_stats())
        return response
