"""The durability oracle: a check only a simulation can make, because it
sees every disk at once.

A put acknowledged with w=W promises that W replicas hold it durably: their
own disks, or (sloppy quorum only) a stand-in's disk holding a hint for
them. The oracle counts those copies of the put's write event (its dot: a
copy is any state whose history covers it, so a later write that replaced
the value still counts as carrying it) when the client gets the
acknowledgement, and then, every `interval`, for the puts whose copies
include hints, until every replica's own disk has it. Fewer than W copies
is a problem, less one per disk lost (wiped) since the put was invoked.
A key whose state somewhere is only tombstones is left alone: purging
tombstones removes histories on purpose.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from chaos.history import Op
from chaos.sim.node import SimNode
from kvstore.causality import versions
from kvstore.causality.versions import DVVSet, Dot
from kvstore.placement.membership import ClusterSpec
from kvstore.placement.ring import partition_of
from kvstore.storage.engine import Hint


@dataclass(frozen=True)
class _Watched:
    op: Op
    dot: Dot
    replicas: tuple[str, ...]


class DurabilityOracle:
    def __init__(self, nodes: dict[str, SimNode], spec: ClusterSpec,
                 disk_losses: list[float], say: Callable[[str], None]) -> None:
        self._nodes = nodes
        self._spec = spec
        self._disk_losses = disk_losses
        self._say = say
        self._watched: list[_Watched] = []
        self.problems: list[str] = []
        self.checked = 0

    def acknowledged(self, op: Op, state: DVVSet) -> None:
        """A put was acknowledged with `state`: are W replicas holding it now?"""
        assert op.value is not None
        value = op.value.encode()
        dots = [s.dot for s in state.siblings if s.value == value and not s.tombstone]
        if not dots:
            return  # a retried write answered with a later state: nothing to pin
        watched = _Watched(op, dots[0], tuple(self._spec.preference_list(op.key.encode())))
        self.checked += 1
        _disks, hinted = self._check(watched, "when it was acknowledged")
        if hinted:
            self._watched.append(watched)

    async def watch(self, interval: float) -> None:
        """Recount the hinted puts every `interval` until cancelled."""
        while True:
            await asyncio.sleep(interval)
            still = []
            for watched in self._watched:
                disks, hinted = self._check(watched, "later")
                if disks < len(watched.replicas) and hinted:
                    still.append(watched)
            self._watched = still

    def _check(self, watched: _Watched, when: str) -> tuple[int, int]:
        """(replicas whose disk has it, replicas that have it only as a hint)."""
        key = watched.op.key.encode()
        partition = partition_of(key, self._spec.partitions)
        disks, hinted = 0, 0
        holders: set[str] = set()
        for node_id in watched.replicas:
            record = self._nodes[node_id].engine.read(partition, key)
            if record is not None and record.tombstone:
                return len(watched.replicas), 0  # deleted: purges may remove histories
            if record is not None and _covers(versions.decode(record.value), watched.dot):
                holders.add(node_id)
        disks = len(holders)
        if not watched.op.strict:
            for node in self._nodes.values():
                for hint in _hints(node):
                    if (hint.key == key and hint.target in watched.replicas
                            and hint.target not in holders
                            and _covers(versions.decode(hint.record.value), watched.dot)):
                        holders.add(hint.target)
            hinted = len(holders) - disks
        lost = sum(1 for t in self._disk_losses if t > watched.op.invoke)
        required = watched.op.replicas - lost
        if len(holders) < required:
            self.problems.append(
                f"under-replicated: put {watched.op.key}={watched.op.value} (w="
                f"{watched.op.replicas}{', strict' if watched.op.strict else ''}) acknowledged "
                f"at {watched.op.complete:.3f}s is held by {len(holders)} replica(s) "
                f"({', '.join(sorted(holders)) or 'none'}) {when}, at "
                f"{asyncio.get_running_loop().time():.3f}s")
            self._say(f"ORACLE {self.problems[-1]}")
            return len(watched.replicas), 0  # reported once
        return disks, hinted


def _covers(state: DVVSet, dot: Dot) -> bool:
    return state.history.counters.get(dot.node_id, 0) >= dot.counter


def _hints(node: SimNode) -> list[Hint]:
    hints: list[Hint] = []
    after = -1
    while batch := node.engine.scan_hints(after, 256):
        hints += batch
        after = batch[-1].seq
    return hints
