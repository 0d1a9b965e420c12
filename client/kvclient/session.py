"""The client's side of KV.Session: many calls multiplexed over one stream
per address.

`SessionLink` is an address's stream: opened on first use, and again on
the first use after it broke. `SessionStream` is one opened stream (one
gRPC call) and the operations in flight on it:

- a call becomes an operation with the next id and the time left of the
  call as its deadline; the calls made in the same turn of the event loop
  go in one message, or several when they pass its bounds in bytes or in
  operations (the writer task wakes through an `asyncio.Event`,
  which resumes it with `call_soon`: no timer, so no added latency at low
  load), and those made while it writes go in the next;
- results come back in any order and complete their calls by id;
- a call whose deadline passes raises DeadlineExceeded; the server holds
  the same deadline and stops the operation itself. A call cancelled by
  its caller sends a cancel for its operation if it was sent (the server
  cancels it, as it would a cancelled unary call), and is dropped unsent
  otherwise; either way nothing else on the stream is touched;
- when the stream breaks, only the operations in flight on it fail, each
  with the stream's status as a typed error, for the caller's retry rules
  to send elsewhere; when the server answers UNIMPLEMENTED (it has no
  Session method: an older node, a test's fake), they fail with
  `SessionUnsupported` and the link stays unsupported, for the caller to
  use the unary methods there from then on.

Owns its tasks (a reader and a writer per stream): `close()` cancels and
awaits them. Use it from one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from kvclient import errors, framing, requests
from kvclient.pb import kv_pb2, kv_pb2_grpc
from kvclient.requests import Rpc


# What grpc.aio sets as a call's status when sending a message fails.
_LOCAL_SEND_FAILURE = "Internal error from Core"
# How long a new stream waits for the server's headers before it sends.
_HEADERS_WAIT_SECONDS = 1.0


class SessionUnsupported(Exception):
    """The server has no KV.Session: send this call, and the next ones
    there, as unary calls."""


class SessionStream:
    """One KV.Session call and its operations in flight; useless once `broken`."""

    def __init__(self, stub: kv_pb2_grpc.KVStub, *,
                 batch_bytes: int = framing.MESSAGE_BUDGET_BYTES,
                 batch_operations: int = framing.MESSAGE_MAX_ITEMS) -> None:
        self._call: Any = stub.Session()
        self._batch_bytes = batch_bytes
        self._batch_operations = batch_operations
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[kv_pb2.SessionResult]] = {}
        self._outbox: list[kv_pb2.SessionOperation] = []
        self._cancels: list[int] = []
        self._last_sent = 0  # ids grow, so an id at most this was sent
        self._wake = asyncio.Event()
        self.broken = False
        self.unsupported = False
        self._reader = asyncio.ensure_future(self._read())
        self._writer = asyncio.ensure_future(self._write())

    async def call(self, rpc: Rpc, request: Message, timeout: float,
                   trace: kv_pb2.TraceContext | None = None) -> Any:
        """The response of `rpc(request)`, sent as an operation of this
        stream (with `trace`, the caller's span, when it traces)."""
        op_id = next(self._ids)
        future: asyncio.Future[kv_pb2.SessionResult] = (
            asyncio.get_running_loop().create_future())
        self._pending[op_id] = future
        self._outbox.append(requests.session_operation(rpc, request, op_id, timeout, trace))
        self._wake.set()
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                result = await future
        except TimeoutError:
            if not deadline.expired():
                raise  # the operation's own DeadlineExceeded, a TimeoutError too
            self._pending.pop(op_id, None)
            raise errors.DeadlineExceeded(
                f"no answer within the {timeout:.3g} s left of the call") from None
        except asyncio.CancelledError:
            if self._pending.pop(op_id, None) is not None and op_id <= self._last_sent:
                self._cancels.append(op_id)
                self._wake.set()
            raise
        return requests.session_response(rpc, result)

    async def close(self) -> None:
        """Cancel the stream; its calls in flight raise Cancelled."""
        self._break(errors.Cancelled("the client was closed"))
        for task in (self._reader, self._writer):
            task.cancel()
        await asyncio.gather(self._reader, self._writer, return_exceptions=True)

    async def _read(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    self._break(errors.Unavailable(
                        "the server ended the KV.Session stream with operations unanswered"))
                    return
                for result in response.results:
                    future = self._pending.pop(result.id, None)
                    if future is not None and not future.done():
                        future.set_result(result)
        except grpc.RpcError as error:
            self._break(error)
        except Exception as error:  # never leave the calls in flight waiting
            self._break(errors.Internal(f"reading the KV.Session stream failed: {error!r}"))

    async def _write(self) -> None:
        try:
            # Nothing goes out before the server's headers (a kvstore server
            # sends them at once): a server without Session ends the call at
            # once, and a message sent into that end would turn its
            # UNIMPLEMENTED into a local INTERNAL. Bounded, for a server that
            # sends its headers late.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_HEADERS_WAIT_SECONDS):
                    await self._call.initial_metadata()
            if self._call.done():
                return  # the reader reports how it ended
            while True:
                await self._wake.wait()
                self._wake.clear()
                # Skip the calls that gave up before their operation was sent.
                operations = [op for op in self._outbox if op.id in self._pending]
                self._outbox = []
                cancels, self._cancels = self._cancels, []
                if operations:
                    self._last_sent = operations[-1].id
                for run in framing.pack(operations, self._batch_bytes, self._batch_operations):
                    await self._call.write(kv_pb2.SessionRequest(operations=run, cancel=cancels))
                    cancels = []
                if cancels:
                    await self._call.write(kv_pb2.SessionRequest(cancel=cancels))
        except Exception as error:
            # A write into a stream that has ended fails one way or another
            # (InvalidStateError, an RpcError); the reader then reports how
            # it ended.
            if not self._call.done():
                self._break(errors.Internal(f"writing the KV.Session stream failed: {error!r}"))

    def _break(self, cause: grpc.RpcError | errors.KVError) -> None:
        """Fail every operation in flight with the stream's end, once."""
        if self.broken:
            return
        self.broken = True
        self.unsupported = (isinstance(cause, grpc.RpcError)
                            and errors.status_of(cause) == grpc.StatusCode.UNIMPLEMENTED)
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self._failure(cause))
        self._call.cancel()
        self._writer.cancel()

    def _failure(self, cause: grpc.RpcError | errors.KVError) -> BaseException:
        """A fresh exception per operation (each gets its own traceback)."""
        if self.unsupported:
            return SessionUnsupported()
        if isinstance(cause, errors.KVError):
            return errors.error_for(cause.code, cause.details)
        typed = errors.from_rpc_error(cause)
        if typed.code == grpc.StatusCode.INTERNAL and typed.details == _LOCAL_SEND_FAILURE:
            # The server did not say this: grpc.aio reports a message it
            # could not send because the stream had ended as INTERNAL,
            # whatever the real end (a node killed, a stop). The operations
            # may or may not have arrived, as with a call cut off.
            typed = errors.Unavailable("the KV.Session stream broke while sending")
        typed.__cause__ = cause
        return typed


class SessionLink:
    """The KV.Session stream of one address, (re)opened when a call needs it."""

    def __init__(self, stub: kv_pb2_grpc.KVStub, *,
                 batch_bytes: int = framing.MESSAGE_BUDGET_BYTES,
                 batch_operations: int = framing.MESSAGE_MAX_ITEMS) -> None:
        self._stub = stub
        self._batch_bytes = batch_bytes
        self._batch_operations = batch_operations
        self._stream: SessionStream | None = None
        self.supported = True

    async def call(self, rpc: Rpc, request: Message, timeout: float,
                   trace: kv_pb2.TraceContext | None = None) -> Any:
        """As `SessionStream.call`; SessionUnsupported (then for good) when
        the server has no KV.Session."""
        if not self.supported:
            raise SessionUnsupported()
        stream = self._stream
        if stream is None or stream.broken:
            stream = self._stream = SessionStream(self._stub, batch_bytes=self._batch_bytes,
                                                  batch_operations=self._batch_operations)
        try:
            return await stream.call(rpc, request, timeout, trace)
        except SessionUnsupported:
            self.supported = False
            raise

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
