"""kvclient over KV.Session against scripted in-process servers: calls made
together share a message, answers come back by id in any order, a deadline
or a cancellation touches one call only, a broken stream sends its calls to
the next address, once each; and the server side's bound on operations in
flight, with real gRPC flow control."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

import kvclient
from kvclient import errors
from kvclient.pb import kv_pb2, kv_pb2_grpc
from kvstore.errors import Overloaded
from kvstore.rpc.admission import Admission, AdmissionLimits, Gate, Ticket
from kvstore.rpc.session import SessionStream
from kvstore.rpc.status import rich_status

pytestmark = [pytest.mark.process, pytest.mark.timeout(30)]

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


@dataclass
class Scripted(kv_pb2_grpc.KVServicer):
    """A Session server that answers pings and puts at once (a message's
    answers in reverse order), never answers a ping whose payload starts
    with b"hold" (nor puts, with `hold_puts`), and with `break_when` held,
    ends the stream UNAVAILABLE."""

    received: list[kv_pb2.SessionRequest] = field(default_factory=list)
    streams: int = 0
    hold_puts: bool = False
    break_when: int | None = None
    failure: status_pb2.Status | None = None  # the answer to every put, when set

    def operations(self) -> list[kv_pb2.SessionOperation]:
        return [op for message in self.received for op in message.operations]

    def cancelled(self) -> list[int]:
        return [op_id for message in self.received for op_id in message.cancel]

    async def Session(self, requests: AsyncIterator[kv_pb2.SessionRequest],
                      context: grpc.aio.ServicerContext) -> None:
        self.streams += 1
        await context.send_initial_metadata(())
        held = 0
        async for message in requests:
            self.received.append(message)
            results = []
            for op in message.operations:
                if op.WhichOneof("kind") == "ping" and op.ping.payload.startswith(b"hold") or (
                        self.hold_puts and op.WhichOneof("kind") == "put"):
                    held += 1
                elif op.WhichOneof("kind") == "ping":
                    results.append(kv_pb2.SessionResult(
                        id=op.id, ping=kv_pb2.PingResponse(payload=op.ping.payload)))
                elif self.failure is not None:
                    results.append(kv_pb2.SessionResult(id=op.id, error=self.failure))
                else:
                    results.append(kv_pb2.SessionResult(
                        id=op.id, put=kv_pb2.PutResponse(context=b"put:" + op.put.key)))
            if self.break_when is not None and held >= self.break_when:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the node went away")
            if results:
                await context.write(kv_pb2.SessionResponse(results=results[::-1]))


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[kv_pb2_grpc.KVServicer], Awaitable[str]]]:
    servers: list[grpc.aio.Server] = []

    async def start(servicer: kv_pb2_grpc.KVServicer) -> str:
        server = grpc.aio.server()
        kv_pb2_grpc.add_KVServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop(None)


async def poll(condition: Callable[[], bool], what: str, seconds: float = 10) -> None:
    """Wait for `condition` with a deadline."""
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.005)  # polling interval, not synchronisation
    except TimeoutError:
        raise AssertionError(f"not within {seconds}s: {what}") from None


async def test_calls_made_together_go_in_one_message_and_get_their_own_answers(serve) -> None:  # type: ignore[no-untyped-def]
    server = Scripted()
    async with kvclient.AsyncClient(await serve(server)) as client:
        assert await client.ping(b"first") == b"first"  # opens the stream
        payloads = [b"%d" % i for i in range(100)]
        echoed = await asyncio.gather(*(client.ping(p) for p in payloads))
    assert echoed == payloads  # answered in reverse, each to its own call
    assert server.streams == 1
    assert [len(message.operations) for message in server.received] == [1, 100]
    assert len({op.id for op in server.operations()}) == 101


async def test_a_call_past_its_deadline_fails_alone(serve) -> None:  # type: ignore[no-untyped-def]
    server = Scripted()
    async with kvclient.AsyncClient(await serve(server)) as client:
        await client.ping()
        started = time.monotonic()
        held = asyncio.create_task(client.ping(b"hold", timeout=0.2))
        assert await client.ping(b"meanwhile") == b"meanwhile"
        with pytest.raises(errors.DeadlineExceeded):
            await held
        assert 0.2 <= time.monotonic() - started < 0.5
        assert await client.ping(b"after") == b"after"
    sent = next(op for op in server.operations() if op.ping.payload == b"hold")
    assert 150 < sent.timeout_ms <= 200  # the server is told the same deadline
    assert server.streams == 1 and server.cancelled() == []


async def test_a_cancelled_call_is_cancelled_on_the_server_and_alone(serve) -> None:  # type: ignore[no-untyped-def]
    server = Scripted()
    async with kvclient.AsyncClient(await serve(server)) as client:
        held = asyncio.create_task(client.ping(b"hold"))
        await poll(lambda: any(op.ping.payload == b"hold" for op in server.operations()),
                   "the held ping reached the server")
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held
        assert await client.ping(b"other") == b"other"
        await poll(lambda: server.cancelled() != [], "the cancel reached the server")
    sent = next(op for op in server.operations() if op.ping.payload == b"hold")
    assert server.cancelled() == [sent.id]


async def test_a_broken_stream_sends_each_of_its_calls_to_the_next_address_once(serve) -> None:  # type: ignore[no-untyped-def]
    breaking, healthy = Scripted(hold_puts=True, break_when=11), Scripted()
    first, second = await serve(breaking), await serve(healthy)
    async with kvclient.AsyncClient([first, second], **FAST) as client:
        # Round robin: half the puts start on the breaking server, which
        # holds them; its stream ends when a held ping joins them.
        puts = [asyncio.create_task(client.put(b"k%d" % i, b"v")) for i in range(20)]
        await poll(lambda: sum(op.HasField("put") for op in breaking.operations()) == 10,
                   "10 puts on the first stream")
        hold = asyncio.create_task(client.ping(b"hold-and-break"))
        written = await asyncio.gather(*puts)
        assert [w.context for w in written] == [b"put:k%d" % i for i in range(20)]
        hold.cancel()
        # The stream is opened again by the next call there.
        for _ in range(2):
            assert await client.ping(b"again") == b"again"
    retried = [op.put.request_id for op in breaking.operations() if op.HasField("put")]
    at_healthy = [op.put.request_id for op in healthy.operations() if op.HasField("put")]
    assert len(at_healthy) == len(set(at_healthy)) == 20  # each once, the same id
    assert len(retried) == 10 and set(retried) <= set(at_healthy)
    assert breaking.streams == 2


async def test_an_operations_status_becomes_its_typed_error_with_the_details(serve) -> None:  # type: ignore[no-untyped-def]
    status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                               message="the store is full")
    status.details.add().Pack(error_details_pb2.ErrorInfo(
        reason="STORE_FULL", domain="kvstore", metadata={"outcome": "not_applied"}))
    status.details.add().Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(nanos=250_000_000)))
    server = Scripted(failure=status)
    async with kvclient.AsyncClient(await serve(server), **FAST) as client:
        with pytest.raises(errors.ResourceExhausted) as caught:
            await client.put(b"k", b"v")
    assert caught.value.details == "the store is full"
    assert (caught.value.reason, caught.value.outcome) == ("STORE_FULL", "not_applied")
    assert caught.value.retry_after == 0.25
    assert len(server.operations()) == 1  # not retried


async def test_the_blocking_client_shares_one_stream_between_threads(serve) -> None:  # type: ignore[no-untyped-def]
    server = Scripted()
    address = await serve(server)

    def use_from_threads() -> list[bytes]:
        echoed: list[bytes] = []
        with kvclient.Client(address) as client:
            def worker(n: int) -> None:
                for i in range(25):
                    echoed.append(client.ping(b"%d-%d" % (n, i)))
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        return echoed

    echoed = await asyncio.to_thread(use_from_threads)
    assert sorted(echoed) == sorted(b"%d-%d" % (n, i) for n in range(8) for i in range(25))
    assert server.streams == 1


class Bounded(kv_pb2_grpc.KVServicer):
    """Session served by the real SessionStream and admission control, with
    operations that wait until the test releases them."""

    def __init__(self, max_in_flight: int) -> None:
        self.admission = Admission(AdmissionLimits(session_max_requests=max_in_flight,
                                                   retry_after=0.01))
        self.max_in_flight = max_in_flight
        self.refused = 0
        self.running = 0
        self.most = 0
        self.release = asyncio.Semaphore(0)

    async def perform(self, op: kv_pb2.SessionOperation, ticket: Ticket) -> kv_pb2.SessionResult:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.acquire()
        finally:
            self.running -= 1
        return kv_pb2.SessionResult(ping=kv_pb2.PingResponse(payload=op.ping.payload))

    def admit(self, gate: Gate, op: kv_pb2.SessionOperation) -> Ticket | kv_pb2.SessionResult:
        try:
            return self.admission.admit(op.ByteSize(), gate)
        except Overloaded as refusal:
            self.refused += 1
            return kv_pb2.SessionResult(error=rich_status(refusal))

    async def Session(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        admit = functools.partial(self.admit, self.admission.session_gate())
        await SessionStream(self.perform, admit=admit, max_unanswered=2 * self.max_in_flight,
                            ).serve(requests, context)


async def test_the_server_runs_at_most_its_bound_of_operations_of_a_stream_and_refuses_more(
        serve) -> None:  # type: ignore[no-untyped-def]
    servicer = Bounded(max_in_flight=3)
    async with kvclient.AsyncClient(await serve(servicer), timeout=20) as client:
        calls = [asyncio.create_task(client.ping(b"%d" % i)) for i in range(10)]
        await poll(lambda: servicer.running == 3 and servicer.refused >= 7,
                   "three operations running, the others refused")
        for _ in range(10):
            servicer.release.release()
        # The client retried the refused ones, with backoff, until they got in.
        assert await asyncio.gather(*calls) == [b"%d" % i for i in range(10)]
    assert servicer.most == 3  # ten sent, never more than three let in
