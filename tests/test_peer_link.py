"""A peer link over a real gRPC connection on loopback, to a scripted
replica: what goes in one message (an event-loop turn's operations, and
those that queued while a message awaited its answers, bounded in bytes),
answers matched by id in any order, a deadline per operation, a
broken stream failing only what it carried, the fallback to `Batch` for a
peer without the stream, and heartbeats over the stream."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import uvloop
import pytest

from kvclient.pb import replica_pb2
from kvstore.errors import DeadlineExceeded, Unavailable
from kvstore.rpc.channels import open_server
from kvstore.rpc.peer_link import LinkSettings, PeerLink
from kvstore.rpc.peers import Peers

pytestmark = [pytest.mark.process, pytest.mark.timeout(30)]

SERVICE = "kvstore.v1.Replica"
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class ScriptedReplica:
    """Answers a read with its key as the state, a ping with nothing, and an
    operation of a kind it does not know (as an older node does) with
    INVALID_ARGUMENT. Reads of keys in `held` are never answered; with
    `reverse`, a message's answers go out last first, one message each;
    `break_stream()` aborts the stream open now; `stuck` answers nothing."""

    def __init__(self, *, stream: bool = True, reverse: bool = False) -> None:
        self.serves_stream = stream
        self.reverse = reverse
        self.held: set[bytes] = set()
        self.stuck = False
        self.streams = 0
        self.messages: list[replica_pb2.ReplicaBatchRequest] = []
        self.message_bytes: list[int] = []
        self.batch_calls = 0
        self._break = asyncio.Event()

    def break_stream(self) -> None:
        self._break.set()

    def answer(self, op: replica_pb2.ReplicaOp) -> replica_pb2.ReplicaResult | None:
        kind = op.WhichOneof("op")
        if self.stuck or (kind == "read" and op.read.key in self.held):
            return None
        if kind == "read":  # an empty key: not found
            return replica_pb2.ReplicaResult(id=op.id, found=bool(op.read.key),
                                             state=op.read.key)
        if kind in ("ping", "merge"):
            return replica_pb2.ReplicaResult(id=op.id, found=True)
        return replica_pb2.ReplicaResult(id=op.id, status=replica_pb2.kv__pb2.ItemStatus(
            code=INVALID, message="a replica operation must set one of its kinds"))

    def _record(self, request: replica_pb2.ReplicaBatchRequest) -> None:
        self.messages.append(request)
        self.message_bytes.append(request.ByteSize())

    async def Stream(self, requests: AsyncIterator[Any], context: Any) -> None:
        self.streams += 1
        self._break.clear()

        async def serve() -> None:
            async for request in requests:
                self._record(request)
                answers = [a for a in map(self.answer, request.ops) if a is not None]
                if self.reverse:
                    for answer in reversed(answers):
                        await context.write(replica_pb2.ReplicaBatchResponse(results=[answer]))
                elif answers:
                    await context.write(replica_pb2.ReplicaBatchResponse(results=answers))

        serving = asyncio.ensure_future(serve())
        broken = asyncio.ensure_future(self._break.wait())
        try:
            await asyncio.wait((serving, broken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            serving.cancel()
            broken.cancel()
        if self._break.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")

    async def Batch(self, request: replica_pb2.ReplicaBatchRequest,
                    context: Any) -> replica_pb2.ReplicaBatchResponse:
        self.batch_calls += 1
        self._record(request)
        results = [self.answer(op) for op in request.ops]
        if any(result is None for result in results):
            await asyncio.Event().wait()  # held: the call times out
        for result in results:
            assert result is not None
            result.id = 0  # Batch answers in order, without ids
        return replica_pb2.ReplicaBatchResponse(results=results)


async def serve(replica: ScriptedReplica) -> tuple[grpc.aio.Server, str]:
    server, port = open_server("127.0.0.1:0", 64 * 1024 * 1024)
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Batch": grpc.unary_unary_rpc_method_handler(
            replica.Batch, request_deserializer=replica_pb2.ReplicaBatchRequest.FromString,
            response_serializer=replica_pb2.ReplicaBatchResponse.SerializeToString),
    }
    if replica.serves_stream:
        handlers["Stream"] = grpc.stream_stream_rpc_method_handler(
            replica.Stream, request_deserializer=replica_pb2.ReplicaBatchRequest.FromString,
            response_serializer=replica_pb2.ReplicaBatchResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    await server.start()
    return server, f"127.0.0.1:{port}"


class Linked:
    """A link to a scripted replica, inside a task group the test owns."""

    def __init__(self, replica: ScriptedReplica, settings: LinkSettings) -> None:
        self.replica = replica
        self._settings = settings
        self._tasks = asyncio.TaskGroup()

    async def __aenter__(self) -> PeerLink:
        self._server, address = await serve(self.replica)
        await self._tasks.__aenter__()
        self.link = PeerLink("n2", address, self._settings, self._tasks)
        return self.link

    async def __aexit__(self, *exc_info: Any) -> None:
        self.link.stop()
        await self._tasks.__aexit__(*exc_info)
        await self.link.close()
        await self._server.stop(0)


def read(key: bytes) -> replica_pb2.ReplicaOp:
    return replica_pb2.ReplicaOp(read=replica_pb2.ReplicaRead(key=key))


def state(result: replica_pb2.ReplicaResult) -> bytes:
    return result.state


async def test_operations_queued_in_one_turn_go_in_one_message() -> None:
    replica = ScriptedReplica()
    async with Linked(replica, LinkSettings()) as link:
        futures = [link.submit(read(b"k%d" % i), state) for i in range(30)]
        assert all(isinstance(future, asyncio.Future) for future in futures)
        assert await asyncio.gather(*futures) == [b"k%d" % i for i in range(30)]
    assert [len(message.ops) for message in replica.messages] == [30]
    assert len({op.id for op in replica.messages[0].ops}) == 30  # an id each


async def test_operations_wait_while_a_message_awaits_answers_then_go_together() -> None:
    replica = ScriptedReplica()
    replica.held.add(b"held")
    # The held operation's own deadline is short, the others' long: on a
    # loaded machine the others must not expire while they wait their turn.
    async with Linked(replica, LinkSettings(call_timeout=30.0)) as link:
        held = link.submit(read(b"held"), state, timeout=0.3)
        await until(lambda: len(replica.messages) == 1)
        later = []
        for i in range(5):  # each in a turn of its own
            later.append(link.submit(read(b"k%d" % i), state))
            await asyncio.sleep(0)
        with pytest.raises(DeadlineExceeded):
            await held  # its message is done: the others may go
        assert await asyncio.gather(*later) == [b"k%d" % i for i in range(5)]
    assert [len(message.ops) for message in replica.messages] == [1, 5]


@asynccontextmanager
async def a_message_awaiting_answers(
        ) -> AsyncIterator[tuple[PeerLink, ScriptedReplica, "asyncio.Future[bytes]"]]:
    """A link whose one message awaits its answer, and an ordinary
    operation queued behind it (held by the flow control)."""
    replica = ScriptedReplica()
    replica.held.add(b"held")
    async with Linked(replica, LinkSettings(call_timeout=30.0)) as link:
        held = link.submit(read(b"held"), state, timeout=10.0)
        await until(lambda: len(replica.messages) == 1)
        yield link, replica, link.submit(read(b"queued"), state)
        held.cancel()
        link.stop()


async def test_an_urgent_operation_goes_while_a_message_awaits_answers() -> None:
    async with a_message_awaiting_answers() as (link, replica, queued):
        ping = replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing())
        urgent = link.submit(ping, lambda result: result.found, urgent=True)
        assert await urgent  # answered while the first message still waits
        assert [len(message.ops) for message in replica.messages] == [1, 1]
        assert replica.messages[1].ops[0].WhichOneof("op") == "ping"
        assert not queued.done()  # the flow control still holds the ordinary ones


def merge(key: bytes, size: int = 0) -> replica_pb2.ReplicaOp:
    return replica_pb2.ReplicaOp(merge=replica_pb2.ReplicaMerge(key=key, state=b"x" * size))


async def test_posts_go_one_way_ahead_of_a_message_awaiting_answers() -> None:
    async with a_message_awaiting_answers() as (link, replica, queued):
        link.post(merge(b"p1"))
        link.post(merge(b"p2"))
        await until(lambda: len(replica.messages) == 2)
        posted = replica.messages[1].ops
        assert [(op.id, op.merge.key) for op in posted] == [(0, b"p1"), (0, b"p2")]
        assert not queued.done()  # the flow control still holds the ordinary ones


async def test_posts_beyond_the_bytes_in_flight_are_dropped_oldest_first() -> None:
    replica = ScriptedReplica()
    async with Linked(replica, LinkSettings(max_bytes_in_flight=3_500)) as link:
        for i in range(10):  # in one turn: none has gone yet
            link.post(merge(b"k%d" % i, 1_000))
        assert await link.submit(read(b"after"), state) == b"after"  # sent after the posts
    posted = [op.merge.key for m in replica.messages for op in m.ops if op.HasField("merge")]
    assert posted == [b"k7", b"k8", b"k9"]


async def test_a_broken_stream_tells_who_asked() -> None:
    replica = ScriptedReplica()
    replica.held.add(b"held")
    broken: list[int] = []
    async with Linked(replica, LinkSettings(call_timeout=30.0)) as link:
        link.on_broken(lambda: broken.append(1))
        held = link.submit(read(b"held"), state)
        await until(lambda: len(replica.messages) == 1)
        assert not broken
        replica.break_stream()
        with pytest.raises(Unavailable):
            await held
        assert broken == [1]


async def test_a_post_to_a_peer_without_the_stream_goes_over_batch() -> None:
    replica = ScriptedReplica(stream=False)
    async with Linked(replica, LinkSettings()) as link:
        assert await link.submit(read(b"k"), state) == b"k"  # it learnt: Batch only
        link.post(merge(b"posted"))
        await until(lambda: replica.batch_calls == 2)
    assert replica.messages[-1].ops[0].merge.key == b"posted"


async def test_a_message_never_exceeds_max_batch_bytes_unless_one_operation_alone_does() -> None:
    replica = ScriptedReplica()
    bound = 64 * 1024
    sizes = [10_000] * 9 + [100_000] + [10_000] * 5 + [1 << 20] + [30_000] * 4
    async with Linked(replica, LinkSettings(max_batch_bytes=bound)) as link:
        futures = [link.submit(replica_pb2.ReplicaOp(merge=replica_pb2.ReplicaMerge(
            key=b"k%d" % i, state=b"x" * size)), state) for i, size in enumerate(sizes)]
        await asyncio.gather(*futures)  # every one went through, the 1 MiB one too
    assert sum(len(message.ops) for message in replica.messages) == len(sizes)
    for message, size in zip(replica.messages, replica.message_bytes):
        assert size <= bound or len(message.ops) == 1, (size, len(message.ops))
    assert len(replica.messages) < len(sizes)  # still batched


async def test_a_message_that_cannot_grow_goes_without_waiting_up_to_the_bytes_in_flight(
        ) -> None:
    replica = ScriptedReplica()
    big = [b"%d" % i + b"B" * 40_000 for i in range(3)]  # over max_batch_bytes: alone, full
    replica.held.update({b"held", big[0], big[1]})
    settings = LinkSettings(call_timeout=30.0, max_batch_bytes=32 * 1024,
                            max_bytes_in_flight=60_000)
    async with Linked(replica, settings) as link:
        held = link.submit(read(b"held"), state, timeout=3.0)
        await until(lambda: len(replica.messages) == 1)
        # Queued behind a message awaiting answers: "small" cannot grow (the
        # next operation would not fit with it), nor can each large one.
        small = link.submit(read(b"small"), state)
        large = [link.submit(read(key), state, timeout=3.0) for key in big[:2]]
        large.append(link.submit(read(big[2]), state))  # the link's 30 s
        assert await small == b"small"
        await until(lambda: len(replica.messages) == 4)
        # In flight now: "held" and two large ones, 80 kB: the third waits.
        assert not any(future.done() for future in (held, *large))
        assert [m.ops[0].read.key for m in replica.messages] == [b"held", b"small", *big[:2]]
        for future in (held, *large[:2]):
            with pytest.raises(DeadlineExceeded):
                await future
        assert await large[2] == big[2]  # sent once the others were done
    assert len(replica.messages) == 5


async def test_answers_out_of_order_reach_their_own_operations() -> None:
    replica = ScriptedReplica(reverse=True)
    async with Linked(replica, LinkSettings()) as link:
        keys = [b"key-%d" % i for i in range(20)]
        assert await asyncio.gather(*(link.submit(read(key), state) for key in keys)) == keys


async def test_a_broken_stream_fails_only_its_operations_in_flight() -> None:
    replica = ScriptedReplica()
    replica.held.add(b"held")
    # Deadlines far away: what fails `held` must be the break, however slow the machine.
    async with Linked(replica, LinkSettings(call_timeout=30.0)) as link:
        answered, held = link.submit(read(b"a"), state), link.submit(read(b"held"), state)
        assert await answered == b"a"
        replica.break_stream()
        with pytest.raises(Unavailable, match="UNAVAILABLE"):
            await held
        assert await link.submit(read(b"after"), state) == b"after"  # on a new stream
        assert answered.result() == b"a"
    assert replica.streams == 2


async def test_each_operation_has_its_own_deadline_and_the_stream_outlives_it() -> None:
    replica = ScriptedReplica()
    replica.held.add(b"held")
    async with Linked(replica, LinkSettings(call_timeout=0.3)) as link:
        loop = asyncio.get_running_loop()
        started = loop.time()
        held = link.submit(read(b"held"), state)
        assert await link.submit(read(b"quick"), state) == b"quick"
        with pytest.raises(DeadlineExceeded, match="did not answer within 0.3s"):
            await held
        assert loop.time() - started >= 0.3
        assert await link.submit(read(b"later"), state) == b"later"
        with pytest.raises(DeadlineExceeded, match="within 0.1s"):
            await link.submit(read(b"held"), state, timeout=0.1)  # its own timeout
    assert replica.streams == 1


async def test_a_peer_without_the_stream_is_served_over_batch() -> None:
    replica = ScriptedReplica(stream=False)
    async with Linked(replica, LinkSettings()) as link:
        keys = [b"key-%d" % i for i in range(10)]
        assert await asyncio.gather(*(link.submit(read(key), state) for key in keys)) == keys
        assert not link.streaming
        # An older node does not know the ping, and says so: that is an answer.
        await link.ping(1.0)
        assert await link.submit(read(b"later"), state) == b"later"
    assert replica.batch_calls >= 2
    assert sorted(op.read.key for message in replica.messages for op in message.ops
                  if op.HasField("read")) == sorted([*keys, b"later"])  # each sent once


async def test_heartbeats_go_over_the_stream_and_a_stuck_stream_fails_them() -> None:
    replica = ScriptedReplica()
    server, address = await serve(replica)
    try:
        async with Peers({"n2": address}, None, LinkSettings()) as peers:
            ping = peers.pingers(0.3)["n2"]
            await ping()
            assert replica.streams == 1 and replica.batch_calls == 0
            assert [op.WhichOneof("op") for op in replica.messages[0].ops] == ["ping"]
            replica.stuck = True
            with pytest.raises(DeadlineExceeded):
                await ping()
            replica.stuck = False
            await ping()  # answered again, on the same stream
            assert replica.streams == 1
    finally:
        await server.stop(0)


async def test_peers_answer_with_futures_and_leaving_fails_what_is_in_flight() -> None:
    replica = ScriptedReplica()
    replica.held.add(b"held")
    server, address = await serve(replica)
    try:
        async with Peers({"n2": address}, None, LinkSettings()) as peers:
            absent = peers.read("n2", b"")
            assert isinstance(absent, asyncio.Future)
            assert await absent is None
            held = peers.read("n2", b"held")
            await until(lambda: len(replica.messages) == 2)
        with pytest.raises(Unavailable, match="the link is closed"):
            await held
    finally:
        await server.stop(0)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def test_a_deadline_already_past_on_uvloop_fails_its_operation_and_the_link_goes_on() -> None:
    # Nodes run on uvloop, whose call_at gives a plain Handle (no when())
    # for a time already past, as a loop running late meets: the next
    # operation's deadline must still be kept.
    async def run() -> None:
        replica = ScriptedReplica()
        replica.held.add(b"held")
        async with Linked(replica, LinkSettings(call_timeout=30.0)) as link:
            late = link.submit(read(b"held"), state, timeout=-0.001)
            later = link.submit(read(b"k"), state)
            with pytest.raises(DeadlineExceeded):
                await late
            assert await later == b"k"

    uvloop.run(run())
