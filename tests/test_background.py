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


class Streamer(Background):
    """A loop that does not watch the stop request (it waits on a stream of
    its own); `_stop` ends it."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self._stream_ended = asyncio.Event()

    def _start(self) -> None:
        self._tasks.create_task(self._run())

    async def _run(self) -> None:
        await self._stream_ended.wait()
        self.order.append("loop ended")

    async def _stop(self) -> None:
        self.order.append("stop")
        self._stream_ended.set()

    async def _close(self) -> None:
        self.order.append("close")


async def test_stop_runs_before_the_tasks_are_awaited_and_ends_what_ignores_the_request() -> None:
    async with Streamer() as streamer:
        pass
    assert streamer.order == ["stop", "loop ended", "close"]


async def test_work_run_as_a_future_gives_its_error_to_the_future_not_to_the_group() -> None:
    async def fails() -> int:
        raise ValueError("the work's own error")

    async def answers() -> int:
        return 42

    async with Ticker() as ticker:
        failed, answered = ticker._future_of(fails()), ticker._future_of(answers())
        assert isinstance(failed, asyncio.Future) and not isinstance(failed, asyncio.Task)
        with pytest.raises(ValueError, match="the work's own error"):
            await failed
        assert await answered == 42
    assert ticker.finished  # the group was not cancelled by the failure
