"""The nemesis: the faults of a chaos run, on a schedule drawn from the seed.

Faults, one at a time (so at most one process is ever down or paused: with
N=3 and R=W=2 every key keeps a quorum of live replicas):
- "kill": SIGKILL a storage node, restart it after a while with the same
  command line (same ports, same data);
- "pause": SIGSTOP a storage node, SIGCONT it after a while (a process that
  hangs: its sockets stay open, nothing answers);
- "kill-coordinator": the same as "kill", for a coordinator process.

`schedule` is pure: the same seed gives the same sequence of faults, targets,
gaps and lengths (only their wall-clock placement depends on how long the
processes take to come back). `Nemesis` carries it out and logs every action
in the history. It never checks anything.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from chaos.cluster import LocalCluster, Server
from chaos.history import History

KILL, PAUSE, KILL_COORDINATOR = "kill", "pause", "kill-coordinator"


@dataclass(frozen=True)
class NemesisSettings:
    gap: tuple[float, float] = (0.5, 3.0)  # seconds of calm before each fault
    # Seconds a process stays down or paused: up to twice the workload's
    # 4 s timeout, so some calls to a paused process time out (unknown outcome).
    length: tuple[float, float] = (1.0, 8.0)
    weights: tuple[tuple[str, int], ...] = ((KILL, 4), (PAUSE, 4), (KILL_COORDINATOR, 2))

    @property
    def longest_fault(self) -> float:
        return self.length[1]


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str  # process id
    wait_before: float
    length: float


def schedule(rng: random.Random, nodes: Sequence[str], coordinators: Sequence[str],
             settings: NemesisSettings = NemesisSettings()) -> Iterator[Fault]:
    """An endless sequence of faults; the caller stops taking them."""
    kinds = [(kind, weight) for kind, weight in settings.weights
             if coordinators or kind != KILL_COORDINATOR]
    while True:
        (kind,) = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds])
        target = rng.choice(list(coordinators if kind == KILL_COORDINATOR else nodes))
        yield Fault(kind, target, rng.uniform(*settings.gap), rng.uniform(*settings.length))


async def _nothing(server: Server) -> None:
    pass


class Nemesis:
    """`before_kill` is awaited just before a process is SIGKILLed, e.g. to
    read its counters, which the kill resets."""

    def __init__(self, cluster: LocalCluster, history: History, rng: random.Random,
                 settings: NemesisSettings = NemesisSettings(),
                 say: Callable[[str], None] = lambda line: None,
                 before_kill: Callable[[Server], Awaitable[None]] = _nothing) -> None:
        self._before_kill = before_kill
        self._cluster = cluster
        self._history = history
        self._rng = rng
        self._settings = settings
        self._say = say
        self.injected: Counter[str] = Counter()

    async def run(self, until: float) -> None:
        """Inject faults until the run's clock reaches `until`; every fault
        started is healed (and its process healthy) before this returns."""
        faults = schedule(self._rng, [s.server_id for s in self._cluster.of_role("node")],
                          [s.server_id for s in self._cluster.of_role("coordinator")],
                          self._settings)
        for fault in faults:
            if self._history.now() + fault.wait_before + fault.length > until:
                return
            await asyncio.sleep(fault.wait_before)  # the schedule, not synchronisation
            await self._inject(fault)

    async def _inject(self, fault: Fault) -> None:
        server = self._cluster.servers[fault.target]
        self.injected[fault.kind] += 1
        if fault.kind == PAUSE:
            await self._pause(fault, server)
        else:
            await self._kill(fault, server)
        took = await self._cluster.wait_healthy(server)
        self._log("healthy", fault, f"serving {took:.2f} s after it was healed")

    async def _kill(self, fault: Fault, server: Server) -> None:
        await self._before_kill(server)
        self._cluster.kill(server)
        self._log("kill", fault, f"SIGKILL pid {server.pid}; restart in {fault.length:.2f} s")
        try:
            await self._cluster.wait_gone(server)
            await asyncio.sleep(fault.length)  # the schedule: how long it stays down
        finally:
            self._cluster.restart(server)
            self._log("restart", fault, f"pid {server.pid}")

    async def _pause(self, fault: Fault, server: Server) -> None:
        self._cluster.pause(server)
        self._log("pause", fault, f"SIGSTOP pid {server.pid}; resume in {fault.length:.2f} s")
        try:
            await asyncio.sleep(fault.length)  # the schedule: how long it stays paused
        finally:
            self._cluster.resume(server)
            self._log("resume", fault, f"SIGCONT pid {server.pid}")

    def _log(self, action: str, fault: Fault, detail: str) -> None:
        event = self._history.fault(action, fault.kind, fault.target, detail)
        self._say(f"{event.time:7.2f}s  {action:<8} {fault.target:<4} {detail}")
