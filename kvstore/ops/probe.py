"""Polling a process's standard gRPC health service until it serves."""

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvclient.security import PLAINTEXT, Credentials
from kvstore.rpc.channels import open_channel


def health_status(address: str, timeout: float, credentials: Credentials = PLAINTEXT) -> str:
    """The grpc.health.v1 status name of the process at `address`, or "unreachable"."""
    with open_channel(address, credentials=credentials) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return "unreachable"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def is_serving(address: str, timeout: float = 1.0, credentials: Credentials = PLAINTEXT) -> bool:
    return health_status(address, timeout, credentials) == "SERVING"


def wait_serving(address: str, deadline_seconds: float,
                 alive: Callable[[], bool] = lambda: True,
                 credentials: Credentials = PLAINTEXT) -> None:
    """Return once `address` reports SERVING; TimeoutError after the deadline,
    RuntimeError as soon as `alive()` says the process died."""
    deadline = time.monotonic() + deadline_seconds
    delay = 0.01
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the process serving {address} exited before it was healthy")
        if is_serving(address, min(1.0, max(0.05, deadline - time.monotonic())), credentials):
            return
        time.sleep(delay)  # polling back-off between checks, not synchronisation
        delay = min(delay * 2, 0.2)
    raise TimeoutError(f"{address} was not healthy within {deadline_seconds:.0f}s")
