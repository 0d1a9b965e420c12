"""KV.Session on real nodes: many operations over one stream, each answered
by id as it completes; bad input, errors, deadlines and cancellation per
operation; the stream's end when the node stops, and when it dies (the
client fails its operations over)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
import grpc.aio
import pytest

import kvclient
from kvclient import errors
from kvclient.pb import kv_pb2, kv_pb2_grpc
from kvstore.ops.ports import free_port
from kvstore.ops.processes import NodeProcess
from kvstore.placement.membership import ClusterMember, ClusterSpec
from kvstore.rpc.channels import open_aio_channel, open_channel
from tests.clusters import metric, poll

StartNode = Callable[..., NodeProcess]

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

Op = kv_pb2.SessionOperation


async def exchange(address: str, messages: Sequence[kv_pb2.SessionRequest], answers: int,
                   ) -> tuple[list[kv_pb2.SessionResponse], grpc.aio.StreamStreamCall]:
    """Send `messages` on a fresh stream and read until `answers` results came."""
    channel = open_aio_channel(address)
    call = kv_pb2_grpc.KVStub(channel).Session()
    for message in messages:
        await call.write(message)
    responses: list[kv_pb2.SessionResponse] = []
    async with asyncio.timeout(30):
        while sum(len(r.results) for r in responses) < answers:
            responses.append(await call.read())
    return responses, call


def by_id(responses: Sequence[kv_pb2.SessionResponse]) -> dict[int, kv_pb2.SessionResult]:
    results = [result for response in responses for result in response.results]
    answered = {result.id: result for result in results}
    assert len(answered) == len(results), "an operation was answered twice"
    return answered


async def test_many_operations_on_one_stream_are_each_answered_by_id_as_they_complete(
        node: NodeProcess) -> None:
    # The put waits for its commit; the pings behind it in the same message
    # do not wait for it, and are answered together.
    put = Op(id=1, put=kv_pb2.PutRequest(key=b"k", value=b"v"))
    pings = [Op(id=i, ping=kv_pb2.PingRequest(payload=b"%d" % i)) for i in range(2, 202)]
    responses, call = await exchange(node.address, [kv_pb2.SessionRequest(
        operations=[put, *pings])], 201)
    answered = by_id(responses)
    assert set(answered) == set(range(1, 202))
    assert all(answered[i].ping.payload == b"%d" % i for i in range(2, 202))
    assert answered[1].WhichOneof("outcome") == "put" and answered[1].put.context
    assert responses[-1].results[-1].id == 1, "the put was not answered after the pings"
    assert len(responses) < 20, "answers that completed together were not put in one message"

    # Reads, deletes and batches go the same way, on the same stream.
    await call.write(kv_pb2.SessionRequest(operations=[
        Op(id=300, get=kv_pb2.GetRequest(key=b"k")),
        Op(id=301, get_many=kv_pb2.GetManyRequest(keys=[b"k", b"absent"])),
        Op(id=302, put_many=kv_pb2.PutManyRequest(puts=[kv_pb2.PutRequest(key=b"m", value=b"1")])),
    ]))
    later: list[kv_pb2.SessionResponse] = []
    while sum(len(r.results) for r in later) < 3:
        later.append(await call.read())
    answered = by_id(later)
    assert list(answered[300].get.siblings) == [b"v"]
    assert [item.result.found for item in answered[301].get_many.items] == [True, False]
    assert answered[302].put_many.items[0].status.code == 0
    await call.write(kv_pb2.SessionRequest(operations=[
        Op(id=303, delete=kv_pb2.DeleteRequest(key=b"k"))]))
    assert (await call.read()).results[0].WhichOneof("outcome") == "delete"
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK  # closed by the client, all answered


async def test_bad_input_in_one_operation_fails_that_operation_only_as_unary_would(
        node: NodeProcess) -> None:
    bad_get = kv_pb2.GetRequest(key=b"")
    bad_put = kv_pb2.PutRequest(key=b"k", value=b"v", w=kv_pb2.Consistency(count=5))
    responses, _ = await exchange(node.address, [kv_pb2.SessionRequest(operations=[
        Op(id=1, get=bad_get), Op(id=2, put=kv_pb2.PutRequest(key=b"ok", value=b"1")),
        Op(id=3, put=bad_put), Op(id=4, ping=kv_pb2.PingRequest(payload=b"p")), Op(id=5),
    ])], 5)
    answered = by_id(responses)
    assert answered[2].WhichOneof("outcome") == "put"
    assert answered[4].ping.payload == b"p"
    with open_channel(node.address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        for op_id, call, request in ((1, stub.Get, bad_get), (3, stub.Put, bad_put)):
            with pytest.raises(grpc.RpcError) as unary:
                call(request, timeout=5)
            error = answered[op_id].error
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert error.message == unary.value.details()  # type: ignore[attr-defined]
    # An operation of no kind this server knows: what an older server says
    # of a newer kind.
    assert answered[5].error.code == grpc.StatusCode.UNIMPLEMENTED.value[0]


async def test_protocol_errors_end_the_stream_after_the_operations_it_started(
        node: NodeProcess) -> None:
    # Id 7 again while the first (a put, waiting for its commit) is in flight.
    responses, call = await exchange(node.address, [kv_pb2.SessionRequest(operations=[
        Op(id=7, put=kv_pb2.PutRequest(key=b"k", value=b"v")),
        Op(id=7, ping=kv_pb2.PingRequest()),
    ])], 1)
    assert by_id(responses)[7].WhichOneof("outcome") == "put"
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already in flight" in await call.details()

    async with open_aio_channel(node.address) as channel:
        raw = channel.stream_stream("/kvstore.v1.KV/Session", request_serializer=bytes,
                                    response_deserializer=kv_pb2.SessionResponse.FromString)
        garbage = raw()
        await garbage.write(b"\xff\xff\xff not protobuf")
        assert await garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid SessionRequest" in await garbage.details()


async def test_a_stopping_node_answers_what_it_read_then_ends_the_stream_unavailable(
        start: StartNode) -> None:
    node = start()
    responses, call = await exchange(node.address, [kv_pb2.SessionRequest(operations=[
        Op(id=i, put=kv_pb2.PutRequest(key=b"k%d" % i, value=b"v")) for i in range(50)])], 50)
    assert all(r.WhichOneof("outcome") == "put" for r in by_id(responses).values())
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.RpcError):
        await call.read()
    assert await call.code() == grpc.StatusCode.UNAVAILABLE
    assert "stopping" in await call.details()
    assert node.process.wait() == 0
    # Not held for the shutdown grace period (10 s) by the open stream.
    assert time.monotonic() - started < 5


def test_operations_of_the_stream_are_counted_under_their_methods(node: NodeProcess) -> None:
    with kvclient.Client([node.address]) as client:
        for _ in range(3):
            client.ping()
        with pytest.raises(errors.InvalidArgument):
            client.put(b"k", b"v", w=9)
    assert metric(node, 'kvstore_requests_total{code="OK",method="Ping"}') == 3.0
    assert metric(node, 'kvstore_requests_total{code="INVALID_ARGUMENT",method="Put"}') == 1.0
    assert metric(node, 'kvstore_requests_total{code="OK",method="Session"}') is None


def _phantom_cluster(tmp_path: Path, node_id: str, port: int) -> Path:
    """A [cluster] of three members of which only `node_id` (at `port`) will
    ever run: the others' ports refuse connections."""
    members = [ClusterMember(node_id, f"127.0.0.1:{port}"),
               ClusterMember("n2", f"127.0.0.1:{free_port()}"),
               ClusterMember("n3", f"127.0.0.1:{free_port()}")]
    config = tmp_path / "cluster.toml"
    config.write_text(ClusterSpec(tuple(members), replicas=3, partitions=16).to_toml())
    return config


def test_an_error_carries_the_same_details_over_the_stream_as_over_a_unary_call(
        start: StartNode, tmp_path: Path) -> None:
    port = free_port()
    node = start("n1", port=port, extra=["--config", str(_phantom_cluster(tmp_path, "n1", port))])
    poll(lambda: metric(node, 'kvstore_peer_up{node="n2"}') == 0.0
         and metric(node, 'kvstore_peer_up{node="n3"}') == 0.0, 30, "n1 holds n2, n3 down")
    caught: list[errors.KVError] = []
    for stream in (True, False):
        with kvclient.Client([node.address], stream=stream, max_attempts=1) as client:
            with pytest.raises(errors.Unavailable) as failed:
                client.put(b"k", b"v", w="all", sloppy=False)
            caught.append(failed.value)
    streamed, unary = caught
    assert streamed.reason == unary.reason == "QUORUM_NOT_REACHED"
    assert streamed.outcome == unary.outcome == "not_applied"
    assert streamed.metadata == unary.metadata
    assert streamed.details == unary.details
    assert isinstance(unary.__cause__, grpc.RpcError) and streamed.__cause__ is None


def _preferred_by(spec: ClusterSpec, node_id: str) -> bytes:
    """A key whose preference list starts at `node_id` (its write's origin)."""
    return next(key for key in (b"key-%d" % i for i in range(10_000))
                if spec.preference_list(key)[0] == node_id)


async def test_a_call_past_its_deadline_and_a_cancelled_call_leave_the_others_alone(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    # n2 and n3 paused: a write at w=all waits for them (replica calls time
    # out only after 30 s), while n1 answers reads and its own writes.
    cluster = make_cluster(coordinators=0, node_settings="replica_timeout_seconds = 30\n")
    n1 = cluster.nodes["n1"]
    spec = ClusterSpec(tuple(ClusterMember(i, n.address) for i, n in cluster.nodes.items()),
                       replicas=3, partitions=16)
    own = _preferred_by(spec, "n1")
    for paused in ("n2", "n3"):
        cluster.nodes[paused].process.send_signal(signal.SIGSTOP)
    try:
        async with kvclient.AsyncClient([n1.address], max_attempts=1) as client:
            started = time.monotonic()
            late = asyncio.create_task(client.put(b"late", b"v", w="all", sloppy=False,
                                                  timeout=0.5))
            doomed = asyncio.create_task(client.put(b"doomed", b"v", w="all", sloppy=False,
                                                    timeout=20))
            for index in range(20):
                assert await client.ping(b"%d" % index) == b"%d" % index
            await client.put(own, b"mine", w=1)
            with pytest.raises(errors.DeadlineExceeded):
                await late
            assert 0.5 <= time.monotonic() - started < 2.0
            assert (await client.get(own, r=1)).value == b"mine"
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            # The server cancelled it too, long before its 20 s were up, and
            # stopped the late one at its deadline; the stream carries on.
            await asyncio.to_thread(
                poll, lambda: metric(n1, 'kvstore_requests_total{code="CANCELLED",method="Put"}')
                == 1.0, 10, "the cancelled write stopped on the server")
            assert metric(n1, 'kvstore_requests_total{code="DEADLINE_EXCEEDED",method="Put"}') == 1
            assert time.monotonic() - started < 10
            assert await client.ping(b"after") == b"after"
    finally:
        for paused in ("n2", "n3"):
            cluster.nodes[paused].process.send_signal(signal.SIGCONT)


async def test_a_node_killed_mid_stream_fails_its_operations_over_to_the_next_address(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=0)
    addresses = [node.address for node in cluster.nodes.values()]
    written: dict[bytes, bytes] = {}
    failures: list[BaseException] = []
    killed = asyncio.Event()
    after_kill = 0

    async with kvclient.AsyncClient(addresses, timeout=20) as client:
        async def writer(worker: int) -> None:
            nonlocal after_kill
            for index in range(10_000):
                key, value = b"w%d-%d" % (worker, index), os.urandom(8)
                try:
                    await client.put(key, value, w=2)
                except errors.KVError as exc:
                    failures.append(exc)
                    return
                written[key] = value
                if killed.is_set():
                    after_kill += 1
                    if after_kill >= 300:
                        return

        workers = [asyncio.create_task(writer(n)) for n in range(32)]
        await asyncio.to_thread(poll, lambda: len(written) >= 300, 30, "300 writes")
        cluster.nodes["n1"].process.kill()  # SIGKILL, operations in flight on its stream
        killed.set()
        await asyncio.gather(*workers)
        assert failures == []
        assert after_kill >= 300
    keys = list(written)
    with kvclient.Client(addresses[1:], timeout=20) as reader:
        found = [result.value for start in range(0, len(keys), 500)
                 for result in reader.get_many(keys[start:start + 500], r=2)]
    assert found == list(written.values())
