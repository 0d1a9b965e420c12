"""The asyncio client: `kvclient.AsyncClient`.

The same shell as `client.Client` on grpc.aio: it owns its channels (one per
address, opened on first use so they belong to the running event loop, then
reused) and the loop that sends an attempt, awaits the backoff and tries
again. Requests, responses, retries and address rotation come from the same
pure modules as the blocking client's.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from kvclient import requests
from kvclient.channels import open_aio_channel
from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT, ClientConfig
from kvclient.consistency import Level
from kvclient.pb import kv_pb2_grpc
from kvclient.requests import BytesLike, PutItems, Rpc
from kvclient.results import GetResult, Resolver, WriteResult
from kvclient.retry import AddressRotation, Attempts


class AsyncClient:
    """An asyncio client of a kvstore cluster; arguments and behaviour as `Client`.

    Use it from one event loop: its channels are opened in the loop of its
    first call. `close()` is a coroutine; `async with` calls it.
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
    ) -> None:
        self._config = ClientConfig.create(
            addresses,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            resolver=resolver,
            max_message_bytes=max_message_bytes,
        )
        self._rotation = AddressRotation(len(self._config.addresses))
        self._rng = random.Random()
        self._channels: list[grpc.aio.Channel | None] = [None] * len(self._config.addresses)
        self._stubs: list[kv_pb2_grpc.KVStub | None] = [None] * len(self._config.addresses)
        self._closed = False

    async def get(
        self, key: BytesLike, *, r: Level = None, timeout: float | None = None
    ) -> GetResult:
        """The value(s) and causal context of `key`; `.value` is None when absent."""
        response = await self._invoke("Get", requests.get_request(key, r), timeout)
        return requests.get_result(response, self._config.resolver)

    async def put(
        self,
        key: BytesLike,
        value: BytesLike,
        *,
        w: Level = None,
        context: BytesLike | None = None,
        timeout: float | None = None,
        sloppy: bool = True,
    ) -> WriteResult:
        """Write `value`; pass the `context` of a get to replace what it read.
        `sloppy=False`: fail rather than let stand-in nodes hold hints for
        replicas that are down."""
        request = requests.put_request(
            key, value, context=context, w=w, request_id=requests.new_request_id(),
            sloppy=sloppy,
        )
        return requests.put_result(await self._invoke("Put", request, timeout))

    async def delete(
        self,
        key: BytesLike,
        *,
        w: Level = None,
        context: BytesLike | None = None,
        timeout: float | None = None,
        sloppy: bool = True,
    ) -> WriteResult:
        """Delete `key` (a tombstone); pass the `context` of a get to replace what it read."""
        request = requests.delete_request(
            key, context=context, w=w, request_id=requests.new_request_id(), sloppy=sloppy
        )
        return requests.delete_result(await self._invoke("Delete", request, timeout))

    async def get_many(
        self, keys: Iterable[BytesLike], *, r: Level = None, timeout: float | None = None
    ) -> list[GetResult]:
        """One GetResult per key, in order, in one round trip."""
        request = requests.get_many_request(keys, r)
        self._config.call_timeout(timeout)  # checked even when there is nothing to send
        if not request.keys:
            return []
        response = await self._invoke("GetMany", request, timeout)
        return requests.get_many_results(request, response, self._config.resolver)

    async def put_many(
        self, items: PutItems, *, w: Level = None, timeout: float | None = None
    ) -> list[WriteResult]:
        """Write a dict key -> value, or (key, value[, context]) tuples; results in order."""
        request = requests.put_many_request(items, w=w)
        self._config.call_timeout(timeout)  # checked even when there is nothing to send
        if not request.puts:
            return []
        return requests.put_many_results(request, await self._invoke("PutMany", request, timeout))

    async def ping(self, payload: BytesLike = b"", *, timeout: float | None = None) -> bytes:
        """Echo `payload` through one server, without touching storage."""
        response = await self._invoke("Ping", requests.ping_request(payload), timeout)
        return requests.ping_payload(response)

    async def close(self) -> None:
        """Close every open channel; calls in flight are cancelled."""
        self._closed = True
        channels = [channel for channel in self._channels if channel is not None]
        self._channels = [None] * len(self._channels)
        self._stubs = [None] * len(self._stubs)
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

    async def _invoke(self, rpc: Rpc, request: Message, timeout: float | None) -> Any:
        """Send `request` until it succeeds or `Attempts` says the call is over.

        The same request object, hence the same request ids, goes on every attempt.
        """
        if self._closed:
            raise RuntimeError("this kvclient.AsyncClient is closed")
        attempts = Attempts(
            self._config.retry,
            self._rotation,
            now=time.monotonic(),
            timeout=self._config.call_timeout(timeout),
            rng=self._rng,
        )
        while True:
            method = getattr(self._stub(attempts.address), rpc)
            try:
                return await method(request, timeout=attempts.time_left(time.monotonic()))
            except grpc.RpcError as error:
                delay = attempts.after_failure(error, time.monotonic())
            await asyncio.sleep(delay)

    def _stub(self, index: int) -> kv_pb2_grpc.KVStub:
        stub = self._stubs[index]
        if stub is None:
            channel = open_aio_channel(
                self._config.addresses[index], self._config.max_message_bytes
            )
            stub = kv_pb2_grpc.KVStub(channel)
            self._channels[index] = channel
            self._stubs[index] = stub
        return stub
