"""A coordinator process (`kvstore coordinator`): holds no data; routes each
request to the key's replicas, runs the quorum, and caches reads.

Its consistency promise (README, "Coordinators and the cache"): a read
through a coordinator sees every write acknowledged through the same
coordinator (read-your-writes); a cached answer is never older than
cache_ttl_ms; a strong read (r=all) never comes from the cache.
"""

import asyncio
import functools
import logging
import time

import grpc

from kvclient.pb import admin_pb2

from kvstore.server.cache import LruCache
from kvstore.server.config import CoordinatorConfig
from kvstore.leaderless.coordinator import Coordinator
from kvstore.rpc.grpc_server import (access_control, load_tls_files, metrics_endpoint,
                                     run_until_signalled, serving, warn_if_unguarded,
                                     watching_certificates)
from kvstore.health.liveness import peer_liveness
from kvstore.server.metrics import CoordinatorMetrics
from kvstore.server.node import ADMIN, KV
from kvstore.rpc.peers import LinkSettings, Peers
from kvstore.rpc.admin_service import AdminService
from kvstore.rpc.servicers import KVService, register
from kvstore.rpc.topology import topology_response
from kvstore.rpc.validation import Limits

log = logging.getLogger(__name__)


async def serve_coordinator(config: CoordinatorConfig, stop: asyncio.Event,
                            reload: asyncio.Event | None = None) -> None:
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
        async with Peers(addresses, None, links, link_messages) as peers, watching_certificates(
            tls_files, reload or asyncio.Event(), peers.renew_channels,
        ), peer_liveness(
            peers, metrics, config.replica_timeout_seconds
        ) as liveness, Coordinator(
            spec, peers, on_repair=metrics.observe_read_repairs, is_up=liveness.is_up,
        ) as coordinator:
            access = access_control(config.security, metrics.observe_refusal)
            kv = KVService(coordinator, limits, metrics,
                           request_timeout=config.request_timeout_seconds, cache=cache,
                           admission=config.admission,
                           message_batch_bytes=config.message_batch_bytes,
                           message_batch_operations=config.message_batch_operations,
                           topology=topology_response(spec, config.coordinator_id,
                                                      "coordinator"),
                           admit=access.admit_operation)

            def coordinator_stats() -> admin_pb2.CoordinatorStats:
                return admin_pb2.CoordinatorStats(
                    cache_entries=cache.entries, cache_bytes=cache.bytes,
                    cache_hits=cache.hits, cache_misses=cache.misses)

            admin = AdminService(config.coordinator_id, "coordinator",
                                 config.advertised_address, spec, liveness.status, metrics,
                                 coordinator_stats=coordinator_stats)

            def add_services(server: grpc.aio.Server) -> None:
                register(server, kv, KV)
                register(server, admin, ADMIN)

            async with serving(config.listen, config.max_message_bytes,
                               (KV.full_name, ADMIN.full_name), add_services,
                               config.shutdown_grace_seconds, on_stopping=kv.stop_sessions,
                               security=config.security, access=access, tls_files=tls_files,
                               reflection=config.reflection):
                warn_if_unguarded(config.security)
                log.info("coordinator serving", extra={
                    "coordinator_id": config.coordinator_id, "listen": config.listen,
                    "metrics_port": config.metrics_port, "members": len(spec.members),
                    "cache_bytes": config.cache_bytes, "cache_ttl_ms": config.cache_ttl_ms,
                    "tls": config.security.tls is not None,
                })
                await stop.wait()
    log.info("coordinator stopped", extra={"coordinator_id": config.coordinator_id})


def run_coordinator(config: CoordinatorConfig) -> None:
    run_until_signalled(lambda stop, reload: serve_coordinator(config, stop, reload))
