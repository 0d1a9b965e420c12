"""One KV.Session stream, the server's side: its reader, its operations in
flight and its writer.

Owns the stream's mechanics, never what an operation does: `perform` (from
`servicers.KVService`) runs one operation exactly as the unary call of its
kind would and turns every error into the result's status. Here:

- the reader starts each operation as a task of the stream's own task
  group, at most `max_in_flight` at once; past that it stops reading, so
  gRPC's flow control holds the client back instead of work piling up here;
- an operation the client cancels is cancelled, and sends no result; when
  the stream ends (the client went away), every operation still running is;
- the writer sends results as they complete, out of order: the results
  that complete in the same turn of the event loop go in one message (it
  wakes through an `asyncio.Event`, which resumes it with `call_soon`, so
  there is no timer), and those that complete while it is writing go in
  the next;
- the stream ends OK once the client has closed its side and every
  operation is answered; after `stop()`, UNAVAILABLE; after a protocol
  error (a message that is not a SessionRequest, an id already in flight),
  INVALID_ARGUMENT. In the last two cases the operations already started
  are answered first; those not yet read were never started, so the client
  may send them elsewhere.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from kvclient import framing
from kvclient.pb import kv_pb2

Perform = Callable[[kv_pb2.SessionOperation], Awaitable[kv_pb2.SessionResult]]

STOPPING = "the server is stopping; send the operations it did not answer to another address"


class ProtocolError(Exception):
    """The client broke the stream's rules; the stream ends INVALID_ARGUMENT."""


class SessionStream:
    """`await SessionStream(perform, max_in_flight=...).serve(requests, context)`."""

    def __init__(self, perform: Perform, *, max_in_flight: int,
                 message_budget: int = framing.MESSAGE_BUDGET_BYTES) -> None:
        self._perform = perform
        self._slots = asyncio.Semaphore(max_in_flight)
        self._budget = message_budget
        self._running: dict[int, asyncio.Task[None]] = {}
        self._outbox: list[kv_pb2.SessionResult] = []
        self._wake = asyncio.Event()
        self._reading = True
        self._reader: asyncio.Task[None] | None = None
        self._end: tuple[grpc.StatusCode, str] | None = None

    def stop(self) -> None:
        """Read no more; answer the operations started, then end UNAVAILABLE."""
        if self._end is None:
            self._end = (grpc.StatusCode.UNAVAILABLE, STOPPING)
        if self._reader is not None:
            self._reader.cancel()

    async def serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        # Headers at once: a client waits for them before its first message,
        # so that a server without Session (which answers UNIMPLEMENTED at
        # once, headers and status together) is told apart reliably.
        await context.send_initial_metadata(())
        async with asyncio.TaskGroup() as tasks:
            if self._end is None:
                self._reader = tasks.create_task(self._read(requests, tasks))
            else:
                self._reading = False
            await self._write(context)
        if self._end is not None:
            await context.abort(*self._end)

    async def _read(self, requests: AsyncIterator[Any], tasks: asyncio.TaskGroup) -> None:
        try:
            async for message in requests:
                if not isinstance(message, kv_pb2.SessionRequest):
                    raise ProtocolError(f"a Session message is not a valid SessionRequest: "
                                        f"{getattr(message, 'error', message)}")
                for op_id in message.cancel:
                    running = self._running.get(op_id)
                    if running is not None:
                        running.cancel()
                for operation in message.operations:
                    await self._slots.acquire()
                    if operation.id in self._running:
                        self._slots.release()
                        raise ProtocolError(f"operation id {operation.id} is already in flight "
                                            "on this stream; ids must be unique among those")
                    task = tasks.create_task(self._run(operation))
                    self._running[operation.id] = task
                    task.add_done_callback(functools.partial(self._done, operation.id))
        except ProtocolError as exc:
            if self._end is None:
                self._end = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            self._reading = False
            self._wake.set()

    async def _run(self, operation: kv_pb2.SessionOperation) -> None:
        result = await self._perform(operation)
        result.id = operation.id
        self._outbox.append(result)

    def _done(self, op_id: int, task: asyncio.Task[None]) -> None:
        # A callback, not a `finally`: it also runs for a task cancelled
        # before it started.
        self._slots.release()
        del self._running[op_id]
        self._wake.set()

    async def _write(self, context: grpc.aio.ServicerContext) -> None:
        while self._reading or self._running or self._outbox:
            if not self._outbox:
                await self._wake.wait()
                self._wake.clear()
                continue
            results, self._outbox = self._outbox, []
            for run in framing.pack(results, self._budget):
                await context.write(kv_pb2.SessionResponse(results=run))
