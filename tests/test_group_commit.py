"""Store: concurrent writes share transactions and are answered only once durable."""

import asyncio
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from kvstore.errors import FailedPrecondition, KVStoreError, Unavailable
from kvstore.storage.record import Record
from kvstore.storage.engine import Write, WriteResult
from kvstore.storage.lmdb_engine import LmdbEngine
from kvstore.storage.store import Store

WAIT_SECONDS = 10


class FakeEngine:
    """Applies writes to a dict; `gate` holds every commit until it is set."""

    def __init__(self, *, blocked: bool = False) -> None:
        self.durable: dict[bytes, Record] = {}
        self.batches: list[list[bytes]] = []
        self.threads: list[str] = []
        self.commit_started = threading.Event()
        self.gate = threading.Event()
        if not blocked:
            self.gate.set()
        self.fail_next_commit: Exception | None = None

    def read(self, partition: int, key: bytes) -> Record | None:
        return self.durable.get(key)

    def commit(self, writes: Sequence[Write]) -> list[WriteResult | KVStoreError]:
        self.threads.append(threading.current_thread().name)
        self.commit_started.set()
        assert self.gate.wait(WAIT_SECONDS)
        if self.fail_next_commit is not None:
            error, self.fail_next_commit = self.fail_next_commit, None
            raise error
        staged = dict(self.durable)
        results: list[WriteResult | KVStoreError] = []
        for write in writes:
            try:
                new = write.decide(staged.get(write.key))
            except KVStoreError as exc:
                results.append(exc)
                continue
            assert new is not None
            staged[write.key] = new
            results.append(WriteResult(new, applied=True, duplicate=False))
        self.durable = staged  # "fsync": only now is the batch durable
        self.batches.append([w.key for w in writes])
        return results

    def size_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


class RecordingObserver:
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def observe_commit(self, batch_size: int, seconds: float) -> None:
        assert seconds >= 0
        self.batch_sizes.append(batch_size)


def write(key: bytes, value: bytes = b"v") -> Write:
    return Write(0, key, lambda current: Record(b"", 1, False, value))


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition` holds; fail after WAIT_SECONDS."""
    async with asyncio.timeout(WAIT_SECONDS):
        while not condition():
            await asyncio.sleep(0)


async def started(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT_SECONDS)


async def test_concurrent_writes_share_transactions() -> None:
    engine, observer = FakeEngine(), RecordingObserver()
    async with Store(engine, observer=observer) as store:
        results = await asyncio.gather(*(store.write(write(b"k%d" % i)) for i in range(100)))
    assert all(r.applied for r in results)
    assert len(observer.batch_sizes) < 100
    assert sum(observer.batch_sizes) == 100
    assert len(engine.durable) == 100


async def test_writes_that_arrive_during_a_commit_form_the_next_batch() -> None:
    engine = FakeEngine(blocked=True)
    async with Store(engine) as store:
        first = asyncio.create_task(store.write(write(b"first")))
        await started(engine.commit_started)
        rest = [asyncio.create_task(store.write(write(b"k%d" % i))) for i in range(50)]
        await until(lambda: store.queued == 50)
        engine.gate.set()
        await asyncio.gather(first, *rest)
    assert engine.batches[0] == [b"first"]
    assert engine.batches[1] == [b"k%d" % i for i in range(50)]


async def test_a_lone_write_is_never_delayed() -> None:
    engine = FakeEngine()
    async with Store(engine, commit_delay=3600) as store:
        async with asyncio.timeout(WAIT_SECONDS):
            await store.write(write(b"alone"))
            await store.write(write(b"alone again"))
    assert engine.batches == [[b"alone"], [b"alone again"]]


async def test_under_load_a_commit_waits_for_more_writes_and_close_cuts_the_wait() -> None:
    engine = FakeEngine(blocked=True)
    async with asyncio.timeout(WAIT_SECONDS):
        async with Store(engine, commit_delay=3600) as store:
            first = asyncio.create_task(store.write(write(b"a")))
            await started(engine.commit_started)
            pair = [asyncio.create_task(store.write(write(key))) for key in (b"b", b"c")]
            await until(lambda: store.queued == 2)
            engine.gate.set()
            await asyncio.gather(first, *pair)  # [b, c]: a batch of two, so load
            later = [asyncio.create_task(store.write(write(key))) for key in (b"d", b"e", b"f")]
            await until(lambda: store.queued == 3)
            assert not any(task.done() for task in later)  # held by the commit delay
        await asyncio.gather(*later)  # leaving the block ended the delay at once
    assert engine.batches == [[b"a"], [b"b", b"c"], [b"d", b"e", b"f"]]


async def test_a_batch_holds_at_most_max_batch_writes() -> None:
    engine, observer = FakeEngine(), RecordingObserver()
    async with Store(engine, max_batch=7, observer=observer) as store:
        await asyncio.gather(*(store.write(write(b"k%d" % i)) for i in range(50)))
    assert max(observer.batch_sizes) <= 7
    assert sum(observer.batch_sizes) == 50


async def test_a_write_is_acknowledged_only_after_its_commit() -> None:
    engine = FakeEngine(blocked=True)

    async def acknowledged_durable(w: Write) -> None:
        await store.write(w)
        assert w.key in engine.durable

    async with Store(engine) as store:
        tasks = [asyncio.create_task(acknowledged_durable(write(b"k%d" % i))) for i in range(20)]
        await started(engine.commit_started)
        await until(lambda: store.queued == 0)  # every write is in flight or in line
        assert not any(t.done() for t in tasks)
        engine.gate.set()
        await asyncio.gather(*tasks)
    assert engine.threads and all(name.startswith("lmdb-commit") for name in engine.threads)


async def test_a_failed_write_does_not_fail_its_batch_mates() -> None:
    def refuse(current: Record | None) -> Record:
        raise FailedPrecondition("version mismatch")

    engine = FakeEngine()
    async with Store(engine) as store:
        results = await asyncio.gather(
            store.write(write(b"a")), store.write(Write(0, b"b", refuse)), store.write(write(b"c")),
            return_exceptions=True,
        )
    assert isinstance(results[0], WriteResult) and isinstance(results[2], WriteResult)
    assert isinstance(results[1], FailedPrecondition)
    assert set(engine.durable) == {b"a", b"c"}


async def test_an_engine_exception_fails_its_batch_and_the_committer_goes_on() -> None:
    engine = FakeEngine()
    engine.fail_next_commit = OSError("disk on fire")
    async with Store(engine) as store:
        with pytest.raises(Unavailable) as failed:
            await store.write(write(b"a"))
        assert isinstance(failed.value.__cause__, OSError)
        assert (await store.write(write(b"b"))).applied
    assert set(engine.durable) == {b"b"}


async def test_a_failing_observer_does_not_fail_writes() -> None:
    class Broken:
        def observe_commit(self, batch_size: int, seconds: float) -> None:
            raise RuntimeError("metrics are down")

    async with Store(FakeEngine(), observer=Broken()) as store:
        assert (await store.write(write(b"a"))).applied
        assert (await store.write(write(b"b"))).applied


async def test_leaving_the_block_commits_and_answers_every_queued_write() -> None:
    engine = FakeEngine(blocked=True)
    async with Store(engine) as store:
        tasks = [asyncio.create_task(store.write(write(b"first")))]
        await started(engine.commit_started)
        tasks += [asyncio.create_task(store.write(write(b"k%d" % i))) for i in range(30)]
        await until(lambda: store.queued == 30)
        # No await between here and the exit: the 30 are still queued when it starts.
        engine.gate.set()
    assert len(engine.durable) == 31  # committed before the block returned
    assert all(r.applied for r in await asyncio.gather(*tasks))


async def test_an_error_in_the_block_still_drains_queued_writes() -> None:
    engine = FakeEngine(blocked=True)
    with pytest.raises(ZeroDivisionError):
        async with Store(engine) as store:
            in_flight = asyncio.create_task(store.write(write(b"a")))
            await started(engine.commit_started)
            queued = asyncio.create_task(store.write(write(b"b")))
            await until(lambda: store.queued == 1)
            engine.gate.set()
            raise ZeroDivisionError
    assert (await in_flight).applied and (await queued).applied


async def test_cancelling_the_owner_still_drains_queued_writes() -> None:
    engine = FakeEngine(blocked=True)
    writers: list[asyncio.Task[WriteResult]] = []
    all_queued = asyncio.Event()

    async def owner() -> None:
        async with Store(engine) as store:
            writers.append(asyncio.create_task(store.write(write(b"a"))))
            await started(engine.commit_started)
            writers.append(asyncio.create_task(store.write(write(b"b"))))
            await until(lambda: store.queued == 1)
            all_queued.set()
            await asyncio.Event().wait()  # until cancelled

    owner_task = asyncio.create_task(owner())
    await all_queued.wait()
    owner_task.cancel()
    engine.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await owner_task
    assert [r.applied for r in await asyncio.gather(*writers)] == [True, True]
    assert engine.batches == [[b"a"], [b"b"]]


async def test_a_write_after_close_is_unavailable() -> None:
    store = Store(FakeEngine())
    with pytest.raises(Unavailable, match="shutting down"):
        await store.write(write(b"early"))
    async with store:
        pass
    with pytest.raises(Unavailable, match="shutting down"):
        await store.write(write(b"late"))


async def test_a_cancelled_writer_harms_nobody() -> None:
    engine = FakeEngine(blocked=True)
    async with asyncio.timeout(WAIT_SECONDS), Store(engine) as store:
        in_flight = [asyncio.create_task(store.write(write(k)))
                     for k in (b"in-flight-cancelled", b"in-flight-kept")]
        await started(engine.commit_started)
        queued = [asyncio.create_task(store.write(write(k)))
                  for k in (b"queued-cancelled", b"queued-kept")]
        await until(lambda: store.queued == 2)
        in_flight[0].cancel()
        queued[0].cancel()
        engine.gate.set()
        assert (await in_flight[1]).applied
        assert (await queued[1]).applied
        assert (await store.write(write(b"after"))).applied
        for task in (in_flight[0], queued[0]):
            with pytest.raises(asyncio.CancelledError):
                await task
    # An in-flight write is committed anyway; a queued one is dropped unapplied.
    assert engine.batches == [[b"in-flight-cancelled", b"in-flight-kept"], [b"queued-kept"],
                              [b"after"]]


async def test_reads_go_to_the_engine() -> None:
    engine = FakeEngine()
    async with Store(engine) as store:
        await store.write(write(b"k", b"value"))
        assert store.read(0, b"k") == Record(b"", 1, False, b"value")
        assert store.read(0, b"absent") is None


async def test_concurrent_writes_share_lmdb_transactions(tmp_path: Path) -> None:
    engine = LmdbEngine(tmp_path / "db", map_size=64 << 20)
    observer = RecordingObserver()
    try:
        async with Store(engine, observer=observer) as store:
            await asyncio.gather(*(store.write(write(b"k%d" % i, b"v%d" % i)) for i in range(100)))
            assert all(store.read(0, b"k%d" % i).value == b"v%d" % i for i in range(100))  # type: ignore[union-attr]
    finally:
        engine.close()
    assert len(observer.batch_sizes) < 100 and sum(observer.batch_sizes) == 100
