"""One link from this process to one node: every replica operation and
heartbeat for it, batched over one long-lived `Replica.Stream`.

`submit` queues an operation (serialized once, with an id unique on the
link) and returns a Future of its answer. One sender task per link takes the
queue into messages: woken by the first operation of an event-loop turn, it
finds the others of that turn queued, so they go in one message. While
`max_messages_in_flight` messages await answers, the next ones queue up for
the following message, as they did behind a unary `Batch` call: an idle
link sends at once, a busy one sends fewer, fuller messages, with no timer
(per-message cost, not storage, is the ceiling; sending each operation as
it comes would cost a message per client request). A message holds at most
`max_batch` operations and `max_batch_bytes` bytes; an operation larger
than that goes alone, so a value at the size limit always goes through.
A message that is full already goes without waiting its turn, as long as
the messages awaiting answers hold less than `max_bytes_in_flight`: it
would gain nothing by waiting, and with large values (one per message)
waiting would allow one write per round trip and hold every other queued
here.

A *one-way* operation (`post`: leader mode's Raft envelopes) has id 0: the
peer runs it and answers nothing, so it costs no answer message, future or
deadline. Posts go ahead of everything else, in messages of their own; those
queued beyond `max_bytes_in_flight` (a peer that does not read) are dropped,
oldest first, and so are those a broken stream carried: Raft sends again
what matters. Whoever asked `on_broken` hears of every broken stream (the
Raft host then stops streaming appends to the peer). To a peer that serves
only `Replica.Batch`, a post goes as an ordinary operation, its answer
ignored.

An *urgent* operation (one the peer answers as it reads it) does not wait
its turn either: it goes in the next message written after the posts, in a
message of urgent ones, which is not counted among those awaiting answers.
Neither waits behind a write awaiting its commit on the peer (a Raft
message held there would hold back the commit).

Answers come back by id, in any order. Each operation has its own deadline
(the link's `call_timeout`, or the one given), kept by one timer per link:
a slow answer fails only the operations that waited too long, never the
stream.

The stream is opened by the first operation and kept open. When it breaks,
the operations it carried that are unanswered fail with Unavailable (they
may or may not have run: an apply whose answer was lost may have been
applied); those not sent yet stay queued, and the next message opens a new
stream on the same channel, whose reconnect backoff paces the attempts. A
peer that answers the stream UNIMPLEMENTED (an older node, during a rolling
upgrade) ran nothing of it: what it carried is sent again, as unary
`Replica.Batch` calls, one at a time, for as long as the peer stays up (a
peer that goes away may come back upgraded, so the stream is tried again).

The sender and each stream's receiver are tasks of the owner's task group;
`stop()` ends them, failing what is still queued or in flight.

`renew()` (after this process's TLS files were rotated) opens a new channel,
which reads the files again: the next message goes on a new stream over
it, while the old stream is closed for writing, answers what it carried,
and its channel is closed after it.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from kvclient.pb import replica_pb2
from kvclient.security import PLAINTEXT, Credentials
from kvstore.errors import DeadlineExceeded, KVStoreError, Unavailable
from kvstore.rpc.batches import (
    always_live, batch_is_full, encode_batch, framed_size, take_batch,
)
from kvstore.rpc.channels import open_aio_channel, split_token
from kvstore.rpc.replica_stream import DEFAULT_MAX_BATCH_BYTES
from kvstore.rpc.status import error_of

log = logging.getLogger(__name__)

T = TypeVar("T")

_STREAM = "/kvstore.v1.Replica/Stream"
_BATCH = "/kvstore.v1.Replica/Batch"


@dataclass(frozen=True)
class LinkSettings:
    call_timeout: float = 2.0  # seconds for one operation's answer, from when it was queued
    max_batch: int = 256  # operations in one message at most
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES  # and their bytes, unless one alone is more
    # Messages sent and not answered in full, per stream, before the next
    # waits: what makes batches grow with load (see the module docstring).
    max_messages_in_flight: int = 1
    # Bytes of the messages awaiting answers past which even a full message waits.
    max_bytes_in_flight: int = 16 * 1024 * 1024
    max_message_bytes: int = 64 * 1024 * 1024
    # What this process presents to its peers: its certificate, or the cluster secret.
    credentials: Credentials = PLAINTEXT

    def __post_init__(self) -> None:
        if not 0 < self.max_batch_bytes <= self.max_message_bytes // 2:
            raise ValueError(f"max_batch_bytes must be in (0, max_message_bytes / 2], got "
                             f"{self.max_batch_bytes} with max_message_bytes "
                             f"{self.max_message_bytes}")


class _Pending:
    """One operation from `submit` until it is answered, failed or timed out;
    then it lets go of its bytes and its Future (the deadline queue may hold
    it a while longer)."""

    __slots__ = ("id", "encoded", "future", "convert", "deadline", "stream", "message",
                 "any_answer")

    def __init__(self, op_id: int, encoded: bytes, future: "asyncio.Future[Any]",
                 convert: Callable[[replica_pb2.ReplicaResult], Any], deadline: float,
                 any_answer: bool) -> None:
        self.id = op_id
        self.encoded = encoded
        self.future: asyncio.Future[Any] | None = future
        self.convert = convert
        self.deadline = deadline
        self.stream: _Stream | None = None  # the stream that carries it, once sent
        self.message: _Message | None = None  # the message it went in, until answered
        self.any_answer = any_answer  # a ping: an answer with an error status still answers

    def live(self) -> bool:
        return self.future is not None and not self.future.done()

    def settle(self, result: replica_pb2.ReplicaResult, where: str) -> None:
        future = self.future
        if future is not None and not future.done():
            if result.status.code and not self.any_answer:
                future.set_exception(error_of(result.status.code,
                                              f"{where}: {result.status.message}"))
            else:
                try:
                    future.set_result(self.convert(result))
                except KVStoreError as exc:  # e.g. a state that does not decode
                    future.set_exception(exc)
        self._release()

    def fail(self, error: KVStoreError) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_exception(error)
        self._release()

    def _release(self) -> None:
        self.future = None
        self.encoded = b""
        self.stream = None
        if self.message is not None:
            self.message.answered_one()
            self.message = None


class _Message:
    """A message sent on a stream, until each of its operations is answered,
    failed or timed out; then the link may send another in its place."""

    __slots__ = ("unanswered", "size", "done")

    def __init__(self, unanswered: int, size: int, done: "Callable[[_Message], None]") -> None:
        self.unanswered = unanswered
        self.size = size
        self.done = done

    def answered_one(self) -> None:
        self.unanswered -= 1
        if self.unanswered == 0:
            self.done(self)


def _size(pending: _Pending) -> int:
    return framed_size(pending.encoded)


def _live(pending: _Pending) -> bool:
    return pending.live()


def _ignore(_: replica_pb2.ReplicaResult) -> None:
    return None


def _retrieve(future: "asyncio.Future[None]") -> None:
    if not future.cancelled():
        future.exception()  # a post's failure is nobody's news


class _Stream:
    """One `Replica.Stream` call and the operations it carries, by id."""

    __slots__ = ("call", "in_flight", "receiver", "answered")

    def __init__(self, call: Any) -> None:
        self.call = call
        self.in_flight: dict[int, _Pending] = {}
        self.receiver: asyncio.Task[None] | None = None
        # Once the peer has answered on it, the stream is served: nothing it
        # carries will be sent again over Batch, so an operation's bytes can
        # go as soon as they are written (with large values, most of what a
        # coordinator holds would otherwise be copies awaiting answers).
        self.answered = False


class PeerLink:
    def __init__(self, node_id: str, address: str, settings: LinkSettings,
                 tasks: asyncio.TaskGroup,
                 on_message: Callable[[str, int], None] = lambda direction, items: None) -> None:
        self.node_id = node_id
        self._on_message = on_message  # ("sent" or "received", operations or answers in it)
        self.address = address
        self._where = f"replica {node_id} at {address}"
        self._settings = settings
        self._tasks = tasks
        self._open_channel()
        self._renewing = False  # renew() asked for a new channel
        self._retiring: set[grpc.aio.Channel] = set()  # old channels, closed after their stream
        self._queue: deque[_Pending] = deque()
        self._urgent: deque[_Pending] = deque()  # sent before the queue, not flow-controlled
        self._posts: deque[bytes] = deque()  # one way (id 0), encoded; sent first
        self._posts_bytes = 0
        self._broken_listeners: list[Callable[[], None]] = []
        self._next_id = 1
        self._stream: _Stream | None = None
        self._unary = False  # the peer does not serve Replica.Stream
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._messages_in_flight = 0
        self._bytes_in_flight = 0
        self._stopped = False
        # Deadlines by timeout: each queue is in deadline order, since its
        # operations were queued in order with the same timeout.
        self._deadlines: dict[float, deque[_Pending]] = {}
        # uvloop's call_at returns a plain Handle, without when(), for a time
        # already past (a loop running late): so the time is kept here.
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0

    def _open_channel(self) -> None:
        # Its options include a reconnect backoff of at most a second: a
        # replica that restarts is reachable again soon.
        # A plaintext token (the cluster secret) goes as the calls' metadata.
        credentials, self._metadata = split_token(self._settings.credentials)
        self._channel = open_aio_channel(self.address, self._settings.max_message_bytes,
                                         credentials)
        # Requests go out as the bytes `encode_batch` put together.
        deserialize = replica_pb2.ReplicaBatchResponse.FromString
        self._open: grpc.aio.StreamStreamMultiCallable[bytes, Any] = (
            self._channel.stream_stream(_STREAM, response_deserializer=deserialize))
        self._batch: grpc.aio.UnaryUnaryMultiCallable[bytes, Any] = (
            self._channel.unary_unary(_BATCH, response_deserializer=deserialize))

    def renew(self) -> None:
        """Reconnect with the credentials' files as they are now (the sender
        does it between two messages, so no write is cut short)."""
        if self._stopped:
            return
        if self._sender is None:  # nothing sent yet: no stream to wind up
            self._retire(self._channel, None)
            self._open_channel()
            return
        self._renewing = True
        self._wake.set()

    def _replace_channel(self) -> None:
        self._renewing = False
        old_channel, old_stream = self._channel, self._stream
        self._stream = None  # the next message opens one on the new channel
        self._open_channel()
        self._retire(old_channel, old_stream)

    def _retire(self, channel: grpc.aio.Channel, stream: "_Stream | None") -> None:
        self._retiring.add(channel)

        async def wind_up() -> None:
            try:
                if stream is not None and stream.receiver is not None:
                    try:
                        await stream.call.done_writing()  # the peer answers, then ends it
                    except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                        pass  # over already
                    await asyncio.wait((stream.receiver,))
            finally:
                self._retiring.discard(channel)
                await channel.close()

        self._tasks.create_task(wind_up())

    @property
    def streaming(self) -> bool:
        """False once the peer answered the stream UNIMPLEMENTED (until it goes away)."""
        return not self._unary

    def submit(self, op: replica_pb2.ReplicaOp, convert: Callable[[replica_pb2.ReplicaResult], T],
               timeout: float | None = None, *, any_answer: bool = False,
               urgent: bool = False) -> "asyncio.Future[T]":
        """Queue `op`; a Future of `convert(result)`, or of the KVStoreError
        the replica answered (unless `any_answer`), or DeadlineExceeded when
        no answer came within `timeout` (default: the link's call_timeout),
        or Unavailable when the stream carrying it broke. `urgent`: an
        operation the peer answers at once, sent ahead of the queue."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._stopped:
            future.set_exception(Unavailable(f"{self._where}: the link is closed"))
            return future
        op.id = self._next_id
        self._next_id += 1
        timeout = self._settings.call_timeout if timeout is None else timeout
        pending = _Pending(op.id, op.SerializeToString(), future, convert,
                           loop.time() + timeout, any_answer)
        (self._urgent if urgent and not self._unary else self._queue).append(pending)
        self._watch_deadline(pending, timeout, loop)
        if self._sender is None:
            self._sender = self._tasks.create_task(self._send())
        self._wake.set()
        return future

    def post(self, op: replica_pb2.ReplicaOp) -> None:
        """Send `op` one way: the peer runs it and answers nothing. It may be
        lost (see the module docstring); nothing says so but `on_broken`."""
        if self._stopped:
            return
        if self._unary:
            future = self.submit(op, _ignore, any_answer=True)
            future.add_done_callback(_retrieve)
            return
        op.id = 0
        encoded = op.SerializeToString()
        self._posts.append(encoded)
        self._posts_bytes += len(encoded)
        while self._posts_bytes > self._settings.max_bytes_in_flight and len(self._posts) > 1:
            self._posts_bytes -= len(self._posts.popleft())
        if self._sender is None:
            self._sender = self._tasks.create_task(self._send())
        self._wake.set()

    def on_broken(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever a stream of this link breaks."""
        self._broken_listeners.append(listener)

    def ping(self, timeout: float) -> "asyncio.Future[None]":
        """A heartbeat on the link's stream: answered at once by a replica
        that reads its stream, so a stuck stream is a silent peer. Any
        answer counts (an older node answers a ping over Batch with an
        error: it still answered)."""
        return self.submit(replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing()),
                           lambda result: None, timeout, any_answer=True)

    def stop(self) -> None:
        """Fail what is queued or in flight, and end the link's tasks."""
        self._stopped = True
        error = Unavailable(f"{self._where}: the link is closed")
        for pending in (*self._urgent, *self._queue):
            pending.fail(error)
        self._urgent.clear()
        self._queue.clear()
        self._drop_posts()
        if self._stream is not None:
            self._stream.call.cancel()  # its receiver fails what it carried
        if self._timer is not None:
            self._timer.cancel()
        self._wake.set()

    async def close(self) -> None:
        for channel in [*self._retiring, self._channel]:
            await channel.close()

    # -- sending ------------------------------------------------------------

    async def _send(self) -> None:
        try:
            while not self._stopped:
                if self._renewing:
                    self._replace_channel()
                if self._urgent and self._unary:  # Batch calls answer in turn anyway
                    self._queue.extendleft(reversed(self._urgent))
                    self._urgent.clear()
                if self._posts and self._unary:
                    self._drop_posts()  # one way, as lost on the way: sent again if they matter
                if self._posts:
                    await self._send_posts()
                elif self._urgent:
                    await self._send_on_stream(self._urgent, counted=False)
                elif not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                elif self._unary:
                    await self._send_unary()
                elif not self._may_send():
                    self._wake.clear()
                    await self._wake.wait()
                else:
                    await self._send_on_stream(self._queue)
        except asyncio.CancelledError:
            if not self._stopped:
                raise
            # A write cut short by stop(): the stream was cancelled under it.

    def _may_send(self) -> bool:
        """Whether the next message may go now (see the module docstring)."""
        settings = self._settings
        if self._messages_in_flight < settings.max_messages_in_flight:
            return True
        return (self._bytes_in_flight < settings.max_bytes_in_flight
                and batch_is_full(self._queue, settings.max_batch, settings.max_batch_bytes,
                                  _size, _live))

    async def _send_on_stream(self, queue: deque[_Pending], counted: bool = True) -> None:
        """A message of what `queue` holds; `counted`: among the messages
        awaiting answers (the flow control above)."""
        settings = self._settings
        batch = take_batch(queue, settings.max_batch, settings.max_batch_bytes, _size, _live)
        if not batch:
            return
        stream = self._stream if self._stream is not None else self._open_stream()
        message = None
        if counted:
            message = _Message(len(batch), sum(map(_size, batch)), self._message_answered)
            self._messages_in_flight += 1
            self._bytes_in_flight += message.size
        for pending in batch:
            pending.stream = stream
            pending.message = message
            stream.in_flight[pending.id] = pending
        try:
            await stream.call.write(encode_batch([pending.encoded for pending in batch]))
            self._on_message("sent", len(batch))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # The stream is over; its receiver settles what it carried (this
            # batch too) and may switch the link to Batch: wait for it.
            assert stream.receiver is not None
            await asyncio.wait((stream.receiver,))
            return
        if stream.answered:
            for pending in batch:
                pending.encoded = b""

    async def _send_posts(self) -> None:
        settings = self._settings
        batch = take_batch(self._posts, settings.max_batch, settings.max_batch_bytes,
                           framed_size, always_live)
        self._posts_bytes -= sum(map(len, batch))
        stream = self._stream if self._stream is not None else self._open_stream()
        try:
            await stream.call.write(encode_batch(batch))
            self._on_message("sent", len(batch))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            assert stream.receiver is not None  # it ends the stream (and may switch to Batch)
            await asyncio.wait((stream.receiver,))

    def _drop_posts(self) -> None:
        self._posts.clear()
        self._posts_bytes = 0

    def _message_answered(self, message: _Message) -> None:
        self._messages_in_flight -= 1
        self._bytes_in_flight -= message.size
        self._wake.set()

    def _open_stream(self) -> _Stream:
        stream = _Stream(self._open(metadata=self._metadata))
        stream.receiver = self._tasks.create_task(self._receive(stream))
        self._stream = stream
        return stream

    async def _send_unary(self) -> None:
        settings = self._settings
        batch = take_batch(self._queue, settings.max_batch, settings.max_batch_bytes, _size, _live)
        if not batch:
            return
        try:
            response = await self._batch(encode_batch([pending.encoded for pending in batch]),
                                         timeout=settings.call_timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                self._unary = False  # it went away: it may come back upgraded
            error = self._error(exc)
            for pending in batch:
                pending.fail(error)
            return
        if len(response.results) != len(batch):
            error = Unavailable(f"{self._where} answered {len(response.results)} results "
                                f"for {len(batch)} operations")
            for pending in batch:
                pending.fail(error)
            return
        for pending, result in zip(batch, response.results):
            pending.settle(result, self._where)

    # -- receiving ----------------------------------------------------------

    async def _receive(self, stream: _Stream) -> None:
        try:
            async for response in stream.call:
                stream.answered = True
                self._on_message("received", len(response.results))
                for result in response.results:
                    pending = stream.in_flight.pop(result.id, None)
                    if pending is not None:
                        pending.settle(result, self._where)
            error: KVStoreError = Unavailable(f"{self._where} ended the replica stream "
                                              "(it is stopping)")
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._fall_back(stream)
                return
            error = self._error(exc)
        except asyncio.CancelledError:
            error = Unavailable(f"{self._where}: the link is closed")
            if not self._stopped:
                self._end(stream, error)
                raise
        self._end(stream, error)

    def _end(self, stream: _Stream, error: KVStoreError) -> None:
        if self._stream is stream:
            self._stream = None
        for pending in stream.in_flight.values():
            pending.fail(error)
        stream.in_flight.clear()
        if not self._stopped:
            for listener in self._broken_listeners:
                listener()

    def _fall_back(self, stream: _Stream) -> None:
        """The peer has no Replica.Stream: nothing it carried ran; send it
        again, first, over Batch."""
        log.info("%s does not serve Replica.Stream; using Replica.Batch", self._where)
        if self._stream is stream:
            self._stream = None
        self._unary = True
        self._messages_in_flight = 0  # those messages are sent again, as Batch calls
        self._bytes_in_flight = 0
        carried = sorted(stream.in_flight.values(), key=lambda pending: pending.id)
        stream.in_flight.clear()
        for pending in reversed(carried):
            pending.stream = None
            pending.message = None
            if pending.live():
                self._queue.appendleft(pending)
        self._wake.set()

    def _error(self, exc: grpc.aio.AioRpcError) -> KVStoreError:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded(
                f"{self._where} did not answer within {self._settings.call_timeout}s")
        return Unavailable(f"{self._where}: {exc.code().name}: {exc.details()}")

    # -- deadlines ----------------------------------------------------------

    def _watch_deadline(self, pending: _Pending, timeout: float,
                        loop: asyncio.AbstractEventLoop) -> None:
        queue = self._deadlines.get(timeout)
        if queue is None:
            queue = self._deadlines[timeout] = deque()
        while queue and queue[0].future is None:  # answered already: forget it
            queue.popleft()
        queue.append(pending)
        if self._timer is None or pending.deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(pending.deadline, self._expire)
            self._timer_at = pending.deadline

    def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._timer = None
        following: float | None = None
        for timeout, queue in self._deadlines.items():
            while queue and (queue[0].future is None or queue[0].deadline <= now):
                pending = queue.popleft()
                if pending.future is not None:
                    self._time_out(pending, timeout)
            if queue and (following is None or queue[0].deadline < following):
                following = queue[0].deadline
        if following is not None and not self._stopped:
            self._timer = loop.call_at(following, self._expire)
            self._timer_at = following

    def _time_out(self, pending: _Pending, timeout: float) -> None:
        if pending.stream is not None:
            pending.stream.in_flight.pop(pending.id, None)
        pending.fail(DeadlineExceeded(f"{self._where} did not answer within {timeout}s"))
