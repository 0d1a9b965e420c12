"""A storage node process: open the store, serve gRPC and metrics, and shut
down gracefully on SIGTERM/SIGINT.

Shutdown order matters for durability: health goes NOT_SERVING, the gRPC server
stops accepting and lets in-flight calls finish (their writes reach the group
committer), the store drains and commits every queued write, and only then is
LMDB closed.
"""

import asyncio
import logging
import signal
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from kvclient.pb import kv_pb2, replica_pb2
from kvstore.config import NodeConfig, parse_address
from kvstore.hlc import HybridLogicalClock
from kvstore.metrics import NodeMetrics
from kvstore.replica import LocalReplica
from kvstore.servicers import KVService, ReplicaService, register
from kvstore.storage.lmdb_engine import LmdbEngine
from kvstore.storage.store import Store
from kvstore.validation import Limits

log = logging.getLogger(__name__)

KV_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name
REPLICA_SERVICE = replica_pb2.DESCRIPTOR.services_by_name["Replica"].full_name


class StartupError(RuntimeError):
    """The node cannot start (e.g. its port is taken); the message says why."""


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def grpc_server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # gRPC sets SO_REUSEPORT by default, which would let two nodes share a
        # port silently; a taken port must be an error instead.
        ("grpc.so_reuseport", 0),
    ]


async def serve_node(config: NodeConfig, stop: asyncio.Event) -> None:
    """Run the node until `stop` is set, then shut down gracefully."""
    engine = LmdbEngine(
        config.data_dir,
        map_size=config.map_size,
        sync=config.durability == "sync",
        request_id_ttl_ms=int(config.request_id_ttl_seconds * 1000),
    )
    try:
        metrics = NodeMetrics(engine.size_bytes, engine.count_keys)
        metrics_server = _start_metrics(config, metrics)
        try:
            async with Store(
                engine, max_batch=config.max_commit_batch,
                commit_delay=config.commit_delay_ms / 1000, observer=metrics,
            ) as store:
                await _serve(config, store, metrics, stop)
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
    finally:
        engine.close()
    log.info("node stopped", extra={"node_id": config.node_id})


def _start_metrics(config: NodeConfig, metrics: NodeMetrics):  # type: ignore[no-untyped-def]
    if not config.metrics_port:
        return None
    host, _ = parse_address(config.listen, "listen")
    try:
        server, _thread = start_http_server(config.metrics_port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {host}:{config.metrics_port}: {exc}") from exc
    return server


async def _serve(
    config: NodeConfig, store: Store, metrics: NodeMetrics, stop: asyncio.Event
) -> None:
    limits = Limits(config.max_key_bytes, config.max_value_bytes, config.max_batch_items)
    replica = LocalReplica(
        config.node_id, store, HybridLogicalClock(_wall_clock_ms), config.partitions
    )
    server = grpc.aio.server(options=grpc_server_options(config.max_message_bytes))
    register(server, KVService(replica, limits, metrics), kv_pb2.DESCRIPTOR.services_by_name["KV"])
    register(server, ReplicaService(replica, limits, metrics),
             replica_pb2.DESCRIPTOR.services_by_name["Replica"])
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (KV_SERVICE, REPLICA_SERVICE, reflection.SERVICE_NAME,
         health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
        server,
    )
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {config.listen}: {exc}") from exc
    if port == 0:
        raise StartupError(f"cannot listen on {config.listen}: the address is taken or invalid")
    await server.start()
    for service in ("", KV_SERVICE, REPLICA_SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("node serving", extra={
        "node_id": config.node_id, "listen": config.listen, "metrics_port": config.metrics_port,
        "data_dir": str(config.data_dir), "durability": config.durability,
    })
    await stop.wait()
    log.info("node stopping", extra={"grace_seconds": config.shutdown_grace_seconds})
    await health.enter_graceful_shutdown()
    await server.stop(config.shutdown_grace_seconds)


def install_stop_signals(stop: asyncio.Event) -> Callable[[], None]:
    """SIGTERM and SIGINT set `stop`; returns a function removing the handlers."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def remove() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    return remove


def run_node(config: NodeConfig) -> None:
    """Entry point of `kvstore node`: serve on uvloop until a stop signal."""
    import uvloop

    async def main() -> None:
        stop = asyncio.Event()
        remove = install_stop_signals(stop)
        try:
            await serve_node(config, stop)
        finally:
            remove()

    uvloop.run(main())
