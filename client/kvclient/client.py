"""The blocking client: `kvclient.Client`.

A blocking face on `AsyncClient`: the client starts, on its first call, an
asyncio event loop of its own in a daemon thread, and each method submits
the asyncio client's coroutine to that loop and waits for its result.

Why this design, rather than a blocking gRPC channel and a streaming call
fed from a queue: the stream needs a reader, a writer, futures by
operation id, per-operation deadlines and cancellation, and the fallback to
unary calls; written once, on asyncio, both clients behave alike by
construction. Thread safety comes from the loop: every piece of client
state is touched only on its thread, and calls from many threads at once
share the stream and go out together in its messages. The price is a
hand-off between threads per call (tens of microseconds, against the
hundreds a gRPC call costs).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from kvclient import fork_guard, framing
from kvclient.async_client import AsyncClient
from kvclient.channel_settings import DEFAULT_MAX_RECONNECT_BACKOFF, Keepalive, RawOptions
from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT
from kvclient.consistency import Level
from kvclient.requests import BytesLike, Data, PutItems
from kvclient.results import GetResult, Resolver, WriteResult
from kvclient.security import TLS
from kvclient.tracing import TracingOption

# How long close() lets grpc's own tasks for the closed calls end before it
# cancels them (they end within a loop turn or two once the channel closes).
CLOSE_TASKS_SECONDS = 1.0

Result = TypeVar("Result")


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

    Token-aware routing: given node addresses, the client asks one of them
    for the cluster's topology (KV.Topology) and sends each call on one key
    straight to that key's replicas, the preferred one first, then the given
    addresses; batches go round robin. Given coordinators, it goes through
    them (their cache and its promise apply) unless `token_aware=True`;
    `token_aware=False` never routes.

    Calls travel as operations of one KV.Session stream per address, those
    made together sharing its messages; an address that has no Session
    (UNIMPLEMENTED) gets the unary calls instead, for good. `stream=False`:
    always the unary calls. One message carries at most
    `message_batch_operations` operations and `message_batch_bytes` bytes
    of them (an operation larger than that goes alone).

    `tls`: a `kvclient.TLS` (the CA to check servers against, and a client
    certificate and key for mTLS; each PEM bytes or a file path, read again
    whenever a connection opens, so rotated files are picked up). `token`:
    a bearer token sent as `authorization: Bearer TOKEN` on every call.

    Connections: `keepalive` (a `kvclient.Keepalive`: a ping after `time`
    seconds without a frame from the server, the connection closed, and
    the calls on it failed UNAVAILABLE and retried elsewhere, when one is
    not acknowledged within `timeout`; None: no keepalive pings, as gRPC's
    default), `max_reconnect_backoff` (seconds, the longest wait between
    two attempts to reconnect to a server), `channel_options` (raw gRPC
    channel arguments, a dict or (name, value) pairs; those kvclient has
    an argument for are refused). See `kvclient.channel_settings`.

    Tracing (OpenTelemetry): `tracing=None` traces each call when the
    application has set an SDK TracerProvider as the global one by the
    client's first call; True always, through the global one; False
    never; or a TracerProvider to trace through. The span of a call made
    inside one of the application's is its child. See `kvclient.tracing`.

    Errors are the typed exceptions of `kvclient.errors`; arguments of the
    wrong type raise TypeError. Safe to use from several threads.
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
        # Checks the arguments now; opens nothing until the first call.
        self._client = AsyncClient(
            addresses,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            resolver=resolver,
            max_message_bytes=max_message_bytes,
            stream=stream,
            token_aware=token_aware,
            tls=tls,
            token=token,
            message_batch_bytes=message_batch_bytes,
            message_batch_operations=message_batch_operations,
            keepalive=keepalive,
            max_reconnect_backoff=max_reconnect_backoff,
            channel_options=channel_options,
            tracing=tracing,
        )
        self._addresses = list(addresses) if not isinstance(addresses, str) else [addresses]
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop_pid = 0
        self._closed = False

    def get(self, key: Data, *, r: Level = None, stale: bool = False,
            timeout: float | None = None) -> GetResult:
        """The value(s) and causal context of `key`; `.value` is None when absent.
        Leader mode: linearizable, or `stale=True` from any replica."""
        return self._run(self._client.get, key, r=r, stale=stale, timeout=timeout)

    def put(
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
        return self._run(self._client.put, key, value, w=w, context=context, timeout=timeout,
                         sloppy=sloppy, if_version=if_version)

    def delete(
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
        return self._run(self._client.delete, key, w=w, context=context, timeout=timeout,
                         sloppy=sloppy, if_version=if_version)

    def get_many(
        self, keys: Iterable[Data], *, r: Level = None, stale: bool = False,
        timeout: float | None = None
    ) -> list[GetResult]:
        """One GetResult per key, in order, in one round trip (`stale` for all)."""
        return self._run(self._client.get_many, keys, r=r, stale=stale, timeout=timeout)

    def put_many(
        self, items: PutItems, *, w: Level = None, timeout: float | None = None
    ) -> list[WriteResult]:
        """Write a dict key -> value, or (key, value[, context]) tuples, or
        PutItems (with an if_version each); results in order."""
        return self._run(self._client.put_many, items, w=w, timeout=timeout)

    def delete_many(
        self, keys: Iterable[Data], *, w: Level = None, timeout: float | None = None
    ) -> list[WriteResult]:
        """Delete every key (tombstones); results in order, sent together."""
        return self._run(self._client.delete_many, keys, w=w, timeout=timeout)

    def ping(self, payload: Data = b"", *, timeout: float | None = None) -> bytes:
        """Echo `payload` through one server, without touching storage."""
        return self._run(self._client.ping, payload, timeout=timeout)

    def close(self) -> None:
        """Close every stream and channel, and stop the loop's thread; calls
        in flight are cancelled."""
        with self._lock:
            self._closed = True
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if self._loop_pid != os.getpid():
            return  # a child of fork(): the loop and its channels are the parent's
        asyncio.run_coroutine_threadsafe(self._close_on_loop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    async def _close_on_loop(self) -> None:
        """Close the asyncio client, then let the tasks grpc still runs for
        the closed calls end (a task destroyed with the loop while pending
        is reported on stderr, as asyncio.run avoids by cancelling them)."""
        await self._client.close()
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        if not others:
            return
        _, pending = await asyncio.wait(others, timeout=CLOSE_TASKS_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

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
        return f"Client({self._addresses!r})"

    def _run(self, method: Callable[..., Coroutine[Any, Any, Result]], *args: Any,
             **kwargs: Any) -> Result:
        """`method(*args, **kwargs)` run on the client's loop; its result or error."""
        loop = self._running_loop()  # first: a closed client creates no coroutine
        future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt while waiting: stop the call too
            raise

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("this kvclient.Client is closed")
            if self._loop is not None and self._loop_pid != os.getpid():
                # A child of fork(): the loop's thread stayed in the parent.
                raise RuntimeError(fork_guard.FORKED_MESSAGE)
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="kvclient", daemon=True)
                thread.start()
                self._loop, self._thread, self._loop_pid = loop, thread, os.getpid()
            return self._loop
