"""One incarnation of a simulated node, whatever its mode: its tasks, and
their start and end. A crash (`kill`) cancels every task and keeps only what
the mode's machine holds on its disk; a subclass says in `_run` what the
process does and sets `_ready` once it serves."""

import asyncio
import logging
from collections.abc import Awaitable

from chaos.sim.network import Network

log = logging.getLogger(__name__)


class SimProcess:
    """A `Host` of the network (chaos/sim/network.py) with a lifecycle."""

    def __init__(self, name: str, network: Network) -> None:
        self.name = name
        self.paused = False
        self._alive = True
        self._network = network
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None
        self._ready = False

    # -- Host -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._alive and self._ready

    def spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._main = asyncio.get_running_loop().create_task(self._run())
        self._network.attach(self)

    async def kill(self) -> None:
        self._alive = False
        self._network.detach(self.name)
        tasks = [*self._tasks, *([self._main] if self._main else [])]
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError):
                log.error("%s died with %r", self.name, result, exc_info=result)

    async def _run(self) -> None:
        raise NotImplementedError
