"""Every kind of bad input gets its status and a message naming the limit or
field, and never takes the node down."""

import re

import grpc
import pytest

from kvclient.pb import kv_pb2, kv_pb2_grpc
from kvstore.server.config import ConfigError, load_node_config
from kvstore.ops.processes import NodeProcess
from kvstore.rpc.channels import open_channel
from tests.conftest import StartNode, rpc_error

pytestmark = pytest.mark.timeout(60)

LIMITS = ["--max-key-bytes", "16", "--max-value-bytes", "64"]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def small(start: StartNode) -> NodeProcess:
    return start(extra=LIMITS)


@pytest.fixture
def kv(small: NodeProcess):  # type: ignore[no-untyped-def]
    with open_channel(small.address) as channel:
        yield kv_pb2_grpc.KVStub(channel)


def _expect(call, code: grpc.StatusCode, *fragments: str) -> None:  # type: ignore[no-untyped-def]
    error = rpc_error(call)
    assert error.code() == code, error.details()
    for fragment in fragments:
        assert fragment in error.details(), error.details()


@pytest.mark.parametrize(
    ("request_", "fragments"),
    [
        (kv_pb2.PutRequest(key=b"", value=b"v"), ["key is empty", "1..16 bytes"]),
        (kv_pb2.PutRequest(key=b"k" * 17, value=b"v"), ["17 bytes", "max_key_bytes=16"]),
        (kv_pb2.PutRequest(key=b"k", value=b"v" * 65), ["65 bytes", "max_value_bytes=64"]),
        (kv_pb2.PutRequest(key=b"k", value=b"v", context=b"\xff\xfe"), ["context"]),
        (kv_pb2.PutRequest(key=b"k", value=b"v", request_id=b"r" * 65), ["request_id"]),
        (kv_pb2.PutRequest(key=b"k", value=b"v", w=kv_pb2.Consistency(count=2)),
         ["w=2", "1..1"]),
        (kv_pb2.PutRequest(key=b"k", value=b"v", w=kv_pb2.Consistency(count=0)), ["w=0"]),
        (kv_pb2.PutRequest(key=b"k", value=b"v", w=kv_pb2.Consistency(level=42)),
         ["unknown consistency level", "one, quorum or all"]),
    ],
)
def test_bad_put_is_invalid_argument(kv, request_, fragments) -> None:  # type: ignore[no-untyped-def]
    _expect(lambda: kv.Put(request_, timeout=5), INVALID, *fragments)


def test_bad_get_and_delete_are_invalid_argument(kv) -> None:  # type: ignore[no-untyped-def]
    _expect(lambda: kv.Get(kv_pb2.GetRequest(key=b""), timeout=5), INVALID, "key is empty")
    _expect(lambda: kv.Get(kv_pb2.GetRequest(key=b"k", r=kv_pb2.Consistency(count=4)),
                           timeout=5), INVALID, "r=4")
    _expect(lambda: kv.Delete(kv_pb2.DeleteRequest(key=b"x" * 20), timeout=5), INVALID,
            "max_key_bytes=16")


def test_bad_batches_name_the_item(kv) -> None:  # type: ignore[no-untyped-def]
    _expect(lambda: kv.GetMany(kv_pb2.GetManyRequest(keys=[]), timeout=5), INVALID, "keys is empty")
    _expect(lambda: kv.GetMany(kv_pb2.GetManyRequest(keys=[b"a", b""]), timeout=5), INVALID,
            "keys[1]")
    puts = [kv_pb2.PutRequest(key=b"a", value=b"1"), kv_pb2.PutRequest(key=b"b", value=b"2" * 99)]
    _expect(lambda: kv.PutMany(kv_pb2.PutManyRequest(puts=puts), timeout=5), INVALID,
            "puts[1].value", "max_value_bytes=64")


def test_batch_item_count_is_limited(start: StartNode, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "node.toml"
    config.write_text("[node]\nmax_batch_items = 3\n")
    node = start(extra=["--config", str(config)])
    with open_channel(node.address) as channel:
        kv = kv_pb2_grpc.KVStub(channel)
        _expect(lambda: kv.GetMany(kv_pb2.GetManyRequest(keys=[b"a"] * 4), timeout=5),
                INVALID, "max_batch_items=3")


def test_malformed_bytes_are_invalid_argument(small: NodeProcess) -> None:
    with open_channel(small.address) as channel:
        raw = channel.unary_unary("/kvstore.v1.KV/Put")  # no serializers: raw bytes
        _expect(lambda: raw(b"\x0a\xff\xff\xff\xff\xff", timeout=5), INVALID,
                "not a valid kvstore.v1.PutRequest")


def test_message_over_the_grpc_limit_is_resource_exhausted(node: NodeProcess, stub) -> None:  # type: ignore[no-untyped-def]
    huge = kv_pb2.PutRequest(key=b"k", value=b"v" * (5 * 1024 * 1024))
    _expect(lambda: stub.Put(huge, timeout=10), grpc.StatusCode.RESOURCE_EXHAUSTED)


def test_node_still_serves_after_bad_input(kv) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        rpc_error(lambda: kv.Put(kv_pb2.PutRequest(key=b""), timeout=5))
    kv.Put(kv_pb2.PutRequest(key=b"ok", value=b"fine"), timeout=5)
    assert kv.Get(kv_pb2.GetRequest(key=b"ok"), timeout=5).siblings == [b"fine"]


@pytest.mark.process
def test_bad_configuration_is_refused_with_the_setting_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "kvstore", "node", "--id", "n1", "--listen", "127.0.0.1:1",
         "--data-dir", str(tmp_path), "--partitions", "3"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "partitions must be a power of two" in result.stderr


@pytest.mark.parametrize("setting, message", [
    ('max_hints_per_target = "many"', "max_hints_per_target must be an integer, got 'many'"),
    ("commit_delay_ms = true", "commit_delay_ms must be a number, got True"),
    ('map_size = "a lot"', "map_size must be a size like"),
    ("raft_snapshot_every = 0", "raft_snapshot_every must be at least 1, got 0"),
    ("raft_keep_entries = -1", "raft_keep_entries must be at least 0, got -1"),
])
def test_a_config_file_setting_of_the_wrong_type_is_named(tmp_path, setting: str,  # type: ignore[no-untyped-def]
                                                          message: str) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f"[node]\n{setting}\n")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_node_config(config, {"node_id": "n1"})


def test_a_config_file_size_may_be_written_with_its_unit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "node.toml"
    config.write_text('[node]\nmap_size = "256MiB"\nmax_hint_bytes_per_target = "1MiB"\n')
    loaded = load_node_config(config, {"node_id": "n1"})
    assert (loaded.map_size, loaded.max_hint_bytes_per_target) == (256 << 20, 1 << 20)


def test_a_taken_port_is_a_clear_startup_error(node: NodeProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "kvstore", "node", "--id", "n2", "--listen", node.address,
         "--data-dir", str(tmp_path / "n2"), "--metrics-port", "0"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1 and f"cannot listen on {node.address}" in result.stderr
