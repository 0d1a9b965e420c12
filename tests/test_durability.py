"""What a node acknowledged, it keeps: across SIGKILL, retries, corruption of
its files and a full disk map."""

import asyncio
import functools
import os
import signal
import urllib.request
from collections.abc import Callable

import pytest

import kvclient
from kvclient.pb import kv_pb2
from kvstore.ops.processes import NodeProcess
from kvstore.rpc.channels import open_channel
from tests.conftest import StartNode

pytestmark = pytest.mark.timeout(120)


async def _write_until_stopped(
    node: NodeProcess, writers: int, stop_after: int, stop: Callable[[], None]
) -> dict[bytes, bytes]:
    """Writers put unique keys; after `stop_after` acknowledgements `stop` is
    called mid-load. Returns every acknowledged key and value."""
    acknowledged: dict[bytes, bytes] = {}
    enough = asyncio.Event()

    async with kvclient.AsyncClient([node.address], timeout=2, max_attempts=1) as client:
        async def writer(number: int) -> None:
            for sequence in range(1_000_000):
                key = b"w%d-%d" % (number, sequence)
                value = os.urandom(16).hex().encode()
                try:
                    await client.put(key, value)
                except kvclient.errors.KVError:
                    return
                acknowledged[key] = value
                if len(acknowledged) >= stop_after:
                    enough.set()

        async with asyncio.TaskGroup() as group:
            for number in range(writers):
                group.create_task(writer(number))
            async with asyncio.timeout(60):
                await enough.wait()
            stop()  # with writes in flight
    return acknowledged


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_acknowledged_writes_survive_the_node_stopping_under_load(
    start: StartNode, signal_name: str
) -> None:
    node = start()
    stop = functools.partial(node.process.send_signal, getattr(signal, signal_name))
    acknowledged = asyncio.run(_write_until_stopped(node, writers=32, stop_after=1500, stop=stop))
    exit_code = node.process.wait(timeout=30)
    if signal_name == "SIGTERM":
        assert exit_code == 0, "a graceful stop exits 0"
    restarted = start(data_dir=node.data_dir, port=int(node.address.rsplit(":", 1)[1]))
    keys = list(acknowledged)
    with kvclient.Client([restarted.address], timeout=30) as client:
        found = []
        for start_index in range(0, len(keys), 500):
            found += client.get_many(keys[start_index:start_index + 500])
    lost = [key for key, result in zip(keys, found) if result.value != acknowledged[key]]
    assert len(keys) >= 1500
    assert lost == []


def _metric(node: NodeProcess, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5).read()
    line = next(l for l in text.decode().splitlines() if l.startswith(name + " "))
    return float(line.split()[1])


def test_a_retried_write_is_applied_once_even_after_a_restart(start: StartNode) -> None:
    node = start()
    with open_channel(node.address) as channel:
        kv = kvclient.pb.kv_pb2_grpc.KVStub(channel)
        kv.Put(kv_pb2.PutRequest(key=b"k", value=b"v1", request_id=b"A" * 16), timeout=5)
        second = kv.Put(kv_pb2.PutRequest(key=b"k", value=b"v2", request_id=b"B" * 16), timeout=5)
        retry = kv.Put(kv_pb2.PutRequest(key=b"k", value=b"v1", request_id=b"A" * 16), timeout=5)
        # Not applied again: the answer is the key's current state, which
        # already holds the original write (and the later one).
        assert (retry.context, retry.timestamp) == (second.context, second.timestamp)
        assert kv.Get(kv_pb2.GetRequest(key=b"k"), timeout=5).siblings == [b"v2"]
        kv.Delete(kv_pb2.DeleteRequest(key=b"d", request_id=b"C" * 16), timeout=5)
        kv.Put(kv_pb2.PutRequest(key=b"d", value=b"back", request_id=b"D" * 16), timeout=5)
        kv.Delete(kv_pb2.DeleteRequest(key=b"d", request_id=b"C" * 16), timeout=5)
        assert kv.Get(kv_pb2.GetRequest(key=b"d"), timeout=5).siblings == [b"back"]
    assert _metric(node, "kvstore_duplicate_writes_total") == 2
    node.stop()

    again = start(data_dir=node.data_dir)
    with open_channel(again.address) as channel:
        kv = kvclient.pb.kv_pb2_grpc.KVStub(channel)
        kv.Put(kv_pb2.PutRequest(key=b"k", value=b"v1", request_id=b"A" * 16), timeout=5)
        assert kv.Get(kv_pb2.GetRequest(key=b"k"), timeout=5).siblings == [b"v2"]


def test_corrupted_bytes_on_disk_are_data_loss_never_data(start: StartNode) -> None:
    node = start()
    marker = b"CORRUPT-ME-" + b"x" * 64
    with kvclient.Client([node.address]) as client:
        client.put(b"victim", marker)
        client.put(b"bystander", b"intact")
    node.stop()
    data_file = node.data_dir / "data.mdb"
    content = bytearray(data_file.read_bytes())
    # Copy-on-write leaves stale copies of the page in free space: flip them all.
    offset = content.find(marker)
    assert offset >= 0, "the value should be stored verbatim in data.mdb"
    while offset >= 0:
        content[offset + 20] ^= 0x01
        offset = content.find(marker, offset + 1)
    data_file.write_bytes(bytes(content))

    again = start(data_dir=node.data_dir)
    with kvclient.Client([again.address]) as client:
        with pytest.raises(kvclient.errors.DataLoss) as caught:
            client.get(b"victim")
        assert "checksum" in caught.value.details
        assert client.get(b"bystander").value == b"intact"
        with pytest.raises(kvclient.errors.DataLoss):
            client.get_many([b"bystander", b"victim"])


def test_a_full_map_is_resource_exhausted_and_reads_still_work(start: StartNode) -> None:
    node = start(extra=["--map-size", "1MiB"])
    value = os.urandom(16 * 1024)
    written = []
    with kvclient.Client([node.address]) as client:
        with pytest.raises(kvclient.errors.ResourceExhausted) as caught:
            for index in range(1000):
                client.put(b"fill-%d" % index, value)
                written.append(b"fill-%d" % index)
        assert "map_size" in caught.value.details
        assert 10 < len(written) < 1000
        assert all(r.value == value for r in client.get_many(written))
        assert client.ping(b"still here") == b"still here"
