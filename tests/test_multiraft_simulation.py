"""The multi-Raft host under seeded faults: several hosts over the in-memory
network of `tests/multiraft_cluster.py`, with lost envelopes, cut links,
crashes (some between sending and persisting a pass) and restarts, while
clients write (puts, deletes, compare-and-set, retries of writes whose
outcome they did not learn) and read. Checked:

- state machine safety: no two nodes apply different entries, or get
  different outcomes, at an index of a group;
- acknowledged writes: the outcome a client was told is the one every node
  applied at that index;
- linearizable reads: a read sees at least every write acknowledged before
  it began;
- retries apply once: a request id applies at one index at most;
- and once healed, every group elects a leader, every replica converges on
  the same state, and the groups quiesce.

A seed replays exactly: the failing one is in the assertion message, and
`Sim(seed).run()` runs it again (a planted bug that drops request-id
deduplication fails most seeds; one that serves reads before their index
applies fails a few).
"""

import random
from dataclasses import dataclass, field

import pytest

from kvstore.errors import KVStoreError
from kvstore.leader import commands
from kvstore.leader.commands import Command, Delete, Put
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.persistence import PassResult, PassWrite
from kvstore.leader.state_machine import Outcome, Status
from kvstore.leader.waiters import ReadValue, Ticket
from tests.multiraft_cluster import HostCluster
from tests.properties import QUICK

pytestmark = pytest.mark.timeout(120)

SEEDS = range(1, 11 if QUICK else 41)
GROUPS = 3
KEYS = (b"a", b"b", b"c")


class RecordingStore(MemoryRaftStore):
    """Records, per group and index, what it applied: (term, data, outcome)."""

    def __init__(self, applied: dict[int, dict[int, tuple[int, bytes, Outcome | None]]]) -> None:
        super().__init__()
        self.applied = applied

    def write(self, batch: PassWrite) -> PassResult:
        result = super().write(batch)
        for write in batch.groups:
            done = result.groups[write.group]
            outcomes = dict(done.outcomes)
            log = self.applied.setdefault(write.group, {})
            for entry in write.committed:
                if entry.index <= done.applied and (entry.index in outcomes or not entry.data):
                    log[entry.index] = (entry.term, entry.data, outcomes.get(entry.index))
        return result


@dataclass
class Pending:
    node: str
    group: int
    started: int  # the step it began at
    command: Command | None = None
    key: bytes = b""


@dataclass
class Sim:
    seed: int
    rng: random.Random = field(init=False)
    cluster: HostCluster = field(init=False)
    applied: dict[str, dict[int, dict[int, tuple[int, bytes, Outcome | None]]]] = field(
        default_factory=dict)
    pending: dict[tuple[str, Ticket], Pending] = field(default_factory=dict)
    acknowledged: list[tuple[int, int, Command, Outcome]] = field(default_factory=list)
    reads: list[tuple[Pending, ReadValue]] = field(default_factory=list)
    unknown: list[tuple[int, Command]] = field(default_factory=list)  # (group, write) to retry
    step: int = 0
    next_request: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        loss = self.rng.choice([0.0, 0.05, 0.2])
        self.cluster = HostCluster(groups=GROUPS, seed=self.seed)
        for node in self.cluster.ids:
            self.applied[node] = {}
            self.cluster.nodes[node].store = RecordingStore(self.applied[node])
            self.cluster.start(node)
        self.cluster.drop = lambda envelope: self.rng.random() < loss
        self.cluster.crash_in_pass = self.crash_in_pass

    def crash_in_pass(self, node: str) -> bool:
        """Now and then a node dies between sending a pass and persisting it."""
        if self.rng.random() < 0.005 and len(self.cluster.up()) > 1:
            self.forget(node)
            return True
        return False

    def fail(self, what: str) -> None:
        raise AssertionError(f"seed {self.seed}, step {self.step}: {what}")

    # -- the run ---------------------------------------------------------------------------

    def run(self, steps: int = 400) -> None:
        c = self.cluster
        for self.step in range(steps):
            roll = self.rng.random()
            up = c.up()
            if roll < 0.45 or not up:
                c.tick()
            elif roll < 0.70:
                self.write(self.rng.choice(up))
            elif roll < 0.82:
                self.read(self.rng.choice(up))
            elif roll < 0.86 and len(up) > 1:
                node = self.rng.choice(up)
                c.crash(node)
                self.forget(node)
            elif roll < 0.92:
                for node in c.ids:
                    if node not in up:
                        c.restart(node)
            elif roll < 0.96:
                a, b = self.rng.sample(c.ids, 2)
                c.cut.add(frozenset((a, b)))
            else:
                c.heal()
            c.settle()
            self.collect()
            self.check_logs()
        self.heal_and_converge()

    def write(self, node: str) -> None:
        group = self.rng.randrange(GROUPS)
        if self.unknown and self.rng.random() < 0.3:
            group, command = self.unknown.pop(self.rng.randrange(len(self.unknown)))
        else:
            self.next_request += 1
            key = self.rng.choice(KEYS)
            rid = b"req-%d" % self.next_request
            version = self.rng.choice([None, None, 0, self.rng.randrange(1, 40)])
            command = (Put(key, b"%d" % self.next_request, rid, if_version=version)
                       if self.rng.random() < 0.8 else Delete(key, rid, if_version=version))
        leader = self.cluster.leader(group)
        if leader is not None and self.rng.random() < 0.8:
            node = leader  # most clients have learnt the leader (from a NOT_LEADER)
        ticket = self.cluster.propose(node, group, command)
        self.pending[(node, ticket)] = Pending(node, group, self.step, command=command)

    def read(self, node: str) -> None:
        group, key = self.rng.randrange(GROUPS), self.rng.choice(KEYS)
        ticket = self.cluster.read(node, group, key)
        self.pending[(node, ticket)] = Pending(node, group, self.step, key=key)

    def forget(self, node: str) -> None:
        """A crashed node's callers learn nothing: their writes' outcomes are unknown."""
        for (owner, ticket), p in list(self.pending.items()):
            if owner == node:
                del self.pending[(owner, ticket)]
                if p.command is not None:
                    self.unknown.append((p.group, p.command))

    def collect(self) -> None:
        for (node, ticket), p in list(self.pending.items()):
            answer = self.cluster.answer(node, ticket)
            if answer is None:
                if self.step - p.started > 30:  # the caller's deadline
                    self.cluster.host(node).cancel(ticket)
                    del self.pending[(node, ticket)]
                    if p.command is not None:
                        self.unknown.append((p.group, p.command))
                continue
            del self.pending[(node, ticket)]
            if isinstance(answer, Outcome) and self.rng.random() < 0.1:
                assert p.command is not None
                self.unknown.append((p.group, p.command))  # the answer was lost on its way
            elif isinstance(answer, Outcome):
                assert p.command is not None
                self.acknowledged.append((p.group, self.step, p.command, answer))
                self.check_acknowledged(p.group, p.command, answer)
            elif isinstance(answer, ReadValue):
                self.reads.append((p, answer))
                self.check_read(p, answer)
            elif p.command is not None and isinstance(answer, KVStoreError) and (
                    answer.outcome != "not_applied"):
                self.unknown.append((p.group, p.command))

    # -- checks ----------------------------------------------------------------------------

    def check_logs(self) -> None:
        for group in range(GROUPS):
            seen: dict[int, tuple[str, tuple[int, bytes, Outcome | None]]] = {}
            for node, logs in self.applied.items():
                for index, applied in logs.get(group, {}).items():
                    first = seen.setdefault(index, (node, applied))
                    if first[1] != applied:
                        self.fail(f"group {group} index {index}: {first[0]} applied "
                                  f"{first[1]}, {node} applied {applied}")

    def check_acknowledged(self, group: int, command: Command, outcome: Outcome) -> None:
        for node, logs in self.applied.items():
            applied = logs.get(group, {}).get(outcome.index)
            if applied is not None and (applied[1] != commands.encode(
                    _stamped(command, applied[1])) or (applied[2] != outcome and not
                                                       outcome.duplicate)):
                self.fail(f"group {group}: the client was told {outcome} for {command}, "
                          f"{node} applied {applied}")

    def check_read(self, p: Pending, value: ReadValue) -> None:
        before = [(command, outcome) for group, step, command, outcome in self.acknowledged
                  if group == p.group and step < p.started and command.key == p.key
                  and outcome.status is Status.APPLIED]
        if not before:
            return
        last_command, last = max(before, key=lambda pair: pair[1].index)
        if value.version >= last.index and value.version > 0:
            return
        if value.version == 0 and (isinstance(last_command, Delete)
                                   or self.deleted_after(p.group, p.key, last.index)):
            return
        self.fail(f"a read of {p.key!r} in group {p.group} returned {value}, but the write at "
                  f"{last.index} ({last_command}) was acknowledged before the read began")

    def deleted_after(self, group: int, key: bytes, index: int) -> bool:
        for logs in self.applied.values():
            for at, (_, data, outcome) in logs.get(group, {}).items():
                if at > index and data and outcome is not None and outcome.version == 0 and (
                        outcome.status is Status.APPLIED and commands.decode(data).key == key):
                    return True
        return False

    def heal_and_converge(self) -> None:
        c = self.cluster
        c.heal()
        c.drop = c.crash_in_pass = None
        for node, ticket in list(self.pending):  # the callers' deadlines pass
            if node in c.up():
                c.host(node).cancel(ticket)
        self.pending.clear()
        for node in c.ids:
            if node not in c.up():
                c.restart(node)
        c.elect_all(limit=300)
        for group in range(GROUPS):  # a write in every group: a commit of the leaders' terms
            leader = c.leader(group)
            assert leader is not None
            answer = c.await_answer(leader, c.propose(leader, group, Put(b"final", b"x",
                                                                         b"final-%d" % group)))
            if not isinstance(answer, Outcome):
                self.fail(f"the final write to group {group} failed: {answer}")
        c.tick(20)
        for group in range(GROUPS):
            states = {node: c.nodes[node].store.keys(group)  # type: ignore[attr-defined]
                      for node in c.ids}
            if len({repr(sorted(s.items())) for s in states.values()}) != 1:
                self.fail(f"group {group} diverged after healing: {states}")
        self.check_logs()
        indexes: dict[tuple[int, bytes], set[int]] = {}
        for logs in self.applied.values():
            for group, log in logs.items():
                for index, (_, data, outcome) in log.items():
                    if data and outcome is not None and not outcome.duplicate:
                        rid = commands.decode(data).request_id
                        indexes.setdefault((group, rid), set()).add(index)
        twice = {key: found for key, found in indexes.items() if len(found) > 1}
        if twice:
            self.fail(f"requests applied at more than one index: {twice}")
        if not all(c.host(n).is_quiesced(g) for n in c.ids for g in range(GROUPS)):
            c.tick(20)
            if not all(c.host(n).is_quiesced(g) for n in c.ids for g in range(GROUPS)):
                self.fail("the healed cluster did not quiesce")


def _stamped(command: Command, data: bytes) -> Command:
    """The command as the leader stamped it (its proposal time)."""
    from dataclasses import replace
    return replace(command, proposed_ms=commands.decode(data).proposed_ms)


def test_every_seed_keeps_the_groups_safe_and_live() -> None:
    failures = []
    for seed in SEEDS:
        try:
            Sim(seed).run()
        except AssertionError as failure:
            failures.append(str(failure)[:2000])
    assert not failures, "\n".join(failures)


def test_the_seeds_exercise_faults_writes_and_reads() -> None:
    sims = [Sim(seed) for seed in (1, 2, 3)]
    for sim in sims:
        sim.run()
    assert sum(len(s.acknowledged) for s in sims) > 60
    assert sum(len(s.reads) for s in sims) > 20
    assert sum(1 for s in sims for _, _, _, o in s.acknowledged if o.duplicate) > 0
    assert sum(1 for s in sims for _, _, _, o in s.acknowledged
               if o.status is Status.VERSION_MISMATCH) > 0
    assert all(s.cluster.tick_count > 100 for s in sims)


def test_a_seed_replays_exactly() -> None:
    first, second = Sim(5), Sim(5)
    first.run()
    second.run()
    assert first.acknowledged == second.acknowledged and first.applied == second.applied
