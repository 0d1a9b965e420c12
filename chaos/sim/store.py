"""The simulation's async front of an `Engine`: group commit on the event
loop, in virtual time, with the production `Store`'s contract.

Writes queue; one commit at a time takes every write queued when it starts,
spends a (seeded) commit time, applies the batch to the engine in one
transaction, tells `on_applied` about each applied write in commit order,
then answers the writers. A crash (leaving the `async with` block by
cancellation, or `crash()`) abandons the commit in progress and the queue:
those writes were never committed and their writers never answered, which
is exactly what a crash of a real node loses.
"""

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Self

from kvstore.errors import KVStoreError, Unavailable
from kvstore.storage.engine import UNBOUNDED, Change, Engine, Hint, WriteResult
from kvstore.storage.record import Record

log = logging.getLogger(__name__)


class SimStore:
    def __init__(self, engine: Engine, commit_seconds: Callable[[], float], *,
                 on_applied: Callable[[Change, WriteResult], None] | None = None) -> None:
        self._engine = engine
        self._commit_seconds = commit_seconds
        self._on_applied = on_applied
        self._queue: list[tuple[Change, asyncio.Future[WriteResult]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.crash()

    def crash(self) -> None:
        """Stop at once: nothing queued or in the commit under way is kept."""
        self._open = False
        if self._committer is not None:
            self._committer.cancel()
        self._queue.clear()

    async def write(self, write: Change) -> WriteResult:
        if not self._open:
            raise Unavailable("the node is not running")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.get_running_loop().create_task(self._commit_all())
        return await future

    @property
    def queued(self) -> int:
        return len(self._queue)

    def read(self, partition: int, key: bytes) -> Record | None:
        return self._engine.read(partition, key)

    def scan_hints(self, after: int = -1, limit: int = 256,
                   max_bytes: int = UNBOUNDED) -> list[Hint]:
        return self._engine.scan_hints(after, limit, max_bytes)

    async def _commit_all(self) -> None:
        while self._queue:
            batch = [(write, future) for write, future in self._queue if not future.done()]
            self._queue = []
            if not batch:
                continue
            await asyncio.sleep(self._commit_seconds())  # the fsync
            results: list[WriteResult | KVStoreError] = self._engine.commit(
                [write for write, _ in batch])
            for (write, future), result in zip(batch, results, strict=True):
                if isinstance(result, WriteResult) and self._on_applied is not None:
                    self._on_applied(write, result)
                if future.done():
                    continue  # the writer gave up; the write is committed all the same
                if isinstance(result, KVStoreError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
