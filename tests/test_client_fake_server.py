"""Both kvclient clients against an in-process fake KV server that records
every request: field mapping, retries with stable request ids, errors that
must not be retried, failover, round robin, the overall deadline and batch
item errors.

Every test runs twice: the blocking Client against a grpc sync server (its
own threads serve while the test blocks), and the AsyncClient against a
grpc.aio server on the test's event loop. The fake has no KV.Session (it
answers UNIMPLEMENTED, as an older node would), so the clients fall back to
the unary calls these tests look at.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf.message import Message

import kvclient
from kvclient import errors
from kvclient.pb import kv_pb2, kv_pb2_grpc

pytestmark = [pytest.mark.process, pytest.mark.timeout(30)]

# Quick retries, so a test that exercises them stays fast.
FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    message: str = ""


@dataclass
class FakeKV:
    """The fake service's behaviour, shared by the sync and asyncio adapters."""

    requests: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    # The monotonic time each request's deadline falls at, as the server saw it.
    deadlines: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    store: dict[bytes, list[bytes]] = field(default_factory=dict)
    scripted: dict[str, list[Failure]] = field(default_factory=lambda: defaultdict(list))
    always: Failure | None = None
    item_failures: dict[bytes, Failure] = field(default_factory=dict)
    clock: int = 0
    sessions: int = 0  # KV.Session calls tried (answered UNIMPLEMENTED)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, method: str, code: grpc.StatusCode, message: str = "", times: int = 1) -> None:
        """Make the next `times` calls of `method` fail with `code`."""
        self.scripted[method].extend([Failure(code, message)] * times)

    def handle(self, method: str, request: Message, time_remaining: float | None) -> Any:
        with self.lock:
            self.requests[method].append(request)
            if time_remaining is not None:
                self.deadlines[method].append(time.monotonic() + time_remaining)
            if self.always is not None:
                return self.always
            if self.scripted[method]:
                return self.scripted[method].pop(0)
            return getattr(self, f"_{method.lower()}")(request)

    def _get(self, request: kv_pb2.GetRequest) -> kv_pb2.GetResponse:
        siblings = self.store.get(request.key, [])
        return kv_pb2.GetResponse(found=bool(siblings), siblings=siblings,
                                  context=b"ctx:" + request.key, timestamp=self.clock)

    def _put(self, request: kv_pb2.PutRequest) -> kv_pb2.PutResponse:
        self.clock += 1
        self.store[request.key] = [request.value]
        return kv_pb2.PutResponse(context=b"put:" + request.key, timestamp=self.clock)

    def _delete(self, request: kv_pb2.DeleteRequest) -> kv_pb2.DeleteResponse:
        self.store.pop(request.key, None)
        return kv_pb2.DeleteResponse(context=b"tomb:" + request.key)

    def _getmany(self, request: kv_pb2.GetManyRequest) -> kv_pb2.GetManyResponse:
        items = [self._item(key) or {"result": self._get(kv_pb2.GetRequest(key=key))}
                 for key in request.keys]
        return kv_pb2.GetManyResponse(items=items)

    def _putmany(self, request: kv_pb2.PutManyRequest) -> kv_pb2.PutManyResponse:
        items = [self._item(put.key) or {"result": self._put(put)} for put in request.puts]
        return kv_pb2.PutManyResponse(items=items)

    def _ping(self, request: kv_pb2.PingRequest) -> kv_pb2.PingResponse:
        return kv_pb2.PingResponse(payload=request.payload)

    def _item(self, key: bytes) -> dict[str, Any] | None:
        failure = self.item_failures.get(key)
        if failure is None:
            return None
        return {"status": {"code": failure.code.value[0], "message": failure.message}}


def _sync_handler(method: str) -> Callable[..., Any]:
    def handler(self: SyncKV, request: Message, context: grpc.ServicerContext) -> Any:
        outcome = self.fake.handle(method, request, context.time_remaining())
        if isinstance(outcome, Failure):
            context.abort(outcome.code, outcome.message)
        return outcome
    return handler


def _aio_handler(method: str) -> Callable[..., Any]:
    async def handler(self: AioKV, request: Message, context: Any) -> Any:
        outcome = self.fake.handle(method, request, context.time_remaining())
        if isinstance(outcome, Failure):
            await context.abort(outcome.code, outcome.message)
        return outcome
    return handler


class SyncKV(kv_pb2_grpc.KVServicer):
    def __init__(self, fake: FakeKV) -> None:
        self.fake = fake

    def Session(self, requests: Any, context: grpc.ServicerContext) -> Any:
        with self.fake.lock:
            self.fake.sessions += 1
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")

    Get, Put, Delete = _sync_handler("Get"), _sync_handler("Put"), _sync_handler("Delete")
    GetMany, PutMany = _sync_handler("GetMany"), _sync_handler("PutMany")
    Ping = _sync_handler("Ping")


class AioKV(kv_pb2_grpc.KVServicer):
    def __init__(self, fake: FakeKV) -> None:
        self.fake = fake

    async def Session(self, requests: Any, context: Any) -> None:
        self.fake.sessions += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")

    Get, Put, Delete = _aio_handler("Get"), _aio_handler("Put"), _aio_handler("Delete")
    GetMany, PutMany = _aio_handler("GetMany"), _aio_handler("PutMany")
    Ping = _aio_handler("Ping")


class Awaitable:
    """The blocking Client behind awaitable methods, so one test body drives both."""

    def __init__(self, client: kvclient.Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)
        return call


@dataclass
class Harness:
    mode: str
    _servers: list[Any] = field(default_factory=list)
    _clients: list[Any] = field(default_factory=list)

    async def server(self) -> tuple[FakeKV, str]:
        """A fresh fake server on 127.0.0.1, and its address."""
        fake = FakeKV()
        server: Any
        if self.mode == "sync":
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            kv_pb2_grpc.add_KVServicer_to_server(SyncKV(fake), server)
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
        else:
            server = grpc.aio.server()
            kv_pb2_grpc.add_KVServicer_to_server(AioKV(fake), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
        self._servers.append(server)
        return fake, f"127.0.0.1:{port}"

    def client(self, addresses: str | list[str], **kwargs: Any) -> Any:
        if self.mode == "sync":
            client = kvclient.Client(addresses, **kwargs)
            self._clients.append(client)
            return Awaitable(client)
        async_client = kvclient.AsyncClient(addresses, **kwargs)
        self._clients.append(async_client)
        return async_client

    async def one(self, **kwargs: Any) -> tuple[FakeKV, Any]:
        """One fake server and a client of it."""
        fake, address = await self.server()
        return fake, self.client([address], **kwargs)

    async def close(self) -> None:
        for client in self._clients:
            if isinstance(client, kvclient.AsyncClient):
                await client.close()
            else:
                client.close()
        for server in self._servers:
            if isinstance(server, grpc.aio.Server):
                await server.stop(None)
            else:
                server.stop(None)


@pytest.fixture(params=["sync", "async"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = Harness(request.param)
    yield harness
    await harness.close()


@pytest.fixture
def closed_address() -> Iterator[str]:
    """A loopback port that refuses connections: bound, never listening, held
    for the test so nothing else can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


# --- field mapping -----------------------------------------------------------


async def test_put_get_delete_map_their_fields(kv: Harness) -> None:
    fake, client = await kv.one()
    written = await client.put(b"k", b"v", w="all", context=b"seen")
    put = fake.requests["Put"][0]
    assert (put.key, put.value, put.context, put.w.level) == (b"k", b"v", b"seen",
                                                              kv_pb2.Consistency.ALL)
    assert len(put.request_id) == 16
    assert written == kvclient.WriteResult(context=b"put:k", timestamp=1)

    got = await client.get(b"k", r=2)
    assert fake.requests["Get"][0].r.count == 2
    assert got == kvclient.GetResult(value=b"v", siblings=[b"v"], context=b"ctx:k",
                                     timestamp=1, found=True)

    deleted = await client.delete(b"k", w="One", context=got.context)
    delete = fake.requests["Delete"][0]
    assert (delete.key, delete.context, delete.w.level) == (b"k", b"ctx:k", kv_pb2.Consistency.ONE)
    assert len(delete.request_id) == 16 and delete.request_id != put.request_id
    assert deleted == kvclient.WriteResult(context=b"tomb:k", timestamp=0)

    gone = await client.get(b"k")
    assert (gone.value, gone.siblings, gone.found) == (None, [], False)
    assert not fake.requests["Get"][1].HasField("r")


async def test_siblings_resolve_to_the_newest_or_through_the_resolver(kv: Harness) -> None:
    fake, address = await kv.server()
    fake.store[b"s"] = [b"old", b"new"]
    plain = await kv.client(address).get(b"s")
    assert plain.value == b"new" and plain.siblings == [b"old", b"new"]
    merged = await kv.client(address, resolver=lambda s: b"+".join(s)).get(b"s")
    assert merged.value == b"old+new" and merged.siblings == [b"old", b"new"]


async def test_batches_map_their_fields_and_keep_order(kv: Harness) -> None:
    fake, client = await kv.one()
    written = await client.put_many([(b"a", b"1"), (b"b", b"2", b"ctx-b")], w="quorum")
    batch = fake.requests["PutMany"][0]
    assert batch.w.level == kv_pb2.Consistency.QUORUM
    assert [(p.key, p.value, p.context) for p in batch.puts] == [(b"a", b"1", b""),
                                                                 (b"b", b"2", b"ctx-b")]
    assert len({p.request_id for p in batch.puts}) == 2
    assert [w.context for w in written] == [b"put:a", b"put:b"]

    assert len(await client.put_many({b"c": b"3"})) == 1
    got = await client.get_many([b"c", b"missing", b"a"], r="one")
    assert fake.requests["GetMany"][0].keys == [b"c", b"missing", b"a"]
    assert fake.requests["GetMany"][0].r.level == kv_pb2.Consistency.ONE
    assert [g.value for g in got] == [b"3", None, b"1"]
    assert await client.get_many([]) == [] and await client.put_many({}) == []
    assert len(fake.requests["GetMany"]) == 1  # empty batches are answered locally


async def test_ping_echoes_its_payload(kv: Harness) -> None:
    fake, client = await kv.one()
    assert await client.ping(b"hello") == b"hello"
    assert await client.ping() == b""
    assert [r.payload for r in fake.requests["Ping"]] == [b"hello", b""]


# --- retries -------------------------------------------------------------------


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED])
async def test_retried_write_carries_the_same_request_id(
    kv: Harness, code: grpc.StatusCode
) -> None:
    fake, client = await kv.one(**FAST)
    fake.fail("Put", code, times=2)
    fake.fail("Delete", code, times=2)
    assert (await client.put(b"k", b"v")).context == b"put:k"
    await client.delete(b"k")
    for method in ("Put", "Delete"):
        ids = [r.request_id for r in fake.requests[method]]
        assert len(ids) == 3 and len(set(ids)) == 1 and len(ids[0]) == 16


async def test_retried_batch_keeps_each_items_own_id(kv: Harness) -> None:
    fake, client = await kv.one(**FAST)
    fake.fail("PutMany", grpc.StatusCode.UNAVAILABLE, times=2)
    await client.put_many({b"a": b"1", b"b": b"2", b"c": b"3"})
    attempts = [[p.request_id for p in r.puts] for r in fake.requests["PutMany"]]
    assert len(attempts) == 3 and attempts[0] == attempts[1] == attempts[2]
    assert len(set(attempts[0])) == 3


async def test_reads_are_retried_on_aborted_and_unavailable(kv: Harness) -> None:
    fake, client = await kv.one(**FAST)
    fake.fail("Get", grpc.StatusCode.ABORTED)
    fake.fail("Get", grpc.StatusCode.UNAVAILABLE)
    fake.fail("GetMany", grpc.StatusCode.UNAVAILABLE)
    fake.fail("Ping", grpc.StatusCode.ABORTED)
    assert (await client.get(b"k")).found is False
    assert len(await client.get_many([b"k"])) == 1
    assert await client.ping(b"p") == b"p"
    assert [len(fake.requests[m]) for m in ("Get", "GetMany", "Ping")] == [3, 2, 2]


async def test_invalid_argument_is_raised_at_once_with_the_servers_message(kv: Harness) -> None:
    fake, client = await kv.one(**FAST)
    fake.fail("Put", grpc.StatusCode.INVALID_ARGUMENT, "value is 2 MiB; the limit is 1 MiB")
    with pytest.raises(errors.InvalidArgument) as caught:
        await client.put(b"k", b"v")
    assert caught.value.details == "value is 2 MiB; the limit is 1 MiB"
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert str(caught.value) == "INVALID_ARGUMENT: value is 2 MiB; the limit is 1 MiB"
    assert isinstance(caught.value.__cause__, grpc.RpcError)
    assert len(fake.requests["Put"]) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DATA_LOSS,
                                  grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_other_errors_are_typed_and_not_retried(kv: Harness, code: grpc.StatusCode) -> None:
    fake, client = await kv.one(**FAST)
    fake.fail("Get", code, "what to change")
    fake.fail("PutMany", code, "what to change")
    with pytest.raises(errors.ERROR_BY_CODE[code], match="what to change"):
        await client.get(b"k")
    with pytest.raises(errors.ERROR_BY_CODE[code]):
        await client.put_many([(b"k", b"v")])
    assert len(fake.requests["Get"]) == len(fake.requests["PutMany"]) == 1


async def test_the_last_error_is_raised_when_attempts_run_out(kv: Harness) -> None:
    fake, client = await kv.one(max_attempts=3, **FAST)
    fake.always = Failure(grpc.StatusCode.UNAVAILABLE, "node is stopping")
    with pytest.raises(errors.Unavailable, match="node is stopping"):
        await client.put(b"k", b"v")
    assert len(fake.requests["Put"]) == 3


# --- addresses -------------------------------------------------------------------


async def test_calls_fail_over_past_a_closed_port(kv: Harness, closed_address: str) -> None:
    fake, live = await kv.server()
    client = kv.client([closed_address, live], **FAST)
    for n in range(4):
        assert await client.ping(b"%d" % n) == b"%d" % n
    assert await client.get(b"k") is not None
    assert len(fake.requests["Ping"]) == 4


async def test_unavailable_server_hands_the_call_to_the_next(kv: Harness) -> None:
    down, first = await kv.server()
    up, second = await kv.server()
    down.always = Failure(grpc.StatusCode.UNAVAILABLE, "starting")
    client = kv.client([first, second], **FAST)
    await client.put(b"k", b"v")
    assert len(down.requests["Put"]) == len(up.requests["Put"]) == 1
    assert down.requests["Put"][0].request_id == up.requests["Put"][0].request_id


async def test_successive_calls_go_round_robin(kv: Harness) -> None:
    servers = [await kv.server() for _ in range(3)]
    client = kv.client([address for _, address in servers])
    for _ in range(6):
        await client.ping()
    assert [len(fake.requests["Ping"]) for fake, _ in servers] == [2, 2, 2]


async def test_a_server_without_session_gets_unary_calls_from_then_on(kv: Harness) -> None:
    servers = [await kv.server() for _ in range(2)]
    client = kv.client([address for _, address in servers])
    for _ in range(6):
        assert await client.ping(b"p") == b"p"
    assert [fake.sessions for fake, _ in servers] == [1, 1]  # tried once per address
    assert [len(fake.requests["Ping"]) for fake, _ in servers] == [3, 3]
    unary = kv.client([servers[0][1]], stream=False)
    await unary.ping()
    assert servers[0][0].sessions == 1


# --- deadlines ---------------------------------------------------------------------


async def test_overall_timeout_bounds_a_call_that_keeps_failing(kv: Harness) -> None:
    fake, client = await kv.one(max_attempts=1000, backoff_base=0.01, backoff_cap=0.05)
    fake.always = Failure(grpc.StatusCode.UNAVAILABLE, "too few replicas")
    started = time.monotonic()
    with pytest.raises((errors.Unavailable, errors.DeadlineExceeded)):
        await client.get(b"k", timeout=0.5)
    assert time.monotonic() - started < 1.0
    assert len(fake.requests["Get"]) > 1


async def test_every_attempt_shares_the_calls_one_deadline(kv: Harness) -> None:
    # Backoff long enough that fresh per-attempt timeouts would visibly move
    # the deadline. gRPC sends timeouts under 1 s to the millisecond (longer
    # ones it rounds up, by up to 100 ms), so the tolerance covers loopback
    # latency only.
    fake, client = await kv.one(max_attempts=4, backoff_base=0.1, backoff_cap=0.1)
    fake.fail("Put", grpc.StatusCode.UNAVAILABLE, times=3)
    started = time.monotonic()
    await client.put(b"k", b"v", timeout=0.9)
    deadlines = fake.deadlines["Put"]
    assert len(deadlines) == 4
    assert max(deadlines) - min(deadlines) < 0.03
    assert started + 0.9 - 0.01 < min(deadlines) < started + 0.9 + 0.1


async def test_default_timeout_applies_when_a_call_gives_none(kv: Harness) -> None:
    fake, client = await kv.one(timeout=0.75)
    started = time.monotonic()
    await client.ping()
    assert started + 0.75 - 0.01 < fake.deadlines["Ping"][0] < started + 0.75 + 0.2


# --- batch item errors ---------------------------------------------------------------


async def test_failed_batch_item_raises_its_error_naming_index_and_key(kv: Harness) -> None:
    fake, client = await kv.one(**FAST)
    fake.item_failures[b"bad"] = Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, "store is full")
    with pytest.raises(errors.ResourceExhausted) as caught:
        await client.put_many([(b"ok", b"1"), (b"bad", b"2")])
    assert "item 1" in caught.value.details and "b'bad'" in caught.value.details
    assert caught.value.details.endswith("store is full")
    assert len(fake.requests["PutMany"]) == 1

    fake.item_failures[b"rotten"] = Failure(grpc.StatusCode.DATA_LOSS, "checksum mismatch")
    with pytest.raises(errors.DataLoss, match=r"item 2 \(key b'rotten'\).*checksum mismatch"):
        await client.get_many([b"ok", b"missing", b"rotten"])
