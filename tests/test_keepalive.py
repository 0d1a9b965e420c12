"""Client keepalive against a real node: it finds a server that stopped
answering (a paused process, behind a TCP connection that stays open) long
before a call's deadline, and the node accepts the pings of the most
frequent keepalive a client may set instead of ending the connection
(GOAWAY too_many_pings)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import kvclient
from kvclient.channel_settings import MIN_KEEPALIVE_TIME, ChannelSettings, Keepalive
from kvclient.errors import DeadlineExceeded, Unavailable
from kvclient.pb import kv_pb2
from kvstore.ops.processes import NodeProcess
from kvstore.rpc.channels import open_aio_channel

pytestmark = pytest.mark.timeout(60)

PROMPT = Keepalive(time=1.0, timeout=1.0)


def _timed_put(client: kvclient.Client, timeout: float) -> tuple[type[BaseException], float]:
    start = time.monotonic()
    with pytest.raises((Unavailable, DeadlineExceeded)) as failed:
        client.put(b"k", b"after the pause", timeout=timeout)
    return failed.type, time.monotonic() - start


def test_keepalive_fails_a_call_to_a_paused_server_long_before_its_deadline(
        node: NodeProcess) -> None:
    watched = kvclient.Client([node.address], keepalive=PROMPT, max_attempts=1)
    unwatched = kvclient.Client([node.address], max_attempts=1)
    try:
        for client in (watched, unwatched):
            client.put(b"k", b"before the pause")  # each has its stream open
        os.kill(node.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(2) as calls:
                fast = calls.submit(_timed_put, watched, 30.0)
                slow = calls.submit(_timed_put, unwatched, 4.0)
                watched_outcome, unwatched_outcome = fast.result(), slow.result()
        finally:
            os.kill(node.pid, signal.SIGCONT)
    finally:
        watched.close()
        unwatched.close()
    # Keepalive: a ping unanswered for its timeout closes the connection,
    # and the call fails UNAVAILABLE (retryable elsewhere) after about
    # time + timeout, not its 30 s.
    kind, seconds = watched_outcome
    assert kind is Unavailable and seconds < 10
    # Without: nothing notices, and the call waits out its deadline.
    kind, seconds = unwatched_outcome
    assert kind is DeadlineExceeded and seconds >= 4


async def test_the_node_accepts_the_pings_of_the_most_frequent_keepalive(
        node: NodeProcess) -> None:
    settings = ChannelSettings.create(Keepalive(time=MIN_KEEPALIVE_TIME, timeout=2.0,
                                                permit_without_calls=True))
    async with open_aio_channel(node.address, settings=settings) as channel:
        session = channel.stream_stream(
            "/kvstore.v1.KV/Session",
            request_serializer=kv_pb2.SessionRequest.SerializeToString,
            response_deserializer=kv_pb2.SessionResponse.FromString)()

        async def ping(op_id: int) -> None:
            await session.write(kv_pb2.SessionRequest(operations=[kv_pb2.SessionOperation(
                id=op_id, ping=kv_pb2.PingRequest(payload=b"p"))]))
            answer = await session.read()
            assert [result.id for result in answer.results] == [op_id]

        await ping(1)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        # An idle stream, pinged every second: gRPC's server default would
        # count the pings as abuse and end the connection within about 3 s
        # (the channel then leaves READY). It must stay READY throughout.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY), 5.0)
        await ping(2)  # the same stream still answers
        session.cancel()
