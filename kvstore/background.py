"""The lifecycle of an object that runs tasks in the background: one task
group that owns every task it starts, and a stop request its loops watch.

`async with Thing(...) as thing:` enters the group and calls `_start`
(which creates the object's loops in `self._tasks`); leaving the block sets
`self._stopping`, waits for every task to end (an error in the block
cancels them first, as any TaskGroup does), then calls `_close` to release
what the object holds, whether the tasks ended cleanly or not. Loops wait
with `kvstore.schedule.pause(seconds, self._stopping)`, which the stop
request cuts short. Nothing here reads a clock.
"""

import asyncio
from types import TracebackType
from typing import Self


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
            await self._tasks.__aexit__(exc_type, exc, tb)
        finally:
            await self._close()

    def _start(self) -> None:
        """Start the object's tasks in `self._tasks`; none by default."""

    async def _close(self) -> None:
        """Release what the object holds once its tasks have ended; nothing by default."""
