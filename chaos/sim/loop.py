"""An asyncio event loop on virtual time: the simulation's scheduler.

`VirtualTimeLoop` is asyncio's own `BaseEventLoop` (so tasks, futures,
timeouts, TaskGroups and `call_later` behave exactly as in production) with
two changes: `time()` reads a virtual clock, and where the real loop would
block in `select()` until the next timer, this one jumps the clock to that
timer at once. Nothing waits in wall-clock time, so a simulated minute takes
as long as the work done in it, and the order in which callbacks run
depends only on what the code does: the same program gives the same run.

There is no I/O: no selector, no sockets, no self-pipe. A loop with nothing
ready and no timer would block forever; here that is a bug of the
simulation and raises `Deadlock`.
"""

import asyncio
import asyncio.base_events
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: every task waits on something
    that will never happen."""


class _VirtualSelector:
    """What `BaseEventLoop._run_once` calls to wait: advances the clock."""

    def __init__(self, loop: "VirtualTimeLoop") -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Deadlock("no callback is ready and no timer is set")
        if timeout > 0:
            self._loop.advance_to_next_timer(timeout)
        return []

    def close(self) -> None:
        pass


class VirtualTimeLoop(asyncio.base_events.BaseEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now = start
        self._selector = _VirtualSelector(self)

    def time(self) -> float:
        return self._now

    def advance_to_next_timer(self, timeout: float) -> None:
        # Exactly to the timer's deadline (not now + timeout, which float
        # rounding could leave a hair short of it).
        scheduled = self._scheduled  # type: ignore[attr-defined]  # asyncio's timer heap
        self._now = max(self._now, scheduled[0].when() if scheduled else self._now + timeout)

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # no other thread ever wakes this loop


def run_virtual(main: Coroutine[Any, Any, T], start: float = 0.0) -> T:
    """Run `main` to completion on a fresh virtual-time loop, then close it."""
    loop = VirtualTimeLoop(start)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
