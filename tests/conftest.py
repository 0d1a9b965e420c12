"""Shared fixtures: real `kvstore node` processes on loopback; and the split
of the suite into fast tests and `process` tests.

A test that starts a process, opens a socket or runs a gRPC server is marked
`process` (registered in pyproject.toml): by hand (`pytestmark` or
`@pytest.mark.process`), or here for every test that uses the `start`
fixture (and so `node`, `stub` and those built on them) or `make_cluster`
(tests/clusters.py). `make test-fast`
runs the rest. Every test not marked is refused a process, a socket and a
gRPC server while it runs, so a new process test fails until it is marked
instead of slowing the fast set down. (gRPC channels are not refused:
creating one opens nothing, and only a server could answer it.)
"""

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

import tests.properties  # noqa: F401  (loads the quick profile under make test-fast)
from tests.clusters import make_cluster  # noqa: F401  (the fixture, for every test module)
from kvclient.pb import kv_pb2_grpc
from kvstore.ops.processes import NodeProcess, start_node
from kvstore.rpc.channels import open_channel

StartNode = Callable[..., NodeProcess]

PROCESS_FIXTURES = {"start", "make_cluster"}

# What a test not marked `process` may not call: (owner, attribute, what it does).
_REFUSED: list[tuple[Any, str, str]] = [
    (subprocess.Popen, "_execute_child", "started a process"),
    (os, "fork", "forked"),
    (os, "posix_spawn", "started a process"),
    (os, "posix_spawnp", "started a process"),
    (socket.socket, "bind", "bound a socket"),
    (socket.socket, "connect", "connected a socket"),
    (socket.socket, "connect_ex", "connected a socket"),
    (grpc, "server", "started a gRPC server"),
    (grpc.aio, "server", "started a gRPC server"),
]


_FAILED = pytest.StashKey[bool]()  # the test's setup or call already failed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.process)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _no_process_unless_marked(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("process") is not None:
        yield
        return
    refused: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refusal(*args: object, **kwargs: object) -> Any:
            refused.append(what)
            raise RuntimeError(f"this test {what}: mark it @pytest.mark.process")
        return refusal

    for owner, name, what in _REFUSED:
        monkeypatch.setattr(owner, name, refuse(what))
    yield
    # Also when the code under test swallowed the error; not twice.
    if refused and not request.node.stash.get(_FAILED, False):
        pytest.fail(f"this test {refused[0]} but is not marked process "
                    "(see tests/conftest.py)", pytrace=False)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartNode]:
    """Start nodes (each in its own data dir under tmp_path); all are stopped,
    by pid, when the test ends."""
    started: list[NodeProcess] = []

    def _start(node_id: str = "n1", *, data_dir: Path | None = None, port: int | None = None,
               extra: list[str] | None = None) -> NodeProcess:
        node = start_node(node_id, data_dir or tmp_path / node_id, port=port,
                          extra=["--log-level", "warning", *(extra or [])],
                          log_file=tmp_path / f"{node_id}.log")
        started.append(node)
        return node

    yield _start
    for node in started:
        node.kill()


@pytest.fixture
def node(start: StartNode) -> NodeProcess:
    return start()


@pytest.fixture
def stub(node: NodeProcess) -> Iterator[kv_pb2_grpc.KVStub]:
    """A raw stub, to send requests exactly as written (the client would
    refuse some of them itself)."""
    with open_channel(node.address) as channel:
        yield kv_pb2_grpc.KVStub(channel)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value  # type: ignore[return-value]
