"""A storage node of a leader-mode cluster ([cluster] mode = "leader"): a
Raft group per partition it replicates (the partition's preference list is
the group), all driven by one multi-Raft host over one LMDB environment
(`DATA_DIR/raft`), their envelopes on the peer-pair streams, and the KV
service over them (writes through the partition's leader; reads through
ReadIndex, or stale from this replica; forwarded to the leader when this
node does not lead).

Shutdown order: the gRPC server stops accepting and lets in-flight calls
finish (their writes are answered by the still running driver); the driver
stops (it answers whatever still waits, outcome unknown, and lets the pass
under way reach the disk); the heartbeats and the peer links close; only
then is the store closed.
"""

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kvclient.pb import admin_pb2
from kvclient.tracing import Tracing
from kvstore.clock import SYSTEM_CLOCK
from kvstore.health.failure_detector import NodeStatus
from kvstore.health.liveness import peer_liveness
from kvstore.leader.access import LeaderAccess
from kvstore.leader.driver import IntervalTicker, RaftDriver
from kvstore.leader.host import LeaderChange, MultiRaft
from kvstore.leader.lmdb_store import RAFT_DIR, LmdbRaftStore
from kvstore.leader.local import LocalLeader
from kvstore.leader.operator import RaftOperator
from kvstore.leader.settings import HostSettings
from kvstore.rpc.admin_service import AdminService
from kvstore.rpc.grpc_server import (access_control, load_tls_files, metrics_endpoint,
                                     watching_certificates)
from kvstore.rpc.leader_kv import LeaderKV
from kvstore.rpc.leader_peers import LeaderPeers, RaftLinks
from kvstore.rpc.leader_replica import LeaderReplicaOps
from kvstore.rpc.peers import Peers
from kvstore.rpc.servicers import KVService, ReplicaService
from kvstore.rpc.topology import leaders_topology, topology_response
from kvstore.rpc.validation import Limits
from kvstore.security.rotation import CertificateFiles
from kvstore.server.config import NodeConfig
from kvstore.server.metrics import NodeMetrics
from kvstore.server.node import link_settings, serve_services, stream_settings

log = logging.getLogger(__name__)


async def serve_leader_node(config: NodeConfig, stop: asyncio.Event,
                            reload: asyncio.Event | None = None,
                            tracing: Tracing | None = None) -> None:
    tls_files = load_tls_files(config.security)
    spec = config.cluster_spec
    clock = SYSTEM_CLOCK
    store = LmdbRaftStore(config.data_dir / RAFT_DIR, map_size=config.map_size,
                          durable=config.durability == "sync",
                          request_id_ttl_ms=int(config.request_id_ttl_seconds * 1000))
    try:
        metrics = NodeMetrics(store.size_bytes, store.count_keys, store.used_bytes,
                              config.map_size)
        host = MultiRaft(config.node_id, store,
                         HostSettings(election_ticks=config.raft_election_ticks,
                                      snapshot_every=config.raft_snapshot_every,
                                      keep_entries=config.raft_keep_entries),
                         clock_ms=clock.wall_clock_ms)
        for partition in range(spec.partitions):
            voters = tuple(spec.ring.preference_list(partition, spec.replicas))
            if config.node_id in voters:
                host.add_group(partition, voters)
        addresses = {m.node_id: m.address for m in spec.members}
        tick = config.raft_tick_ms / 1000
        link_messages = functools.partial(metrics.observe_stream_message, "PeerLink")
        with metrics_endpoint(config.listen, config.metrics_port, metrics.registry):
            if tls_files is not None:
                metrics.watch_certificates(lambda: tls_files.material.expiries)
            peers = Peers(addresses, None, link_settings(config), link_messages,
                          self_id=config.node_id, tracing=tracing)
            async with peers, watching_certificates(
                tls_files, reload or asyncio.Event(), peers.renew_channels,
            ), peer_liveness(peers, metrics, config.replica_timeout_seconds,
                             clock) as liveness:
                access: LeaderAccess | None = None

                def on_leader_change(change: LeaderChange) -> None:
                    metrics.observe_leader_change()
                    assert access is not None
                    access.learn(change.group, change.leader, change.term)

                raft = RaftDriver(
                    host, store,
                    RaftLinks(peers, on_unreachable=lambda peer: raft.report_unreachable(peer),
                              on_snapshot_sent=metrics.observe_snapshot_sent),
                    IntervalTicker(tick), on_leader_change=on_leader_change)
                local = LocalLeader(config.node_id, raft, metrics.observe_proposal,
                                    tracing=tracing)
                access = LeaderAccess(spec, LeaderPeers(peers, local), self_id=config.node_id,
                                      leader_timeout=config.leader_timeout_seconds, clock=clock)
                operator = RaftOperator(config.node_id, host, raft, access)
                metrics.watch_raft(lambda: len(host.groups()), operator.led, operator.quiesced,
                                   operator.apply_lag, operator.without_leader)
                async with raft:
                    await _serve(config, _Raft(raft, local, access, operator, store), metrics,
                                 liveness.status, tls_files, stop, tracing)
    finally:
        store.close()
    log.info("node stopped", extra={"node_id": config.node_id})


@dataclass(frozen=True)
class _Raft:
    """The running pieces of a leader-mode node the services are built on."""

    driver: RaftDriver
    local: LocalLeader
    access: LeaderAccess
    operator: RaftOperator
    store: LmdbRaftStore


async def _serve(config: NodeConfig, raft: _Raft, metrics: NodeMetrics,
                 seen: Callable[[], Mapping[str, NodeStatus]],
                 tls_files: CertificateFiles | None, stop: asyncio.Event,
                 tracing: Tracing | None) -> None:
    spec = config.cluster_spec
    limits = Limits(config.max_key_bytes, config.max_value_bytes, config.max_batch_items)
    access = access_control(config.security, metrics.observe_refusal)
    kv = KVService(None, limits, metrics, request_timeout=config.request_timeout_seconds,
                   admission=config.admission,
                   message_batch_bytes=config.message_batch_bytes,
                   message_batch_operations=config.message_batch_operations,
                   topology=leaders_topology(topology_response(spec, config.node_id, "node"),
                                             raft.access.book),
                   admit=access.admit_operation,
                   leader=LeaderKV(raft.access, spec, limits), tracing=tracing)
    replicas = ReplicaService(
        None, limits, metrics, partitions=spec.partitions, streams=stream_settings(config),
        leader=LeaderReplicaOps(raft.driver, raft.local, limits, partitions=spec.partitions,
                                max_timeout=config.request_timeout_seconds,
                                on_snapshot_received=metrics.observe_snapshot_received),
        tracing=tracing)
    store = raft.store

    def node_stats() -> admin_pb2.NodeStats:
        return admin_pb2.NodeStats(keys=store.count_keys(), db_bytes=store.size_bytes(),
                                   map_size_bytes=config.map_size,
                                   map_used_ratio=store.used_bytes() / config.map_size)

    admin = AdminService(config.node_id, "node", config.advertised_address, spec, seen, metrics,
                         node_stats=node_stats, raft=raft.operator,
                         snapshot=(store.copy_to, config.data_dir),
                         request_timeout=config.request_timeout_seconds)
    async with replicas:
        await serve_services(config, kv, replicas, admin, access, tls_files, stop,
                             raft_groups=len(raft.operator.groups()))
