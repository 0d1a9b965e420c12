"""The replica's side of `Replica.Stream`, driven as gRPC drives a handler:
every operation answered by its id, reads at once and writes once
committed, the answers completed together in one message (bounded in
bytes), the same validation and metrics as `Batch`, a bound on the
operations in flight beyond which the stream is not read, and a stop that
answers what was read before the stream ends."""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from kvclient.pb import replica_pb2
from kvstore.causality import versions
from kvstore.causality.hlc import HybridLogicalClock
from kvstore.leaderless.replica import LocalReplica
from kvstore.rpc.replica_stream import StreamSettings
from kvstore.rpc.servicers import MalformedRequest, ReplicaService
from kvstore.rpc.validation import Limits
from kvstore.server.metrics import RequestMetrics
from kvstore.storage.memory_engine import MemoryEngine
from kvstore.storage.store import Store

pytestmark = pytest.mark.timeout(20)

PARTITIONS = 8
NOW_MS = 1_800_000_000_000


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class StreamContext:
    """What the handler uses of a gRPC servicer context: the messages it
    writes, decoded, and its abort (which raises, as gRPC's does)."""

    def __init__(self) -> None:
        self.sent: list[replica_pb2.ReplicaBatchResponse] = []

    async def write(self, message: bytes) -> None:
        assert type(message) is bytes, "the stream writes messages it joined itself"
        self.sent.append(replica_pb2.ReplicaBatchResponse.FromString(message))

    async def abort(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        raise Aborted(code, details)

    def answers(self) -> dict[int, replica_pb2.ReplicaResult]:
        found: dict[int, replica_pb2.ReplicaResult] = {}
        for message in self.sent:
            for result in message.results:
                assert result.id not in found, f"operation {result.id} answered twice"
                found[result.id] = result
        return found


class Requests:
    """The peer's side of the stream: messages sent, and how many the handler took."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.taken = 0

    def send(self, *ops: replica_pb2.ReplicaOp) -> None:
        self._queue.put_nowait(replica_pb2.ReplicaBatchRequest(ops=list(ops)))

    def send_raw(self, message: Any) -> None:
        self._queue.put_nowait(message)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def __aiter__(self) -> "Requests":
        return self

    async def __anext__(self) -> Any:
        message = await self._queue.get()
        if message is None:
            raise StopAsyncIteration
        self.taken += 1
        return message


@dataclass
class Commits:
    count: int = 0

    def observe_commit(self, batch_size: int, seconds: float) -> None:
        self.count += 1


@dataclass
class Repairs:
    """The repair operation (`kvstore admin repair`), held until released:
    a write that stays in flight for as long as a test wants."""

    started: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, partition: int) -> int:
        self.started += 1
        await self.release.wait()
        return partition


@dataclass
class Node:
    service: ReplicaService
    replica: LocalReplica
    metrics: RequestMetrics
    commits: Commits
    repairs: Repairs

    def stream(self) -> tuple[Requests, StreamContext, "asyncio.Task[None]"]:
        requests, context = Requests(), StreamContext()
        task = asyncio.get_running_loop().create_task(self.service.Stream(requests, context))
        return requests, context, task

    def counted(self, code: str = "OK") -> float:
        return self.metrics.registry.get_sample_value(
            "kvstore_requests_total", {"method": "Replica.Stream", "code": code}) or 0.0


def node_fixture(settings: StreamSettings) -> Callable[[], AsyncIterator[Node]]:
    async def make() -> AsyncIterator[Node]:
        commits, repairs, metrics = Commits(), Repairs(), RequestMetrics()
        async with Store(MemoryEngine(clock_ms=lambda: NOW_MS), observer=commits) as store:
            replica = LocalReplica("n1", store, HybridLogicalClock(lambda: NOW_MS), PARTITIONS)
            service = ReplicaService(replica, Limits(1024, 1 << 20, 100), metrics,
                                     repair=repairs, partitions=PARTITIONS, streams=settings)
            async with service:
                yield Node(service, replica, metrics, commits, repairs)
                repairs.release.set()
    return make


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async for made in node_fixture(StreamSettings())():
        yield made


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)
    assert condition(), what


async def settled() -> None:
    """Let every callback that is ready run (for what must NOT have happened)."""
    for _ in range(20):
        await asyncio.sleep(0)


def read(op_id: int, key: bytes) -> replica_pb2.ReplicaOp:
    return replica_pb2.ReplicaOp(id=op_id, read=replica_pb2.ReplicaRead(key=key))


def merge(op_id: int, key: bytes, value: bytes) -> replica_pb2.ReplicaOp:
    state = versions.update(None, versions.VersionVector(), "n9", value, False, NOW_MS)
    return replica_pb2.ReplicaOp(id=op_id, merge=replica_pb2.ReplicaMerge(
        key=key, state=versions.encode(state)))


def repair(op_id: int) -> replica_pb2.ReplicaOp:
    return replica_pb2.ReplicaOp(id=op_id, repair=replica_pb2.ReplicaRepair(partition=3))


def value_of(result: replica_pb2.ReplicaResult) -> bytes:
    [sibling] = versions.decode(result.state).live
    return sibling.value


async def test_reads_in_one_message_are_answered_at_once_in_one_message_by_id(
        node: Node) -> None:
    for i in range(20):
        await node.replica.merge(b"k%d" % i, versions.decode(merge(0, b"", b"v%d" % i).merge.state))
    requests, context, served = node.stream()
    ops = [read(1000 + i, b"k%d" % i) for i in range(20)]
    requests.send(*ops, replica_pb2.ReplicaOp(id=7, ping=replica_pb2.ReplicaPing()))
    await until(lambda: len(context.answers()) == 21, "every operation answered")
    assert len(context.sent) == 1
    answers = context.answers()
    assert all(value_of(answers[1000 + i]) == b"v%d" % i for i in range(20))
    assert answers[7].status.code == 0
    requests.close()
    await served
    assert node.counted() == 1  # one message, counted once


async def test_writes_are_answered_once_committed_sharing_messages_as_they_share_commits(
        node: Node) -> None:
    requests, context, served = node.stream()
    requests.send(*(merge(i, b"key-%d" % i, b"value") for i in range(1, 51)))
    await until(lambda: len(context.answers()) == 50, "every merge answered")
    assert all(result.status.code == 0 and result.found for result in context.answers().values())
    assert all(node.replica.read(b"key-%d" % i) is not None for i in range(1, 51))
    # The answers of one commit complete in one event-loop turn: one message.
    assert len(context.sent) <= node.commits.count < 50
    requests.close()
    await served
    assert node.counted() == 1


async def test_a_read_is_answered_before_a_write_sent_ahead_of_it_that_is_still_running(
        node: Node) -> None:
    requests, context, served = node.stream()
    requests.send(repair(1), read(2, b"absent"))
    await until(lambda: 2 in context.answers(), "the read answered")
    assert 1 not in context.answers() and node.repairs.started == 1
    node.repairs.release.set()
    await until(lambda: 1 in context.answers(), "the repair answered")
    assert context.answers()[1].repaired == 3 and not context.answers()[2].found
    requests.close()
    await served


async def test_an_operation_with_id_0_runs_one_way_and_is_never_answered(node: Node) -> None:
    requests, context, served = node.stream()
    requests.send(merge(0, b"one-way", b"value"), read(5, b"absent"))
    await until(lambda: node.replica.read(b"one-way") is not None, "the one-way merge applied")
    await until(lambda: 5 in context.answers(), "the read answered")
    await settled()
    assert list(context.answers()) == [5]
    requests.close()
    await served


async def test_an_invalid_operation_is_refused_alone_as_batch_refuses_it(node: Node) -> None:
    requests, context, served = node.stream()
    requests.send(read(1, b""), read(2, b"fine"), replica_pb2.ReplicaOp(id=3))
    await until(lambda: len(context.answers()) == 3, "every operation answered")
    answers = context.answers()
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[1].status.code == invalid and "key" in answers[1].status.message
    assert answers[2].status.code == 0
    assert answers[3].status.code == invalid and "must set one of its kinds" in (
        answers[3].status.message)
    batch = await node.service.Batch(replica_pb2.ReplicaBatchRequest(
        ops=[read(0, b""), read(0, b"fine"), replica_pb2.ReplicaOp()]), None)
    assert [r.status for r in batch.results] == [answers[i].status for i in (1, 2, 3)]
    requests.close()
    await served


async def test_a_malformed_message_ends_the_stream_with_invalid_argument(node: Node) -> None:
    requests, context, served = node.stream()
    requests.send(read(1, b"k"))
    requests.send_raw(MalformedRequest("kvstore.v1.ReplicaBatchRequest", "truncated message"))
    with pytest.raises(Aborted) as aborted:
        await served
    assert aborted.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert 1 in context.answers()  # what came before was answered
    assert node.counted("INVALID_ARGUMENT") == 1


@pytest.fixture
async def bounded() -> AsyncIterator[Node]:
    async for made in node_fixture(StreamSettings(max_in_flight=2, max_batch_bytes=1 << 20))():
        yield made


async def test_beyond_its_bound_of_operations_in_flight_a_stream_is_not_read(
        bounded: Node) -> None:
    requests, context, served = bounded.stream()
    requests.send(repair(1), repair(2))
    requests.send(read(3, b"k"))
    await until(lambda: bounded.repairs.started == 2, "both repairs running")
    await settled()
    assert requests.taken == 1 and not context.answers()  # the read waits, unread
    bounded.repairs.release.set()
    await until(lambda: len(context.answers()) == 3, "all answered")
    assert requests.taken == 2
    requests.close()
    await served


@pytest.fixture
async def byte_bounded() -> AsyncIterator[Node]:
    async for made in node_fixture(StreamSettings(max_in_flight_bytes=1000))():
        yield made


async def test_while_its_unanswered_messages_hold_their_bound_of_bytes_a_stream_is_not_read(
        byte_bounded: Node) -> None:
    node = byte_bounded
    requests, context, served = node.stream()
    requests.send(repair(1), merge(2, b"big", b"v" * 2000))  # one message over 1000 bytes
    requests.send(read(3, b"big"))
    await until(lambda: 2 in context.answers(), "the merge answered")
    await settled()
    # The repair still holds the first message's bytes: the read waits, unread.
    assert requests.taken == 1 and set(context.answers()) == {2}
    node.repairs.release.set()
    await until(lambda: len(context.answers()) == 3, "all answered")
    assert requests.taken == 2
    requests.close()
    await served


async def test_answers_completed_together_are_split_by_bytes(bounded: Node) -> None:
    big = b"x" * 400_000
    for i in range(3):
        await bounded.replica.merge(b"big-%d" % i,
                                    versions.decode(merge(0, b"", big).merge.state))
    requests, context, served = bounded.stream()
    requests.send(*(read(i + 1, b"big-%d" % i) for i in range(3)))
    await until(lambda: len(context.answers()) == 3, "all answered")
    assert [len(message.results) for message in context.sent] == [2, 1]
    assert all(message.ByteSize() <= 1 << 20 for message in context.sent)
    requests.close()
    await served


async def test_stopping_answers_what_was_read_then_ends_the_stream_and_refuses_new_ones(
        node: Node) -> None:
    requests, context, served = node.stream()
    requests.send(repair(1))
    await until(lambda: node.repairs.started == 1, "the repair running")
    node.service.end_streams()
    requests.send(read(2, b"k"))  # sent after the stop: never run
    await settled()
    assert not served.done()  # the repair it read is still running
    node.repairs.release.set()
    await served
    assert list(context.answers()) == [1]
    _, _, refused = node.stream()
    with pytest.raises(Aborted) as aborted:
        await refused
    assert aborted.value.code == grpc.StatusCode.UNAVAILABLE


async def test_a_write_of_a_broken_stream_still_finishes(node: Node) -> None:
    requests, context, served = node.stream()
    requests.send(repair(1), merge(2, b"kept", b"value"))
    await until(lambda: node.repairs.started == 1, "the repair running")
    await until(lambda: 2 in context.answers(), "the merge answered")
    served.cancel()  # the peer went away: gRPC cancels the handler
    with pytest.raises(asyncio.CancelledError):
        await served
    node.repairs.release.set()
    await until(lambda: node.counted() == 1, "the message counted once its repair finished")
