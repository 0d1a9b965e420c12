"""A coordinator process (`kvstore coordinator`): holds no data; routes each
request to the key's replicas, runs the quorum, and caches reads.

Its consistency promise (README, "Coordinators and the cache"): a read
through a coordinator sees every write acknowledged through the same
coordinator (read-your-writes); a cached answer is never older than
cache_ttl_ms; a strong read (r=all) never comes from the cache.

In leader mode it forwards each request to its partition's leader (or, for
a stale read, to a replica) through `LeaderAccess`, and only stale reads
may come from its cache (`kvstore.rpc.leader_kv`).
"""

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping

import grpc

from kvclient.pb import admin_pb2
from kvclient.tracing import Tracing

from kvstore.clock import SYSTEM_CLOCK
from kvstore.health.failure_detector import NodeStatus
from kvstore.leader.access import LeaderAccess
from kvstore.server.cache import LruCache
from kvstore.server.config import CoordinatorConfig
from kvstore.leaderless.coordinator import Coordinator
from kvstore.rpc.access import AccessControl
from kvstore.security.rotation import CertificateFiles
from kvstore.rpc.leader_kv import LeaderKV
from kvstore.rpc.leader_peers import LeaderPeers
from kvstore.rpc.grpc_server import (access_control, load_tls_files, metrics_endpoint,
                                     run_until_signalled, serving, traced_process,
                                     watching_certificates)
from kvstore.health.liveness import peer_liveness
from kvstore.server.metrics import CoordinatorMetrics
from kvstore.server.node import ADMIN, KV
from kvstore.rpc.peers import LinkSettings, Peers
from kvstore.rpc.admin_service import AdminService
from kvstore.rpc.servicers import KVService, register
from kvstore.rpc.topology import leaders_topology, topology_response
from kvstore.rpc.validation import Limits

log = logging.getLogger(__name__)


async def serve_coordinator(config: CoordinatorConfig, stop: asyncio.Event,
                            reload: asyncio.Event | None = None) -> None:
    with traced_process(config.tracing, "coordinator", config.coordinator_id) as tracing:
        await _serve_traced(config, stop, reload, tracing)


async def _serve_traced(config: CoordinatorConfig, stop: asyncio.Event,
                        reload: asyncio.Event | None, tracing: Tracing | None) -> None:
    tls_files = load_tls_files(config.security)
    spec = config.cluster
    cache = LruCache(config.cache_bytes, config.cache_ttl_ms / 1000, time.monotonic)
    metrics = CoordinatorMetrics(cache)
    limits = Limits(config.max_key_bytes, config.max_value_bytes, config.max_batch_items)
    links = LinkSettings(call_timeout=config.replica_timeout_seconds,
                         max_batch=config.message_batch_operations,
                         max_batch_bytes=config.message_batch_bytes,
                         max_message_bytes=config.max_message_bytes,
                         credentials=config.security.peer_credentials())
    addresses = {m.node_id: m.address for m in spec.members}
    link_messages = functools.partial(metrics.observe_stream_message, "PeerLink")
    with metrics_endpoint(config.listen, config.metrics_port, metrics.registry):
        if tls_files is not None:
            metrics.watch_certificates(lambda: tls_files.material.expiries)
        async with Peers(addresses, None, links, link_messages,
                         tracing=tracing) as peers, watching_certificates(
            tls_files, reload or asyncio.Event(), peers.renew_channels,
        ), peer_liveness(
            peers, metrics, config.replica_timeout_seconds
        ) as liveness:
            access = access_control(config.security, metrics.observe_refusal)
            service = functools.partial(
                KVService, limits=limits, metrics=metrics,
                request_timeout=config.request_timeout_seconds, admission=config.admission,
                message_batch_bytes=config.message_batch_bytes,
                message_batch_operations=config.message_batch_operations,
                admit=access.admit_operation, tracing=tracing)
            topology = topology_response(spec, config.coordinator_id, "coordinator")
            if spec.mode == "leader":
                leaders = LeaderAccess(spec, LeaderPeers(peers, None), self_id=None,
                                       leader_timeout=config.leader_timeout_seconds,
                                       clock=SYSTEM_CLOCK)
                kv = service(None, topology=leaders_topology(topology, leaders.book),
                             leader=LeaderKV(leaders, spec, limits, cache=cache,
                                             clock=time.monotonic))
                await _serve(config, kv, access, tls_files, liveness.status, metrics, cache, stop)
            else:
                async with Coordinator(spec, peers, on_repair=metrics.observe_read_repairs,
                                       is_up=liveness.is_up) as coordinator:
                    kv = service(coordinator, cache=cache, topology=topology)
                    await _serve(config, kv, access, tls_files, liveness.status, metrics, cache,
                                 stop)
    log.info("coordinator stopped", extra={"coordinator_id": config.coordinator_id})


async def _serve(config: CoordinatorConfig, kv: KVService, access: AccessControl,
                 tls_files: CertificateFiles | None, seen: Callable[[], Mapping[str, NodeStatus]],
                 metrics: CoordinatorMetrics, cache: LruCache, stop: asyncio.Event) -> None:
    spec = config.cluster

    def coordinator_stats() -> admin_pb2.CoordinatorStats:
        return admin_pb2.CoordinatorStats(
            cache_entries=cache.entries, cache_bytes=cache.bytes,
            cache_hits=cache.hits, cache_misses=cache.misses)

    admin = AdminService(config.coordinator_id, "coordinator", config.advertised_address, spec,
                         seen, metrics, coordinator_stats=coordinator_stats)

    def add_services(server: grpc.aio.Server) -> None:
        register(server, kv, KV)
        register(server, admin, ADMIN)

    async with serving(config.listen, config.max_message_bytes,
                       (KV.full_name, ADMIN.full_name), add_services,
                       config.shutdown_grace_seconds, on_stopping=kv.stop_sessions,
                       security=config.security, access=access, tls_files=tls_files,
                       reflection=config.reflection, health_listen=config.health_listen):
        log.info("coordinator serving", extra={
            "coordinator_id": config.coordinator_id, "listen": config.listen,
            "metrics_port": config.metrics_port, "health_listen": config.health_listen,
            "members": len(spec.members),
            "mode": spec.mode, "cache_bytes": config.cache_bytes,
            "cache_ttl_ms": config.cache_ttl_ms, "tls": config.security.tls is not None,
        })
        await stop.wait()


def run_coordinator(config: CoordinatorConfig) -> None:
    run_until_signalled(lambda stop, reload: serve_coordinator(config, stop, reload))
