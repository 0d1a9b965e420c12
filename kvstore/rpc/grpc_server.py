"""What every kvstore server process shares: the gRPC server with health and
reflection, the health-only listener (`--health-listen`), the metrics HTTP
endpoint, the stop signals and a graceful stop.
"""

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection as reflection_service
from prometheus_client import CollectorRegistry, start_http_server

from kvclient.tracing import Tracing
from kvstore.rpc.access import AccessControl
from kvstore.rpc.channels import open_server
from kvstore.security.rotation import CertificateFiles, CertificateWatcher
from kvstore.security.settings import Security
from kvstore.server.config import parse_address
from kvstore.server.tracing import TracingSettings, process_tracing

log = logging.getLogger(__name__)

HEALTH_MESSAGE_BYTES = 64 * 1024  # a health check and its answer are a few bytes


class StartupError(RuntimeError):
    """The process cannot start (e.g. its port is taken); the message says why."""


@contextlib.contextmanager
def metrics_endpoint(listen: str, port: int, registry: CollectorRegistry) -> Any:
    """Serve /metrics on the listen host and `port` (0: not at all)."""
    if not port:
        yield
        return
    host, _ = parse_address(listen, "listen")
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise StartupError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    try:
        yield
    finally:
        server.shutdown()


@contextlib.contextmanager
def traced_process(settings: TracingSettings, role: str,
                   process_id: str) -> Iterator[Tracing | None]:
    """The process's tracing (`kvstore.server.tracing`), None when off;
    StartupError when it is on and the tracing extra is not installed."""
    with contextlib.ExitStack() as stack:
        try:
            tracing = stack.enter_context(process_tracing(settings, role, process_id))
        except ImportError as exc:
            raise StartupError(str(exc)) from None
        yield tracing


@contextlib.asynccontextmanager
async def serving(
    listen: str, max_message_bytes: int, services: Sequence[str],
    register: Callable[[grpc.aio.Server], None], grace_seconds: float,
    on_stopping: Callable[[], None] = lambda: None, security: Security = Security(),
    access: AccessControl | None = None, reflection: bool = True,
    tls_files: CertificateFiles | None = None, health_listen: str | None = None,
) -> AsyncIterator[None]:
    """A started gRPC server with `register`'s services, health (SERVING for
    each of `services`) and (unless `reflection` is off) reflection, behind
    `security`'s TLS (served from `tls_files` when given, to share them
    with a `CertificateWatcher`) and `access` (default:
    `access_control(security)`); with `health_listen`, a second server
    there answering the same health and nothing else (`open_health_server`).
    Stopped gracefully on exit: health NOT_SERVING, `on_stopping()`
    (which tells long-lived streams, client
    sessions and peer streams, to wind up once they answered what they read:
    they would otherwise hold the stop for all its grace), no new calls,
    in-flight calls get `grace_seconds` to finish."""
    try:
        if access is None:
            access = access_control(security)
        if tls_files is None and security.tls is not None:
            tls_files = security.tls.files()
        server, port = open_server(listen, max_message_bytes, tls=tls_files,
                                   interceptors=[access])
    except (RuntimeError, OSError, ValueError) as exc:  # ValueError: e.g. the secret file
        raise StartupError(f"cannot listen on {listen}: {exc}") from exc
    if port == 0:
        raise StartupError(f"cannot listen on {listen}: the address is taken or invalid")
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    if reflection:
        reflection_service.enable_server_reflection(
            (*services, health_name, reflection_service.SERVICE_NAME), server)
    probes = None if health_listen is None else open_health_server(health_listen, health)
    await server.start()
    try:
        if probes is not None:
            await probes.start()
        for service in ("", *services):
            await health.set(service, health_pb2.HealthCheckResponse.SERVING)
        yield
    finally:
        log.info("stopping", extra={"grace_seconds": grace_seconds})
        await health.enter_graceful_shutdown()
        on_stopping()
        await server.stop(grace_seconds)
        if probes is not None:  # last: probes see NOT_SERVING while the server winds up
            await probes.stop(None)


def open_health_server(listen: str, health: HealthServicer) -> grpc.aio.Server:
    """A plaintext server of `health` alone, not yet started: every other
    method gets UNIMPLEMENTED there. Kubernetes' gRPC probes (and other
    health checkers) present no certificate and speak no TLS, so they cannot
    ask a TLS port that requires client certificates; this answers them
    what the main server's health service says, which is no secret.
    Plaintext beyond loopback is allowed here: nothing else is served."""
    try:
        server, port = open_server(listen, HEALTH_MESSAGE_BYTES)
    except (RuntimeError, OSError) as exc:
        raise StartupError(f"cannot listen on {listen} (--health-listen): {exc}") from exc
    if port == 0:
        raise StartupError(f"cannot listen on {listen} (--health-listen): the address is "
                           "taken or invalid")
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    return server


@contextlib.asynccontextmanager
async def watching_certificates(files: CertificateFiles | None, reload: asyncio.Event,
                                on_reloaded: Callable[[], None]) -> AsyncIterator[None]:
    """With TLS: a `CertificateWatcher` of `files` (every 2 s, and on SIGHUP)."""
    if files is None:
        yield
        return
    async with CertificateWatcher(files, reload, on_reloaded):
        yield


def load_tls_files(security: Security) -> CertificateFiles | None:
    """The TLS files `security` names, loaded now; StartupError if they cannot be."""
    if security.tls is None:
        return None
    try:
        return security.tls.files()
    except ValueError as exc:
        raise StartupError(str(exc)) from exc


def access_control(security: Security,
                   on_refused: Callable[[str], None] = lambda reason: None) -> AccessControl:
    """The interceptor `security` describes; `on_refused(reason)` counts refusals.
    StartupError when a file it names cannot be read now."""
    try:
        return AccessControl(security.policy(), certificates=security.tls is not None,
                             on_refused=on_refused, limiter=security.auth.rate_limiter())
    except (OSError, ValueError) as exc:
        raise StartupError(f"cannot load the access settings: {exc}") from exc


def run_until_signalled(serve: Callable[[asyncio.Event, asyncio.Event], Any]) -> None:
    """Run `serve(stop, reload)` on uvloop; SIGTERM and SIGINT set `stop`,
    SIGHUP sets `reload` (re-read the TLS files)."""
    import uvloop

    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        try:
            await serve(stop, reload)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    try:
        uvloop.run(main())
    except* StartupError as group:  # raised inside task groups, so it may come wrapped
        for exc in _leaves(group):
            print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
