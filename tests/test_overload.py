"""Admission control on real nodes: many requests in flight against a small
bound are refused at once with RESOURCE_EXHAUSTED OVERLOADED and a retry
delay, nothing else; the client retries them until they get in, each
applied once; a bound in bytes lets a value larger than itself through
alone; and the metrics count the refusals."""

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

import kvclient
from kvclient.pb import kv_pb2
from kvstore.ops.processes import NodeProcess
from tests.clusters import metric
from tests.test_session import by_id, exchange

StartNode = Callable[..., NodeProcess]

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

Op = kv_pb2.SessionOperation


def _bounded_node(start: StartNode, tmp_path: Path, settings: str) -> NodeProcess:
    config = tmp_path / "node.toml"
    config.write_text("[node]\n" + settings)
    return start(extra=["--config", str(config)])


def _refused(node: NodeProcess, bound: str) -> float:
    return metric(node, f'kvstore_requests_refused_total{{bound="{bound}"}}') or 0.0


async def test_past_its_bound_a_stream_is_refused_overloaded_with_a_retry_delay_and_nothing_else(
        start: StartNode, tmp_path: Path) -> None:
    node = _bounded_node(start, tmp_path, "session_max_in_flight = 4\n")
    puts = [Op(id=i, put=kv_pb2.PutRequest(key=b"k%d" % i, value=b"v", request_id=b"R%d" % i))
            for i in range(1, 51)]
    responses, call = await exchange(node.address, [kv_pb2.SessionRequest(operations=puts)], 50)
    call.cancel()
    answered = by_id(responses)
    refused = [r for r in answered.values() if r.WhichOneof("outcome") == "error"]
    applied = [r for r in answered.values() if r.WhichOneof("outcome") == "put"]
    assert len(applied) >= 4 and len(refused) >= 20  # most could not get in
    assert len(applied) + len(refused) == 50
    for result in refused:
        assert result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        unpacked = {detail.type_url.rsplit("/", 1)[-1]: detail.Unpack(info) or detail.Unpack(retry)
                    for detail in result.error.details}
        assert unpacked == {"google.rpc.ErrorInfo": True, "google.rpc.RetryInfo": True}
        assert info.reason == "OVERLOADED" and info.metadata["outcome"] == "not_applied"
        assert info.metadata["bound"] == "session_max_in_flight"
        assert retry.retry_delay.ToTimedelta().total_seconds() == 0.05
        assert "session_max_in_flight=4" in result.error.message
    assert _refused(node, "session_max_in_flight") == len(refused)
    assert metric(node, 'kvstore_requests_total{code="RESOURCE_EXHAUSTED",method="Put"}') == len(
        refused)
    # A refused write applied nothing: only the admitted ones are there.
    with kvclient.Client([node.address]) as client:
        found = {r.id for r in applied}
        for op in puts:
            assert client.get(op.put.key).found == (op.id in found)


async def test_many_in_flight_against_a_small_bound_all_get_in_through_the_clients_retries(
        start: StartNode, tmp_path: Path) -> None:
    node = _bounded_node(start, tmp_path, "max_requests_in_flight = 8\n")
    items = {b"key-%03d" % i: b"value-%03d" % i for i in range(300)}
    async with kvclient.AsyncClient([node.address], timeout=60) as client:
        await asyncio.gather(*(client.put(key, value) for key, value in items.items()))
        results = await asyncio.gather(*(client.get(key) for key in items))
    assert [result.siblings for result in results] == [[value] for value in items.values()]
    refusals = _refused(node, "max_requests_in_flight")
    assert refusals > 0  # 300 at once against room for 8: most were refused first
    assert metric(node, 'kvstore_requests_total{code="OK",method="Put"}') == len(items)
    assert (metric(node, 'kvstore_requests_total{code="RESOURCE_EXHAUSTED",method="Put"}') or 0) \
        + (metric(node, 'kvstore_requests_total{code="RESOURCE_EXHAUSTED",method="Get"}') or 0) \
        == refusals
    assert metric(node, "kvstore_requests_in_flight") == 0  # every admission let go
    assert metric(node, "kvstore_request_bytes_in_flight") == 0


async def test_a_bound_in_bytes_refuses_beyond_it_but_lets_a_larger_value_through_alone(
        start: StartNode, tmp_path: Path) -> None:
    node = _bounded_node(start, tmp_path, 'max_request_bytes_in_flight = "1MiB"\n')
    values = {b"v-%02d" % i: os.urandom(300_000) for i in range(16)}
    largest = os.urandom(1024 * 1024)  # more than the bound: alone, it still goes through
    async with kvclient.AsyncClient([node.address], timeout=60) as client:
        await client.put(b"largest", largest)
        await asyncio.gather(*(client.put(key, value) for key, value in values.items()))
        assert (await client.get(b"largest")).value == largest
        assert [(await client.get(key)).value for key in values] == list(values.values())
    assert _refused(node, "max_request_bytes_in_flight") > 0
