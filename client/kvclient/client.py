"""The blocking client: `kvclient.Client`.

A thin shell. It owns its gRPC channels (one per address, opened at
construction and reused) and the loop that sends an attempt, sleeps the
backoff and tries again. What to send, what a response means, when to retry
and where to go next are decided by `requests`, `retry` and `config`, shared
with the asyncio client. Safe to use from several threads.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import grpc
from google.protobuf.message import Message

from kvclient import requests
from kvclient.channels import open_channel
from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT, ClientConfig
from kvclient.consistency import Level
from kvclient.pb import kv_pb2_grpc
from kvclient.requests import BytesLike, PutItems, Rpc
from kvclient.results import GetResult, Resolver, WriteResult
from kvclient.retry import AddressRotation, Attempts


class Client:
    """A blocking client of a kvstore cluster.

    `addresses`: "host:port" of coordinators or nodes (a list, or one str).
    Calls go round robin across them; an UNAVAILABLE answer moves the call to
    the next one. `timeout` is each call's default overall deadline in
    seconds, retries included. Calls that fail with UNAVAILABLE or ABORTED are
    retried up to `max_attempts` times with exponential backoff and full
    jitter (`backoff_base` * 2**n, at most `backoff_cap`); writes too, since
    each carries a request id the server deduplicates on. `resolver` merges
    siblings into `GetResult.value` (default: the newest sibling).

    Errors are the typed exceptions of `kvclient.errors`; arguments of the
    wrong type raise TypeError.
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
        self._channels = [
            open_channel(address, self._config.max_message_bytes)
            for address in self._config.addresses
        ]
        self._stubs = [kv_pb2_grpc.KVStub(channel) for channel in self._channels]
        self._closed = False

    def get(self, key: BytesLike, *, r: Level = None, timeout: float | None = None) -> GetResult:
        """The value(s) and causal context of `key`; `.value` is None when absent."""
        response = self._invoke("Get", requests.get_request(key, r), timeout)
        return requests.get_result(response, self._config.resolver)

    def put(
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
        return requests.put_result(self._invoke("Put", request, timeout))

    def delete(
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
        return requests.delete_result(self._invoke("Delete", request, timeout))

    def get_many(
        self, keys: Iterable[BytesLike], *, r: Level = None, timeout: float | None = None
    ) -> list[GetResult]:
        """One GetResult per key, in order, in one round trip."""
        request = requests.get_many_request(keys, r)
        self._config.call_timeout(timeout)  # checked even when there is nothing to send
        if not request.keys:
            return []
        response = self._invoke("GetMany", request, timeout)
        return requests.get_many_results(request, response, self._config.resolver)

    def put_many(
        self, items: PutItems, *, w: Level = None, timeout: float | None = None
    ) -> list[WriteResult]:
        """Write a dict key -> value, or (key, value[, context]) tuples; results in order."""
        request = requests.put_many_request(items, w=w)
        self._config.call_timeout(timeout)  # checked even when there is nothing to send
        if not request.puts:
            return []
        return requests.put_many_results(request, self._invoke("PutMany", request, timeout))

    def ping(self, payload: BytesLike = b"", *, timeout: float | None = None) -> bytes:
        """Echo `payload` through one server, without touching storage."""
        response = self._invoke("Ping", requests.ping_request(payload), timeout)
        return requests.ping_payload(response)

    def close(self) -> None:
        """Close every channel; calls in flight are cancelled."""
        self._closed = True
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({list(self._config.addresses)!r})"

    def _invoke(self, rpc: Rpc, request: Message, timeout: float | None) -> Any:
        """Send `request` until it succeeds or `Attempts` says the call is over.

        The same request object, hence the same request ids, goes on every attempt.
        """
        if self._closed:
            raise RuntimeError("this kvclient.Client is closed")
        attempts = Attempts(
            self._config.retry,
            self._rotation,
            now=time.monotonic(),
            timeout=self._config.call_timeout(timeout),
            rng=self._rng,
        )
        while True:
            method = getattr(self._stubs[attempts.address], rpc)
            try:
                return method(request, timeout=attempts.time_left(time.monotonic()))
            except grpc.RpcError as error:
                delay = attempts.after_failure(error, time.monotonic())
            time.sleep(delay)
