"""The replica's side of one `Replica.Stream`: read batches of operations,
run each, and send the answers back as they complete, by id.

Each operation is started as it is read, through the same per-operation
code as `Replica.Batch` (`ReplicaService`): reads and tree questions are
answered at once, writes once their commit completes, and an operation
with id 0 (one way: leader mode's Raft envelopes) never. Answers that complete
in one event-loop turn go out in one message (the writer wakes on the first
and finds the others queued), bounded in count and bytes like every batch.

While `max_in_flight` operations of a stream run, or its messages still
being answered hold `max_in_flight_bytes` (a message's bytes are held until
the last of its operations is answered), the stream is not read, so gRPC's
flow control pushes back on the sender.

Operations still running when the stream breaks are allowed to finish, not
cancelled: their tasks belong to the service, not to the stream. Nobody
hears the answer either way, and a write the group committer has taken
commits regardless; but a write's bookkeeping after its commit (the hint
counts tombstone collection relies on) runs only if its task does, so a
cancelled one could leave a durable hint uncounted. A stream that ends
normally (the peer closes it, or the service stops it) answers every
operation it read before it returns.
"""

import asyncio
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kvclient.pb import replica_pb2
from kvstore.errors import KVStoreError
from kvstore.rpc.batches import always_live, encode_batch, framed_size, take_batch

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024  # well under any message limit (4 MiB at least)

METHOD = "Replica.Stream"

# An operation started: its result now, or a coroutine that returns it (and never raises).
Started = replica_pb2.ReplicaResult | Coroutine[Any, Any, replica_pb2.ReplicaResult]


@dataclass(frozen=True)
class StreamSettings:
    max_in_flight: int = 1024  # operations of one stream running at once; beyond, it is not read
    max_batch: int = 256  # answers in one message at most
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES  # their bytes, unless one alone is more
    max_in_flight_bytes: int = 64 * 1024 * 1024  # of messages read and not yet answered in full


class _Message:
    """One message read: when, its bytes, and how many of its operations are
    unanswered (it is counted in the metrics, and its bytes let go, once all
    are)."""

    __slots__ = ("received", "unanswered", "size")

    def __init__(self, received: float, unanswered: int, size: int) -> None:
        self.received = received
        self.unanswered = unanswered
        self.size = size


class StreamSession:
    """`await StreamSession(...).serve(requests, context)` serves one stream
    until the peer closes it or `stop()` is called; the refusal it ended
    with (a malformed message), if any, for the caller to turn into the
    stream's status."""

    def __init__(self, start: Callable[[replica_pb2.ReplicaOp], Started],
                 spawn: Callable[[Coroutine[Any, Any, replica_pb2.ReplicaResult]],
                                 "asyncio.Task[replica_pb2.ReplicaResult]"],
                 settings: StreamSettings,
                 observe: Callable[[str, str, float], None],
                 on_message: Callable[[str, int], None] = lambda direction, items: None,
                 ) -> None:
        self._start = start
        self._on_message = on_message  # ("received" or "sent", operations or answers in it)
        self._spawn = spawn  # tasks owned by the service: they outlive a broken stream
        self._settings = settings
        self._observe = observe
        self._answers: deque[bytes] = deque()  # serialized results, not yet sent
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._reading = True
        self._stopped = False
        self._refusal: KVStoreError | None = None
        self._wake = asyncio.Event()  # answers to send, or the end
        self._room = asyncio.Event()  # in flight fell below the bound, or stopped

    def stop(self) -> None:
        """Read no more; answer what was read, then end the stream."""
        self._stopped = True
        self._wake.set()
        self._room.set()

    async def serve(self, requests: AsyncIterator[replica_pb2.ReplicaBatchRequest],
                    context: Any) -> KVStoreError | None:
        async with asyncio.TaskGroup() as tasks:
            reader = tasks.create_task(self._read(requests))
            try:
                await self._send_answers(context)
            finally:
                reader.cancel()  # blocked on a message that will not be run
        return self._refusal

    async def _read(self, requests: AsyncIterator[replica_pb2.ReplicaBatchRequest]) -> None:
        try:
            async for request in requests:
                if self._stopped:
                    return
                self._on_message("received", len(request.ops))
                self._run(request)
                while self._full() and not self._stopped:
                    self._room.clear()
                    await self._room.wait()
        except KVStoreError as exc:
            self._refusal = exc
        finally:
            self._reading = False
            self._wake.set()

    def _full(self) -> bool:
        settings = self._settings
        return (self._in_flight >= settings.max_in_flight
                or self._in_flight_bytes >= settings.max_in_flight_bytes)

    def _run(self, request: replica_pb2.ReplicaBatchRequest) -> None:
        # An operation with id 0 is one way: run, never answered. A message
        # with nothing to answer holds no bytes.
        answered = sum(1 for op in request.ops if op.id)
        message = _Message(time.perf_counter(), answered, request.ByteSize() if answered else 0)
        self._in_flight_bytes += message.size
        for op in request.ops:
            started = self._start(op)
            if not op.id:
                if not isinstance(started, replica_pb2.ReplicaResult):
                    self._spawn(started)  # it finishes on its own; nobody hears of it
            elif isinstance(started, replica_pb2.ReplicaResult):
                self._answer(op.id, message, started)
            else:
                self._in_flight += 1
                task = self._spawn(started)
                task.add_done_callback(functools.partial(self._finished, op.id, message))

    def _finished(self, op_id: int, message: _Message,
                  task: "asyncio.Task[replica_pb2.ReplicaResult]") -> None:
        self._in_flight -= 1
        if task.cancelled():  # the node is going down before the write could finish
            self._answered(message)
        else:
            self._answer(op_id, message, task.result())
        if not self._full():
            self._room.set()

    def _answer(self, op_id: int, message: _Message, result: replica_pb2.ReplicaResult) -> None:
        result.id = op_id
        self._answers.append(result.SerializeToString())
        self._wake.set()
        if self._answered(message):
            self._observe(METHOD, "OK", time.perf_counter() - message.received)

    def _answered(self, message: _Message) -> bool:
        """One more operation of `message` is done; whether it was the last."""
        message.unanswered -= 1
        if message.unanswered:
            return False
        self._in_flight_bytes -= message.size
        return True

    async def _send_answers(self, context: Any) -> None:
        settings = self._settings
        while True:
            while self._answers:
                batch = take_batch(self._answers, settings.max_batch, settings.max_batch_bytes,
                                   framed_size, always_live)
                await context.write(encode_batch(batch))
                self._on_message("sent", len(batch))
            if self._in_flight == 0 and (self._stopped or not self._reading):
                return
            self._wake.clear()
            await self._wake.wait()
