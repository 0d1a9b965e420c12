"""One KV.Session stream, the server's side: its reader, its operations in
flight and its writer.

Owns the stream's mechanics, never what an operation does: `admit` (from
`servicers.KVService`) admits an operation or answers its refusal at once
(admission control, `kvstore.rpc.admission`), and `perform` runs an
admitted one exactly as the unary call of its kind would, turning every
error into the result's status. Here:

- the reader admits each operation as it reads it and starts the admitted
  ones as tasks of the stream's own task group; a refused one is answered
  at once (RESOURCE_EXHAUSTED, OVERLOADED), without a task;
- while `max_unanswered` operations are unanswered (running, or answered
  and not yet sent: a client that does not read its answers), the reader
  stops reading, so gRPC's flow control holds the client back instead of
  answers piling up here;
- an operation the client cancels is cancelled, and sends no result; when
  the stream ends (the client went away), every operation still running is;
- the writer sends results as they complete, out of order: the results
  that complete in the same turn of the event loop go in one message, or
  several when they pass its bounds in bytes or in results (it wakes
  through an `asyncio.Event`, which resumes it with `call_soon`, so there
  is no timer), and those that complete while it is writing go in the next;
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
from kvstore.rpc.admission import Ticket

Perform = Callable[[kv_pb2.SessionOperation, "Ticket"], Awaitable[kv_pb2.SessionResult]]
# An operation admitted (the ticket to release once it is done) or refused
# (its answer, at once).
Admit = Callable[[kv_pb2.SessionOperation], "Ticket | kv_pb2.SessionResult"]
# Told of each message: "received" or "sent", and how many operations or results it held.
OnMessage = Callable[[str, int], None]

STOPPING = "the server is stopping; send the operations it did not answer to another address"


class ProtocolError(Exception):
    """The client broke the stream's rules; the stream ends INVALID_ARGUMENT."""


class SessionStream:
    """`await SessionStream(perform, admit=..., max_unanswered=...).serve(requests, context)`."""

    def __init__(self, perform: Perform, *, admit: Admit, max_unanswered: int,
                 message_budget: int = framing.MESSAGE_BUDGET_BYTES,
                 message_max_items: int = framing.MESSAGE_MAX_ITEMS,
                 on_message: OnMessage = lambda direction, items: None) -> None:
        self._perform = perform
        self._on_message = on_message
        self._admit = admit
        self._max_unanswered = max_unanswered
        self._budget = message_budget
        self._max_items = message_max_items
        self._running: dict[int, asyncio.Task[None]] = {}
        self._outbox: list[kv_pb2.SessionResult] = []
        self._wake = asyncio.Event()  # results to send, or the end
        self._room = asyncio.Event()  # fewer than max_unanswered unanswered
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
                self._on_message("received", len(message.operations))
                for op_id in message.cancel:
                    running = self._running.get(op_id)
                    if running is not None:
                        running.cancel()
                for operation in message.operations:
                    while len(self._running) + len(self._outbox) >= self._max_unanswered:
                        self._room.clear()
                        await self._room.wait()
                    if operation.id in self._running:
                        raise ProtocolError(f"operation id {operation.id} is already in flight "
                                            "on this stream; ids must be unique among those")
                    admitted = self._admit(operation)
                    if isinstance(admitted, kv_pb2.SessionResult):
                        admitted.id = operation.id
                        self._outbox.append(admitted)
                        self._wake.set()
                        continue
                    task = tasks.create_task(self._run(operation, admitted))
                    self._running[operation.id] = task
                    task.add_done_callback(functools.partial(self._done, operation.id, admitted))
        except ProtocolError as exc:
            if self._end is None:
                self._end = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        finally:
            self._reading = False
            self._wake.set()

    async def _run(self, operation: kv_pb2.SessionOperation, ticket: Ticket) -> None:
        result = await self._perform(operation, ticket)
        result.id = operation.id
        self._outbox.append(result)

    def _done(self, op_id: int, ticket: Ticket, task: asyncio.Task[None]) -> None:
        # A callback, not a `finally`: it also runs for a task cancelled
        # before it started.
        ticket.release()
        del self._running[op_id]
        self._wake.set()
        self._room.set()

    async def _write(self, context: grpc.aio.ServicerContext) -> None:
        while self._reading or self._running or self._outbox:
            if not self._outbox:
                await self._wake.wait()
                self._wake.clear()
                continue
            results, self._outbox = self._outbox, []
            for run in framing.pack(results, self._budget, self._max_items):
                await context.write(kv_pb2.SessionResponse(results=run))
                self._on_message("sent", len(run))
            self._room.set()
