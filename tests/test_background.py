"""The background lifecycle: loops start on entry, a stop request ends
their pauses on exit, every task is awaited, and what the object holds is
released even when a task failed (which cancels the block)."""

import asyncio

import pytest

from kvstore.background import Background
from kvstore.schedule import pause

pytestmark = pytest.mark.timeout(10)


class Ticker(Background):
    """Counts rounds an hour apart: only the stop request can end its pause."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.rounds = 0
        self.first_round = asyncio.Event()
        self.finished = False
        self.closed_after_finish: bool | None = None
        self._fail = fail

    def _start(self) -> None:
        self._tasks.create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self.rounds += 1
            self.first_round.set()
            if self._fail:
                raise RuntimeError("a loop's bug")
            await pause(3600, self._stopping)
        self.finished = True

    async def _close(self) -> None:
        self.closed_after_finish = self.finished


async def test_leaving_stops_the_loops_and_waits_for_them_before_closing() -> None:
    async with Ticker() as ticker:
        await ticker.first_round.wait()
        assert ticker.rounds == 1 and not ticker.finished
    assert ticker.finished and ticker.closed_after_finish is True


async def test_a_failed_task_is_raised_on_exit_and_the_object_is_still_closed() -> None:
    ticker = Ticker(fail=True)
    with pytest.raises(ExceptionGroup) as raised:
        async with ticker:
            await asyncio.Event().wait()  # until the failure cancels the block
    assert raised.group_contains(RuntimeError, match="a loop's bug")
    assert ticker.closed_after_finish is False
