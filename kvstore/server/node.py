"""A storage node process: its LMDB store, its replica of the cluster's
keys, and a coordinator for the requests it receives.

Shutdown order matters for durability: the gRPC server stops accepting,
has the peers' replica streams answer what they sent and end, and lets
in-flight calls finish (their writes reach the group committer); the replica
service waits for the writes its streams started, the coordinator finishes
its background replication and repair, the peer links close, the store
commits every queued write, and only then is LMDB closed.
"""

import asyncio
import functools
import logging

import grpc

from kvclient.pb import admin_pb2, kv_pb2, replica_pb2
from kvclient.tracing import Tracing
from kvstore.clock import SYSTEM_CLOCK
from kvstore.leaderless.anti_entropy import AntiEntropy, ReplicaTrees
from kvstore.server.config import NodeConfig
from kvstore.leaderless.coordinator import Coordinator
from kvstore.rpc.grpc_server import (access_control, load_tls_files, metrics_endpoint,
                                     run_until_signalled, serving, traced_process,
                                     watching_certificates)
from kvstore.leaderless.handoff import HintReplayer
from kvstore.leaderless.hints import HintPolicy
from kvstore.causality.hlc import HybridLogicalClock
from kvstore.health.liveness import peer_liveness
from kvstore.server.metrics import NodeMetrics
from kvstore.rpc.peers import LinkSettings, Peers
from kvstore.leaderless.replica import LocalReplica
from kvstore.rpc.access import AccessControl
from kvstore.rpc.admin_service import AdminService
from kvstore.security.rotation import CertificateFiles
from kvstore.rpc.replica_stream import StreamSettings
from kvstore.rpc.servicers import KVService, ReplicaService, register
from kvstore.rpc.topology import topology_response
from kvstore.storage.lmdb_engine import LmdbEngine
from kvstore.storage.store import Store
from kvstore.leaderless.tombstones import TombstoneCollector
from kvstore.rpc.validation import Limits

log = logging.getLogger(__name__)

KV = kv_pb2.DESCRIPTOR.services_by_name["KV"]
REPLICA = replica_pb2.DESCRIPTOR.services_by_name["Replica"]
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["Admin"]


async def serve_node(config: NodeConfig, stop: asyncio.Event,
                     reload: asyncio.Event | None = None) -> None:
    """Run the node until `stop` is set, then shut down gracefully; `reload`
    (SIGHUP) re-reads the TLS files. Its spans, when it traces, are
    flushed once it has stopped."""
    with traced_process(config.tracing, "node", config.node_id) as tracing:
        if config.cluster_spec.mode == "leader":
            from kvstore.server.leader_node import serve_leader_node  # it imports this module

            await serve_leader_node(config, stop, reload, tracing)
        else:
            await _serve_leaderless(config, stop, reload, tracing)


async def _serve_leaderless(config: NodeConfig, stop: asyncio.Event,
                            reload: asyncio.Event | None, tracing: Tracing | None) -> None:
    spec = config.cluster_spec
    tls_files = load_tls_files(config.security)
    clock = SYSTEM_CLOCK
    engine = LmdbEngine(
        config.data_dir, map_size=config.map_size, sync=config.durability == "sync",
        request_id_ttl_ms=int(config.request_id_ttl_seconds * 1000),
        clock_ms=clock.wall_clock_ms,
    )
    try:
        metrics = NodeMetrics(engine.size_bytes, engine.count_keys, engine.used_bytes,
                              config.map_size)
        limits = Limits(config.max_key_bytes, config.max_value_bytes, config.max_batch_items)
        links = link_settings(config)
        with metrics_endpoint(config.listen, config.metrics_port, metrics.registry):
            # Trees only where there are other replicas to compare with.
            trees = ReplicaTrees()
            replicated = spec.replicas > 1
            if replicated:
                trees.rebuild(engine, range(spec.partitions))
            async with Store(engine, max_batch=config.max_commit_batch,
                             commit_delay=config.commit_delay_ms / 1000, observer=metrics,
                             on_applied=trees.track if replicated else None,
                             tracing=tracing) as store:
                replica = LocalReplica(
                    config.node_id, store, HybridLogicalClock(clock.wall_clock_ms), spec.partitions,
                    last_write_wins=spec.last_write_wins,
                    on_duplicate=metrics.observe_duplicate_write,
                    on_hint_stored=metrics.observe_hint_written,
                    on_purged=metrics.observe_tombstone_purged,
                    hint_policy=HintPolicy(config.max_hints_per_target,
                                           config.max_hint_bytes_per_target,
                                           config.hint_replay_rate_per_second),
                )
                replica.load_hints()
                addresses = {m.node_id: m.address for m in spec.members}
                link_messages = functools.partial(metrics.observe_stream_message, "PeerLink")
                metrics.watch_anti_entropy()
                metrics.watch_hints(sorted(set(addresses) - {config.node_id}),
                                    replica.hint_book.pending)
                if tls_files is not None:
                    metrics.watch_certificates(lambda: tls_files.material.expiries)
                peers = Peers(addresses, replica, links, link_messages, tracing=tracing)
                async with peers, watching_certificates(
                    tls_files, reload or asyncio.Event(), peers.renew_channels,
                ), peer_liveness(
                    peers, metrics, config.replica_timeout_seconds, clock
                ) as liveness, HintReplayer(
                    replica, peers, liveness.is_up, clock=clock,
                    rate_per_second=config.hint_replay_rate_per_second,
                    batch_bytes=config.message_batch_bytes,
                    on_replayed=metrics.observe_hints_replayed,
                ), AntiEntropy(
                    config.node_id, spec, replica, trees, peers, liveness.is_up, clock=clock,
                    interval=config.anti_entropy_interval_seconds,
                    keys_per_second=config.anti_entropy_keys_per_second,
                    on_round=metrics.observe_round,
                    on_exchange=metrics.observe_exchange,
                    on_repaired=metrics.observe_keys_repaired,
                    on_bytes_sent=metrics.observe_anti_entropy_bytes,
                    collector=TombstoneCollector(
                        config.node_id, spec, replica, trees.trees, trees.tombstoned, peers,
                        liveness.is_up, clock=clock,
                        grace_seconds=config.tombstone_grace_seconds),
                ) as anti_entropy, Coordinator(
                    spec, peers, self_id=config.node_id, on_repair=metrics.observe_read_repairs,
                    is_up=liveness.is_up,
                ) as coordinator:
                    access = access_control(config.security, metrics.observe_refusal)
                    kv = KVService(coordinator, limits, metrics,
                                   request_timeout=config.request_timeout_seconds,
                                   admission=config.admission,
                                   message_batch_bytes=config.message_batch_bytes,
                                   message_batch_operations=config.message_batch_operations,
                                   topology=topology_response(spec, config.node_id, "node"),
                                   admit=access.admit_operation, tracing=tracing)
                    replicas = ReplicaService(
                        replica, limits, metrics, trees.trees,
                        repair=anti_entropy.repair_partition if replicated else None,
                        partitions=spec.partitions, streams=stream_settings(config),
                        tracing=tracing)

                    def node_stats() -> admin_pb2.NodeStats:
                        pending = replica.hint_book.all_pending().values()
                        return admin_pb2.NodeStats(
                            keys=engine.count_keys(), db_bytes=engine.size_bytes(),
                            map_size_bytes=config.map_size,
                            map_used_ratio=engine.used_bytes() / config.map_size,
                            hints_pending=sum(p.count for p in pending),
                            hints_pending_bytes=sum(p.bytes for p in pending))

                    admin = AdminService(config.node_id, "node", config.advertised_address, spec,
                                         liveness.status, metrics, node_stats=node_stats,
                                         snapshot=(engine.copy_to, config.data_dir))

                    async with replicas:
                        await serve_services(config, kv, replicas, admin, access, tls_files,
                                             stop)
    finally:
        engine.close()
    log.info("node stopped", extra={"node_id": config.node_id})


def link_settings(config: NodeConfig) -> LinkSettings:
    """The peer links of a node, either mode's."""
    return LinkSettings(call_timeout=config.replica_timeout_seconds,
                        max_batch=config.message_batch_operations,
                        max_batch_bytes=config.message_batch_bytes,
                        max_message_bytes=config.max_message_bytes,
                        credentials=config.security.peer_credentials())


def stream_settings(config: NodeConfig) -> StreamSettings:
    """The replica side of the peer streams, either mode's."""
    return StreamSettings(max_batch=config.message_batch_operations,
                          max_batch_bytes=config.message_batch_bytes,
                          max_in_flight_bytes=config.replica_stream_max_bytes_in_flight)


async def serve_services(config: NodeConfig, kv: KVService, replicas: ReplicaService,
                         admin: AdminService, access: AccessControl,
                         tls_files: CertificateFiles | None, stop: asyncio.Event,
                         **described: object) -> None:
    """Serve a node's KV, Replica and Admin services until `stop` is set,
    then stop gracefully (the streams first: they would hold the stop for
    all its grace). `described`: more for the "node serving" log line."""
    spec = config.cluster_spec

    def add_services(server: grpc.aio.Server) -> None:
        register(server, kv, KV)
        register(server, replicas, REPLICA)
        register(server, admin, ADMIN)

    def stop_streams() -> None:
        kv.stop_sessions()
        replicas.end_streams()

    async with serving(
        config.listen, config.max_message_bytes,
        (KV.full_name, REPLICA.full_name, ADMIN.full_name), add_services,
        config.shutdown_grace_seconds, on_stopping=stop_streams,
        security=config.security, access=access, tls_files=tls_files,
        reflection=config.reflection, health_listen=config.health_listen,
    ):
        log.info("node serving", extra={
            "node_id": config.node_id, "listen": config.listen, "mode": spec.mode,
            "metrics_port": config.metrics_port, "health_listen": config.health_listen,
            "data_dir": str(config.data_dir),
            "durability": config.durability, "members": len(spec.members),
            "replicas": spec.replicas, "partitions": spec.partitions,
            "tls": config.security.tls is not None, **described,
        })
        await stop.wait()


def run_node(config: NodeConfig) -> None:
    """Entry point of `kvstore node`: serve on uvloop until a stop signal."""
    run_until_signalled(lambda stop, reload: serve_node(config, stop, reload))
