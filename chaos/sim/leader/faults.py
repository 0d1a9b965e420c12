"""Leader mode's nemesis: the faults of `chaos.sim.faults` aimed at
leaders, and leader mode's own.

Three in four crashes, pauses, isolations and partitions hit a node that
leads the partition of a hot key (as Jepsen aims its faults), so that
leadership changes while the clients read and write; cuts, isolations and
partitions heal by themselves after `CUT_SECONDS` (unless a heal comes
first), crashed nodes restart after `DOWN_SECONDS`. Its own faults: a
crash between sending a pass's envelopes and persisting it
(`crash-persisting`), a partition into a minority (a leader among it,
mostly) and a majority, and a leadership transfer; in a quarter of the
seeds also backups and restores (`RESTORE_KINDS`): every node is backed
up soon after the start, `backup` copies a running node's store again
(`kvstore admin snapshot`), `restore` stops a node
that has a backup and puts it back, fenced above the highest term of the
others (`kvstore admin restore`: refused, as the tool refuses, while
another node does not answer), and the node restarts a while later. No
wipes: a Raft voter never loses its disk without leaving its groups (a
restore is how an operator brings one back).
"""

import asyncio
import random
from collections.abc import Coroutine, Sequence
from typing import Any

from chaos.sim.faults import FaultLog, FaultSettings, Machine, Nemesis
from chaos.sim.leader.node import LeaderMachine
from chaos.sim.network import Network
from kvstore.leader.raft.raft import Role

# Of the crashes, pauses and isolations, the share aimed at a leader.
LEADER_TARGET_SHARE = 0.75
# How long a cut or an isolation lasts, unless a heal ends it first; and a
# crashed node stays down, unless a restart comes first.
CUT_SECONDS = (0.5, 3.0)
DOWN_SECONDS = (0.3, 3.0)

FAULT_KINDS = ("crash", "crash-persisting", "restart", "pause", "transfer-leader",
               "cut", "cut-both", "isolate", "partition", "partition", "heal")
RESTORE_KINDS = ("backup", "restore", "restore", "restore")


class LeaderNemesis(Nemesis):
    """`Nemesis`, its targets mostly leaders of hot partitions (`hot`), its
    cuts and crashes undone after a while, and leader mode's own faults."""

    def __init__(self, nodes: dict[str, LeaderMachine], network: Network,
                 settings: FaultSettings, rng: random.Random, log: FaultLog,
                 hot: tuple[int, ...]) -> None:
        super().__init__(nodes, network, settings, rng, log)
        self._machines = nodes
        self._hot = hot  # the partitions of the clients' keys
        self._healing: set[asyncio.Task[None]] = set()

    async def run(self, until: float) -> None:
        if "restore" in self._settings.kinds:
            # The night's backups: every node's, soon after the start, so a
            # restore has one to go back to (`backup` refreshes one).
            await asyncio.sleep(self._rng.uniform(0.2, 1.0))
            for node in sorted(self._machines.values(), key=lambda n: n.node_id):
                if node.process is not None:
                    node.take_backup()
            self._log.action("backup", "every node")
        await super().run(until)

    def _target(self, candidates: Sequence[Machine]) -> Machine:
        leaders = [node for node in candidates if self._led(node)]
        if leaders and self._rng.random() < LEADER_TARGET_SHARE:
            return self._rng.choice(leaders)
        return super()._target(candidates)

    def _led(self, node: Machine) -> list[int]:
        """The hot partitions `node` leads."""
        assert isinstance(node, LeaderMachine)
        host = node.process.host if node.process is not None else None
        if host is None:
            return []
        return [g for g in self._hot if g in host.groups()
                and host.status(g).role is Role.LEADER]

    async def _act(self, kind: str) -> None:
        if kind == "backup":
            self._backup()
            return
        if kind == "restore":
            await self._restore()
            return
        if kind == "transfer-leader":
            self._transfer()
            return
        if kind == "partition":
            self._partition()
            return
        if kind != "crash-persisting":
            before, running = self._network.cuts, self._running()
            await super()._act(kind)
            cut = self._network.cuts - before
            if cut:  # a partition heals itself after a while (unless a heal comes first)
                self._spawn(self._heal_later(cut, self._rng.uniform(*CUT_SECONDS)))
            for name in sorted(running - self._running()):  # and a crashed node restarts
                self._spawn(self._restart_later(self._machines[name],
                                                self._rng.uniform(*DOWN_SECONDS)))
            return
        up = sorted(self._up(), key=lambda n: n.node_id)
        if up and len(self._down()) < self._settings.max_down:
            node = self._target(up)
            assert isinstance(node, LeaderMachine)
            node.crash_while_persisting()
            self._log.action("crash-persisting", f"{node.node_id} at its next write")
            self._spawn(self._restart_later(node, self._rng.uniform(*DOWN_SECONDS)))

    def _backup(self) -> None:
        running = sorted((n for n in self._machines.values() if n.process is not None),
                         key=lambda n: n.node_id)
        if running:
            node = self._rng.choice(running)
            node.take_backup()
            self._log.action("backup", node.node_id)

    async def _restore(self) -> None:
        backed_up = sorted((n for n in self._machines.values() if n.backup is not None),
                           key=lambda n: n.node_id)
        if not backed_up:
            return
        node = self._rng.choice(backed_up)
        if node.process is not None and len(self._down()) >= self._settings.max_down:
            return
        terms: list[int] = []
        silent: list[str] = []
        fenced: list[str] = []
        for other in sorted(self._machines.values(), key=lambda n: n.node_id):
            if other is node:
                continue
            process = other.process
            if process is None or process.paused or process.host is None:
                silent.append(other.node_id)
                continue
            statuses = [process.host.status(g) for g in process.host.groups()]
            terms += [status.term for status in statuses]
            if any(status.fence for status in statuses):
                fenced.append(other.node_id)
        if silent or fenced:
            why = (f"{' '.join(silent)} does not answer" if silent
                   else f"{' '.join(fenced)} is fenced still")
            self._log.action("restore-refused", f"{node.node_id}: {why}")
            return
        if node.process is not None:
            await node.crash()
        highest = max(terms, default=0)
        groups = node.restore(highest)
        self._log.action("restore", f"{node.node_id} from its backup, {groups} group(s) "
                         f"fenced above term {highest}")
        self._spawn(self._restart_later(node, self._rng.uniform(*DOWN_SECONDS)))

    def _running(self) -> set[str]:
        return {name for name, node in self._machines.items() if node.process is not None}

    async def _restart_later(self, node: LeaderMachine, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if node.process is None:
            node.start()
            self._log.action("restart", node.node_id)
        else:
            node.crash_while_persisting(False)  # it wrote nothing meanwhile

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._healing.add(task)
        task.add_done_callback(self._healing.discard)

    async def _heal_later(self, links: frozenset[tuple[str, str]], seconds: float) -> None:
        await asyncio.sleep(seconds)
        links &= self._network.cuts
        for src, dst in sorted(links):
            self._network.heal(src, dst)
        if links:
            self._log.action("heal-links", ", ".join(f"{a}->{b}" for a, b in sorted(links)))

    def _partition(self) -> None:
        """Cut the nodes into a minority (a leader among it, mostly) and a
        majority, both ways, for a while: on five nodes the minority's
        other node may replicate none of the leader's partitions, and keeps
        sending it what it is asked."""
        machines = sorted(self._machines.values(), key=lambda n: n.node_id)
        target = self._target(machines)
        led = self._led(target)
        assert isinstance(target, LeaderMachine)
        voters = (target.spec.ring.preference_list(self._rng.choice(led), target.spec.replicas)
                  if led else [])
        # The minority's others: outside the group the target leads, where
        # there are such nodes, so the group loses its quorum.
        others = [n.node_id for n in machines if n.node_id not in voters and n is not target]
        others += [n.node_id for n in machines if n.node_id in voters and n is not target]
        minority = {target.node_id, *others[:(len(machines) - 1) // 2 - 1]}
        majority = [n.node_id for n in machines if n.node_id not in minority]
        cut = frozenset((a, b) for a in sorted(minority) for b in majority)
        cut |= {(b, a) for a, b in cut}
        for src, dst in sorted(cut):
            self._network.cut(src, dst)
        self._log.action("partition", f"{' '.join(sorted(minority))} | {' '.join(majority)}")
        self._spawn(self._heal_later(cut, self._rng.uniform(*CUT_SECONDS)))

    def _transfer(self) -> None:
        leaders = [(node, g) for node in sorted(self._machines.values(),
                                                key=lambda n: n.node_id)
                   for g in self._led(node)]
        if not leaders:
            return
        node, group = self._rng.choice(leaders)
        voters = node.spec.ring.preference_list(group, node.spec.replicas)
        to = self._rng.choice([v for v in voters if v != node.node_id])
        node.transfer_leadership(group, to)
        self._log.action("transfer-leader", f"partition {group} from {node.node_id} to {to}")

    def stop(self) -> None:
        """Cancel what the nemesis left to do later (resumes, heals)."""
        for task in [*self._healing, *self._resumes]:
            task.cancel()

    async def heal(self) -> None:
        for task in list(self._healing):
            task.cancel()
        for node in self._nodes.values():
            assert isinstance(node, LeaderMachine)
            node.crash_while_persisting(False)
        await super().heal()
