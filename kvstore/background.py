"""The lifecycle of an object that runs tasks in the background: one task
group that owns every task it starts, and a stop request its loops watch.

`async with Thing(...) as thing:` enters the group and calls `_start`
(which creates the object's loops in `self._tasks`); leaving the block sets
`self._stopping`, calls `_stop` (for what cannot watch the event: a stream
to close, work that is not a task to wait for), waits for every task to end
(an error in the block cancels them first, as any TaskGroup does), then
calls `_close` to release what the object holds, whether the tasks ended
cleanly or not. Loops wait with `kvstore.schedule.pause(seconds,
self._stopping)`, which the stop request cuts short. Nothing here reads a
clock.
"""

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import Self, TypeVar

T = TypeVar("T")


class Background:
    def __init__(self) -> None:
        self._tasks = asyncio.TaskGroup()
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> Self:
        await self._tasks.__aenter__()
        self._start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._stopping.set()
        try:
            await self._stop()
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            await self._close()

    def _start(self) -> None:
        """Start the object's tasks in `self._tasks`; none by default."""

    async def _stop(self) -> None:
        """Once the stop is requested, before the tasks are awaited: end what
        does not watch `self._stopping`; nothing by default."""

    async def _close(self) -> None:
        """Release what the object holds once its tasks have ended; nothing by default."""

    def _future_of(self, work: Awaitable[T]) -> "asyncio.Future[T]":
        """`work` run as a task of this object's group, its outcome in the
        Future returned: an error is for whoever reads the Future, and does
        not cancel the group as a failed task would."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._tasks.create_task(_settle(work, future))
        return future


async def _settle(work: Awaitable[T], future: "asyncio.Future[T]") -> None:
    try:
        result = await work
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(result)
