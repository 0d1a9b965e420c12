"""The simulation's nemesis: a seeded schedule of faults during the run,
and the heal after it.

Every so often it picks one of: crash a node (at most `max_down` down at
once), restart a crashed one, wipe a crashed node's disk and restart it
(at most `max_wipes` per run: quorums only protect what a quorum of disks
keeps), pause a node for a while (it neither sends nor receives; what was
sent to it waits), cut a link one way, cut it both ways, isolate a node
from every other, or heal every cut. Each action goes to the trace and, for
the checkers, to the list of faults. `heal` ends every fault: resumes the
paused, heals the links and restarts the crashed.
"""

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from typing import Protocol

from chaos.sim.network import Network


class _Process(Protocol):
    paused: bool


class Machine(Protocol):
    """A simulated node as the nemesis handles it (`node.SimNode`, or
    leader mode's `leader.node.LeaderMachine`)."""

    node_id: str

    @property
    def process(self) -> _Process | None:
        """The incarnation running now; None while crashed."""
        ...

    def start(self) -> None: ...

    async def crash(self) -> None: ...

    def wipe(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


@dataclass(frozen=True)
class FaultSettings:
    min_gap: float = 0.3  # seconds between two actions
    max_gap: float = 2.0
    max_down: int = 1  # nodes crashed or paused at once
    max_wipes: int = 0
    max_pause: float = 3.0
    kinds: tuple[str, ...] = ("crash", "restart", "wipe", "pause", "cut", "cut-both",
                              "isolate", "heal")

    def describe(self) -> str:
        kinds = ", ".join(dict.fromkeys(self.kinds))
        return (f"every {self.min_gap:g}-{self.max_gap:g} s one of {kinds}; "
                f"at most {self.max_down} down, {self.max_wipes} wipe(s)")


@dataclass
class FaultLog:
    """What the nemesis did: the trace's lines, and when disks were lost."""

    say: Callable[[str], None]
    disk_losses: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def action(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.say(f"FAULT {kind} {detail}")


class Nemesis:
    def __init__(self, nodes: Mapping[str, Machine], network: Network, settings: FaultSettings,
                 rng: random.Random, log: FaultLog) -> None:
        self._nodes = nodes
        self._network = network
        self._settings = settings
        self._rng = rng
        self._log = log
        self._wipes = 0
        self._resumes: set[asyncio.Task[None]] = set()

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        settings, rng = self._settings, self._rng
        while True:
            gap = rng.uniform(settings.min_gap, settings.max_gap)
            if loop.time() + gap >= until:
                break
            await asyncio.sleep(gap)
            await self._act(rng.choice(settings.kinds))

    def _down(self) -> list[Machine]:
        return [n for n in self._nodes.values()
                if n.process is None or n.process.paused]

    def _up(self) -> list[Machine]:
        return [n for n in self._nodes.values() if n.process is not None and not n.process.paused]

    def _target(self, candidates: Sequence[Machine]) -> Machine:
        """The node a crash, pause or isolation hits, among `candidates`."""
        return self._rng.choice(candidates)

    async def _act(self, kind: str) -> None:
        rng, log = self._rng, self._log
        crashed = sorted((n for n in self._nodes.values() if n.process is None),
                         key=lambda n: n.node_id)
        up = sorted(self._up(), key=lambda n: n.node_id)
        names = sorted(self._nodes)
        room = len(self._down()) < self._settings.max_down
        if kind == "crash" and room and up:
            node = self._target(up)
            await node.crash()
            log.action("crash", node.node_id)
        elif kind == "restart" and crashed:
            node = rng.choice(crashed)
            node.start()
            log.action("restart", node.node_id)
        elif kind == "wipe" and crashed and self._wipes < self._settings.max_wipes:
            node = rng.choice(crashed)
            self._wipes += 1
            node.wipe()
            node.start()
            log.disk_losses.append(asyncio.get_running_loop().time())
            log.action("wipe", f"{node.node_id} (disk lost, restarted empty)")
        elif kind == "pause" and room and up:
            node = self._target(up)
            seconds = rng.uniform(0.2, self._settings.max_pause)
            node.pause()
            log.action("pause", f"{node.node_id} for {seconds:.2f}s")
            task = asyncio.get_running_loop().create_task(self._resume_later(node, seconds))
            self._resumes.add(task)
            task.add_done_callback(self._resumes.discard)
        elif kind in ("cut", "cut-both"):
            src, dst = rng.sample(names, 2)
            self._network.cut(src, dst)
            if kind == "cut-both":
                self._network.cut(dst, src)
            log.action(kind, f"{src} {'<->' if kind == 'cut-both' else '->'} {dst}")
        elif kind == "isolate":
            node_id = self._target(sorted(self._nodes.values(),
                                          key=lambda n: n.node_id)).node_id
            for other in names:
                if other != node_id:
                    self._network.cut(node_id, other)
                    self._network.cut(other, node_id)
            log.action("isolate", node_id)
        elif kind == "heal" and self._network.cuts:
            self._network.heal_all()
            log.action("heal", "every link")

    async def _resume_later(self, node: Machine, seconds: float) -> None:
        process = node.process
        await asyncio.sleep(seconds)
        if node.process is process and process is not None and process.paused:
            node.resume()
            self._log.action("resume", node.node_id)

    async def heal(self) -> None:
        """End every fault: the paused resume, links heal, the crashed restart."""
        for task in list(self._resumes):
            task.cancel()
        for node in sorted(self._nodes.values(), key=lambda n: n.node_id):
            if node.process is not None and node.process.paused:
                node.resume()
                self._log.action("resume", node.node_id)
        self._network.heal_all()
        for node in sorted(self._nodes.values(), key=lambda n: n.node_id):
            if node.process is None:
                node.start()
                self._log.action("restart", node.node_id)
        self._log.say("HEALED every fault")
