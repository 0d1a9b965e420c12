"""The async front of an `Engine`: group commit in a dedicated writer thread.

Owns the write queue and the one commit thread. Writes that arrive while a
commit is in flight wait together; when it ends the thread takes all of them
(up to max_batch) into the next transaction at once, so N concurrent writers
pay for about one fsync, not N. There is no timer: an idle store commits a
lone write at once. Each writer is answered only after the transaction
holding its write committed.

The commit loop runs in its own thread, not as an event-loop task, so the next
commit starts the moment the previous one ends, however busy the event loop
is; the loop only enqueues writes and, once per batch, answers the writers.
Never blocks the event loop on a commit, and never reorders writes: batches go
to the engine in arrival order, one at a time.

Traced (a `Tracing` given, and a write made within a trace): the write has
a span, `storage.write`, from when it is queued until it is answered (the
wait for a commit shows as the gap before the commit's span starts), and
each commit that holds such writes one span, `storage.commit`, of its own
trace, linked to theirs and they to it: one commit serves many requests.
"""

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from kvclient.tracing import Tracing
from kvstore.errors import KVStoreError, Unavailable
from kvstore.storage.record import Record
from kvstore.storage.engine import UNBOUNDED, Change, CommitObserver, Engine, Hint, WriteResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Pending:
    write: Change
    future: "asyncio.Future[WriteResult]"
    span: Any = None  # its storage.write span, when traced


class Store:
    """`async with Store(engine) as store:` then `await store.write(w)`.

    Leaving the block commits and answers every write already queued, then
    returns; closing the engine stays with the caller.
    """

    def __init__(
        self, engine: Engine, *, max_batch: int = 1024, commit_delay: float = 0.0,
        observer: CommitObserver | None = None,
        on_applied: Callable[[Change, WriteResult], None] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        # Told about every committed change, on the event loop, in commit order
        # (the Merkle trees follow the data this way).
        self._on_applied = on_applied
        self._tracing = tracing
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if commit_delay < 0:
            raise ValueError(f"commit_delay must be at least 0, got {commit_delay}")
        self._commit_delay = commit_delay
        self._last_batch_size = 0
        # True while the commit thread waits for a first write: only then do
        # writers need to wake it (a wake-up per write would cost a context
        # switch each).
        self._idle = False
        self._engine = engine
        self._max_batch = max_batch
        self._observer = observer
        self._queue: deque[_Pending] = deque()
        self._wakeup = threading.Condition(threading.Lock())
        self._open = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Self:
        if self._open or self._closing:
            raise RuntimeError("a Store can be entered once")
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._commit_loop, name="lmdb-commit", daemon=True)
        self._thread.start()
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._thread is not None and self._stopped is not None
        self._open = False
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()  # whether idle or in a commit delay
        # The thread drains the queue before it stops, and answers its last
        # batch before it resolves `_stopped` (call_soon_threadsafe keeps
        # order), so every queued write has its answer when this returns.
        # Shielded: the engine must not be closed under a running commit.
        try:
            await asyncio.shield(self._stopped)
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def write(self, write: Change) -> WriteResult:
        """The write's result once its transaction is durable; its KVStoreError if it failed."""
        if not self._open:
            raise Unavailable(
                "the node is shutting down (or not started); retry on another replica")
        assert self._loop is not None
        future: asyncio.Future[WriteResult] = self._loop.create_future()
        span = None
        if self._tracing is not None and self._tracing.in_trace():
            span = self._tracing.start("storage.write")
        with self._wakeup:
            self._queue.append(_Pending(write, future, span))
            if self._idle:
                self._wakeup.notify()
        if span is None:
            return await future
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():  # else it was answered: _settle ended the span
                span.end()
            raise

    @property
    def queued(self) -> int:
        """Writes waiting for a commit that has not started yet (a queue-depth gauge)."""
        return len(self._queue)

    def scan_hints(self, after: int = -1, limit: int = 256,
                   max_bytes: int = UNBOUNDED) -> list[Hint]:
        return self._engine.scan_hints(after, limit, max_bytes)

    def read(self, partition: int, key: bytes) -> Record | None:
        # On the loop thread on purpose: an LMDB read is a lookup in a memory
        # map that never waits for a commit (MVCC), cheaper than a thread hop.
        return self._engine.read(partition, key)

    # -- the commit thread ---------------------------------------------------

    def _commit_loop(self) -> None:
        assert self._loop is not None and self._stopped is not None
        try:
            while (batch := self._next_batch()) is not None:
                started_ns = time.time_ns() if self._tracing is not None else 0
                started = time.perf_counter()
                try:
                    results: list[WriteResult | KVStoreError] = list(
                        self._engine.commit([pending.write for pending in batch])
                    )
                except Exception as exc:  # the engine's bug: fail the batch, keep going
                    logger.error("commit of %d writes failed", len(batch), exc_info=exc)
                    results = [_commit_failed(exc) for _ in batch]
                if len(results) != len(batch):
                    failure = RuntimeError(
                        f"engine returned {len(results)} results for {len(batch)} writes"
                    )
                    results = [_commit_failed(failure) for _ in batch]
                seconds = time.perf_counter() - started
                self._loop.call_soon_threadsafe(self._settle, batch, results, seconds, started_ns)
        finally:
            self._loop.call_soon_threadsafe(_resolve, self._stopped)

    def _next_batch(self) -> list[_Pending] | None:
        """Up to max_batch queued writes, oldest first; None once closed and empty."""
        while True:
            with self._wakeup:
                while not self._queue:
                    if self._closing:
                        return None
                    self._idle = True
                    self._wakeup.wait()
                    self._idle = False
                if self._should_delay():
                    # Woken early only by close; writers do not notify now.
                    self._wakeup.wait(self._commit_delay)
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            self._last_batch_size = len(batch)
            # A writer cancelled while queued is skipped (done() is only a
            # hint off the loop thread: at worst a cancelled write commits).
            batch = [pending for pending in batch if not pending.future.done()]
            if batch:
                return batch

    def _should_delay(self) -> bool:
        return (
            self._commit_delay > 0
            and self._last_batch_size > 1
            and len(self._queue) < self._max_batch
            and not self._closing
        )

    def _settle(
        self, batch: list[_Pending], results: Sequence[WriteResult | KVStoreError], seconds: float,
        started_ns: int = 0,
    ) -> None:
        if self._tracing is not None:
            self._trace_commit(self._tracing, batch, results, started_ns)
        for pending, result in zip(batch, results):
            if self._on_applied is not None and isinstance(result, WriteResult):
                try:
                    self._on_applied(pending.write, result)
                except Exception:
                    logger.exception("on_applied failed")
            _answer(pending, result)
        if self._observer is not None:
            try:
                self._observer.observe_commit(len(batch), seconds)
            except Exception:
                logger.exception("commit observer failed")


    @staticmethod
    def _trace_commit(tracing: Tracing, batch: list[_Pending],
                      results: Sequence[WriteResult | KVStoreError], started_ns: int) -> None:
        """The commit's span, linked to its traced writes' spans, which end
        now (their writers are answered right after)."""
        traced = [(pending.span, result) for pending, result in zip(batch, results)
                  if pending.span is not None and not pending.future.done()]
        if not traced:
            return
        commit = tracing.start("storage.commit", root=True, start_time=started_ns,
                               links=[tracing.link(span) for span, _ in traced],
                               attributes={"kvstore.commit.writes": len(batch)})
        commit.end()
        for span, result in traced:
            span.add_link(commit.get_span_context())
            if isinstance(result, KVStoreError):
                tracing.failed(span, result, server=True)
            span.end()


def _resolve(future: "asyncio.Future[None]") -> None:
    if not future.done():
        future.set_result(None)


def _answer(pending: _Pending, result: WriteResult | KVStoreError) -> None:
    if pending.future.done():  # the writer was cancelled; nobody to tell
        return
    if isinstance(result, KVStoreError):
        pending.future.set_exception(result)
    else:
        pending.future.set_result(result)


def _commit_failed(cause: BaseException) -> Unavailable:
    error = Unavailable(
        f"the storage engine failed to commit ({cause!r}); the write may not have been applied"
    )
    error.__cause__ = cause
    return error
