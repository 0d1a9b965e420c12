"""The asyncio client: `kvclient.AsyncClient` (the blocking `Client` runs it
on a loop of its own).

A thin shell on grpc.aio: it owns its channels (one per address, opened on
first use so they belong to the running event loop, then reused), the
KV.Session stream of each (`session.SessionLink`), and the loop that sends
an attempt, awaits the backoff and tries again. Requests, responses,
retries and address rotation come from the pure modules.

Each attempt goes as an operation of the address's stream, unless that
address answered the stream UNIMPLEMENTED (then, for the rest of the
client's life, as the unary call) or the client was made with
`stream=False`. Either way an attempt fails with a typed error or an
RpcError that `retry.Attempts` judges alike, so a stream that breaks sends
its operations to the next address exactly as failed unary calls would go.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from kvclient import errors, framing, requests
from kvclient.channel_settings import DEFAULT_MAX_RECONNECT_BACKOFF, Keepalive, RawOptions
from kvclient.channels import open_aio_channel
from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT, ClientConfig
from kvclient.consistency import Level
from kvclient.pb import kv_pb2, kv_pb2_grpc
from kvclient.requests import BytesLike, Data, PutItems, Rpc
from kvclient.results import GetResult, Resolver, WriteResult
from kvclient.retry import AddressRotation, AttemptLatency, Attempts
from kvclient.router import Router
from kvclient.routing import InOrder
from kvclient.security import TLS
from kvclient.session import SessionLink, SessionUnsupported
from kvclient.tracing import (CALL_SPANS, KV_SERVICE, Tracing, TracingOption,
                              address_attributes, metadata_of, resolve, rpc_attributes)


# How long a call routed by key waits for a replica's channel that is not
# yet connected before it goes to the next replica instead.
ROUTED_CONNECT_SECONDS = 0.2

# OpenTelemetry's database attributes of a call's span.
_CALL_ATTRIBUTES = {"db.system.name": "kvstore"}


class _Undecided:
    """A client's tracing before its first call."""


_UNDECIDED = _Undecided()


class AsyncClient:
    """An asyncio client of a kvstore cluster; arguments and behaviour as `Client`.

    Use it from one event loop: its channels are opened in the loop of its
    first call. `close()` is a coroutine; `async with` calls it. Cancelling
    a call cancels that call only (its operation on the server too).
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        backoff_base: float = 0.02,
        backoff_cap: float = 1.0,
        resolver: Resolver | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        stream: bool = True,
        token_aware: bool | None = None,
        tls: TLS | None = None,
        token: str | None = None,
        message_batch_bytes: int = framing.MESSAGE_BUDGET_BYTES,
        message_batch_operations: int = framing.MESSAGE_MAX_ITEMS,
        keepalive: Keepalive | None = None,
        max_reconnect_backoff: float = DEFAULT_MAX_RECONNECT_BACKOFF,
        channel_options: RawOptions | None = None,
        tracing: TracingOption = None,
    ) -> None:
        self._config = ClientConfig.create(
            addresses,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            resolver=resolver,
            max_message_bytes=max_message_bytes,
            tls=tls,
            token=token,
            message_batch_bytes=message_batch_bytes,
            message_batch_operations=message_batch_operations,
            keepalive=keepalive,
            max_reconnect_backoff=max_reconnect_backoff,
            channel_options=channel_options,
            tracing=tracing,
        )
        if token_aware not in (None, True, False):
            raise TypeError(f"token_aware must be None, True or False, got {token_aware!r}")
        self._rotation = AddressRotation(len(self._config.addresses))
        self._rng = random.Random()
        self._attempt_latency = AttemptLatency()  # for retries after refusals (retry.py)
        # Per address, given or learnt from the topology: opened on first use.
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, kv_pb2_grpc.KVStub] = {}
        self._links: dict[str, SessionLink] = {}
        self._stream = bool(stream)
        self._routing = Router(token_aware)
        self._closed = False
        # What the calls trace through (None: they do not), decided at the
        # first call (the application may set its TracerProvider after
        # making the client).
        self._tracing: Tracing | None | _Undecided = _UNDECIDED

    async def get(
        self, key: Data, *, r: Level = None, stale: bool = False, timeout: float | None = None
    ) -> GetResult:
        """The value(s) and causal context of `key`; `.value` is None when absent.
        Leader mode: linearizable, or `stale=True` from any replica."""
        request = requests.get_request(key, r, stale)
        response = await self._invoke("Get", request, timeout, key=request.key)
        return requests.get_result(response, self._config.resolver)

    async def put(
        self,
        key: Data,
        value: Data,
        *,
        w: Level = None,
        context: BytesLike | None = None,
        timeout: float | None = None,
        sloppy: bool = True,
        if_version: int | None = None,
    ) -> WriteResult:
        """Write `value`; pass the `context` of a get to replace what it read.
        `sloppy=False`: fail rather than let stand-in nodes hold hints for
        replicas that are down. Leader mode: `if_version=V` writes only if
        the key is at version V (0: absent), else raises VersionMismatch."""
        request = requests.put_request(
            key, value, context=context, w=w, request_id=requests.new_request_id(),
            sloppy=sloppy, if_version=if_version,
        )
        return requests.put_result(await self._invoke("Put", request, timeout, key=request.key))

    async def delete(
        self,
        key: Data,
        *,
        w: Level = None,
        context: BytesLike | None = None,
        timeout: float | None = None,
        sloppy: bool = True,
        if_version: int | None = None,
    ) -> WriteResult:
        """Delete `key` (a tombstone); pass the `context` of a get to replace what it read.
        Leader mode: `if_version` as for put."""
        request = requests.delete_request(
            key, context=context, w=w, request_id=requests.new_request_id(), sloppy=sloppy,
            if_version=if_version,
        )
        return requests.delete_result(
            await self._invoke("Delete", request, timeout, key=request.key))

    async def get_many(
        self, keys: Iterable[Data], *, r: Level = None, stale: bool = False,
        timeout: float | None = None
    ) -> list[GetResult]:
        """One GetResult per key, in order, in one round trip (`stale` for all)."""
        request = requests.get_many_request(keys, r, stale)
        self._config.call_timeout(timeout)  # checked even when there is nothing to send
        if not request.keys:
            return []
        response = await self._invoke("GetMany", request, timeout)
        return requests.get_many_results(request, response, self._config.resolver)

    async def put_many(
        self, items: PutItems, *, w: Level = None, timeout: float | None = None
    ) -> list[WriteResult]:
        """Write a dict key -> value, or (key, value[, context]) tuples, or
        PutItems (with an if_version each); results in order."""
        request = requests.put_many_request(items, w=w)
        self._config.call_timeout(timeout)  # checked even when there is nothing to send
        if not request.puts:
            return []
        return requests.put_many_results(request, await self._invoke("PutMany", request, timeout))

    async def delete_many(
        self, keys: Iterable[Data], *, w: Level = None, timeout: float | None = None
    ) -> list[WriteResult]:
        """Delete every key (tombstones); results in order. The deletes go
        together: on the stream, in one message; each is retried on its own.
        Every delete has run to its end before the first failure raises."""
        deletes = requests.delete_many_requests(keys, w=w)
        self._config.call_timeout(timeout)  # checked even when there is nothing to send
        tracing = self._tracer()
        with (contextlib.nullcontext() if tracing is None
              else tracing.span("kvclient.delete_many", attributes=_CALL_ATTRIBUTES)):
            outcomes = await asyncio.gather(
                *(self._invoke("Delete", request, timeout, key=request.key, own_span=False)
                  for request in deletes),
                return_exceptions=True)
            answered = requests.batch_results([d.key for d in deletes], outcomes)
        return [requests.delete_result(response) for response in answered]

    async def ping(self, payload: Data = b"", *, timeout: float | None = None) -> bytes:
        """Echo `payload` through one server, without touching storage."""
        response = await self._invoke("Ping", requests.ping_request(payload), timeout)
        return requests.ping_payload(response)

    async def close(self) -> None:
        """Close every stream and channel; calls in flight are cancelled."""
        self._closed = True
        await self._routing.close()
        links, channels = list(self._links.values()), list(self._channels.values())
        self._channels, self._stubs, self._links = {}, {}, {}
        for link in links:
            await link.close()
        for channel in channels:
            await channel.close(grace=None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({list(self._config.addresses)!r})"

    async def _invoke(self, rpc: Rpc, request: Message, timeout: float | None, *,
                      key: bytes | None = None, own_span: bool = True) -> Any:
        """Send `request` until it succeeds or `Attempts` says the call is over:
        a call on one `key`, routed by key, to its replicas first and then
        the given addresses; any other, round robin over the given addresses.

        The same request object, hence the same request ids, goes on every
        attempt. Traced: in a span of the call (unless `own_span` is off:
        the caller's span is the call's), each attempt in a span of its own.
        """
        if self._closed:
            raise RuntimeError("this kvclient.AsyncClient is closed")
        tracing = self._tracer()
        if tracing is None or not own_span:
            return await self._send(rpc, request, timeout, key, tracing)
        with tracing.span(CALL_SPANS[rpc], attributes=_CALL_ATTRIBUTES):
            return await self._send(rpc, request, timeout, key, tracing)

    def _tracer(self) -> Tracing | None:
        tracing = self._tracing
        if isinstance(tracing, _Undecided):
            tracing = self._tracing = resolve(self._config.tracing)
        return tracing

    async def _send(self, rpc: Rpc, request: Message, timeout: float | None,
                    key: bytes | None, tracing: Tracing | None) -> Any:
        """`_invoke`'s attempts."""
        addresses: Sequence[str] = self._config.addresses
        rotation = self._rotation
        routed_key: bytes | None = None  # the key whose replicas the call goes to first
        if key is not None:
            table = await self._routing.table(self._config.addresses, self._stub)
            if table is not None:
                replicas = await self._reachable_first(table.replicas_of(key))
                addresses = replicas + tuple(
                    a for a in self._config.addresses if a not in replicas)
                rotation = InOrder(len(addresses))
                routed_key = key
        attempts = Attempts(
            self._config.retry,
            rotation,
            now=time.monotonic(),
            timeout=self._config.call_timeout(timeout),
            rng=self._rng,
            latency=self._attempt_latency,
        )
        while True:
            address = addresses[attempts.address]
            sent = time.monotonic()
            timeout_left = attempts.time_left(sent)
            try:
                if tracing is None:
                    result = await self._attempt(address, rpc, request, timeout_left, attempts)
                else:
                    result = await self._traced_attempt(tracing, address, rpc, request,
                                                        timeout_left, attempts)
            except (grpc.RpcError, errors.KVError) as error:
                delay = attempts.after_failure(error, time.monotonic())
            else:
                self._attempt_latency.observe(time.monotonic() - sent)
                leader = getattr(result, "leader", "")  # leader mode, forwarded
                if leader and routed_key is not None:
                    self._routing.follow(routed_key, leader)
                return result
            await asyncio.sleep(delay)

    async def _reachable_first(self, replicas: tuple[str, ...]) -> tuple[str, ...]:
        """`replicas` in preference order, but those this client cannot reach
        now (their channel failed to connect, or does not connect within
        ROUTED_CONNECT_SECONDS) moved behind the first it can: a replica that
        is down must not cost a call one of its attempts."""
        unreachable: list[str] = []
        for index, address in enumerate(replicas):
            if await self._connects(address):
                return (address, *replicas[index + 1:], *unreachable)
            unreachable.append(address)
        return replicas

    async def _connects(self, address: str) -> bool:
        self._stub(address)  # opens the channel if it is not open yet
        channel = self._channels[address]
        state = channel.get_state(try_to_connect=True)
        if state == grpc.ChannelConnectivity.READY:
            return True
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                     grpc.ChannelConnectivity.SHUTDOWN):
            return False
        try:  # IDLE or CONNECTING: a first call to it, or a reconnection
            await asyncio.wait_for(channel.channel_ready(), ROUTED_CONNECT_SECONDS)
        except TimeoutError:
            return False
        return True

    async def _attempt(self, address: str, rpc: Rpc, request: Message, timeout: float,
                       attempts: Attempts, trace: kv_pb2.TraceContext | None = None) -> Any:
        """One attempt at `address`: over its stream, else unary; `trace`:
        the attempt's span, to send along."""
        link = self._link(address)
        if link is not None and link.supported:
            try:
                return await link.call(rpc, request, timeout, trace)
            except SessionUnsupported:
                # Not a failed attempt: the same one, the way this server knows.
                timeout = attempts.time_left(time.monotonic())
        method = getattr(self._stub(address), rpc)
        if trace is None:
            return await method(request, timeout=timeout)
        return await method(request, timeout=timeout, metadata=metadata_of(trace))

    async def _traced_attempt(self, tracing: Tracing, address: str, rpc: Rpc,
                              request: Message, timeout: float, attempts: Attempts) -> Any:
        """`_attempt` in a span of its own, which the server's span follows."""
        attributes = rpc_attributes(KV_SERVICE, rpc, **address_attributes(address))
        attributes["kvstore.attempt"] = attempts.number
        with tracing.span(f"{KV_SERVICE}/{rpc}", "client", attributes=attributes) as span:
            response = await self._attempt(address, rpc, request, timeout, attempts,
                                           tracing.outgoing(span))
            tracing.ended_with(span, grpc.StatusCode.OK)
            return response

    def _link(self, address: str) -> SessionLink | None:
        if not self._stream:
            return None
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = SessionLink(
                self._stub(address), batch_bytes=self._config.message_batch_bytes,
                batch_operations=self._config.message_batch_operations)
        return link

    def _stub(self, address: str) -> kv_pb2_grpc.KVStub:
        if self._closed:
            raise RuntimeError("this kvclient.AsyncClient is closed")
        stub = self._stubs.get(address)
        if stub is None:
            channel = open_aio_channel(address, self._config.max_message_bytes,
                                       self._config.credentials, self._config.channel)
            stub = kv_pb2_grpc.KVStub(channel)
            self._channels[address] = channel
            self._stubs[address] = stub
        return stub
