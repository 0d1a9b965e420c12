"""Shared fixtures: real `kvstore node` processes on loopback."""

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from kvclient.pb import kv_pb2_grpc
from kvstore.ops.processes import NodeProcess, start_node
from kvstore.rpc.channels import open_channel

StartNode = Callable[..., NodeProcess]


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
