"""A deterministic simulation of one Raft group: the real core (`RawNode`) on
virtual time, a seeded network that delays, reorders, drops and duplicates
messages and partitions the group, nodes that crash (sometimes after sending
but before persisting a Ready) and restart from what they persisted, clients
that write and read, and compaction; and checks of Raft's safety properties
after every event:

- election safety: at most one leader per term;
- leader completeness: a new leader's log holds every entry already applied
  anywhere;
- state machine safety: no two nodes apply different entries at an index
  (compared through a digest chain, which survives snapshots);
- log matching: two logs with an entry of the same index and term agree on
  it and on everything before (checked every so often and at the end);
- linearizable reads: a read state never has an index below an entry applied
  anywhere before the read began;
- and at the end, liveness once healed: the group elects a leader, commits a
  write, and every node applies it.

Everything random comes from one seed: a failing seed replays exactly.
`python -m tests.raft_sim --seed N [--trace]` replays one.
"""

import argparse
import hashlib
import heapq
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from kvstore.leader.raft.config import Config, ReadMode
from kvstore.leader.raft.leadership import ProposalDropped
from kvstore.leader.raft.messages import Entry, Message, ReadState
from kvstore.leader.raft.node import RawNode, Ready
from kvstore.leader.raft.raft import Role
from kvstore.leader.raft.storage import MemoryLogStorage

MS = 1000  # virtual time is in microseconds
FINAL = b"final"  # the write that must commit once the faults stop


class SafetyViolation(AssertionError):
    pass


@dataclass(frozen=True)
class Settings:
    """One seed's world; `for_seed` draws it from the seed."""

    nodes: int = 3
    duration_ms: int = 4000
    tick_ms: int = 10
    drift: float = 0.0  # each node's tick period is up to this much longer
    latency_ms: tuple[int, int] = (1, 12)
    loss: float = 0.05
    duplicate: float = 0.03
    partition_chance: float = 0.002  # per millisecond of virtual time, roughly
    crash_chance: float = 0.001
    crash_mid_ready: float = 0.02  # a crash between sending and persisting a Ready
    write_every_ms: int = 15
    read_every_ms: int = 20
    compact_every_ms: int = 150
    read_mode: ReadMode = ReadMode.READ_INDEX
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_appends: int = 4
    max_append_bytes: int | None = 64

    @staticmethod
    def for_seed(seed: int) -> "Settings":
        rng = random.Random(f"settings-{seed}")
        lease = rng.random() < 0.3
        return Settings(
            nodes=rng.choice([3, 3, 5]),
            drift=rng.choice([0.0, 0.05]) if lease else rng.choice([0.0, 0.3]),
            loss=rng.choice([0.0, 0.05, 0.15]),
            duplicate=rng.choice([0.0, 0.05]),
            partition_chance=rng.choice([0.0, 0.002, 0.005]),
            crash_chance=rng.choice([0.0, 0.001, 0.003]),
            read_mode=ReadMode.LEASE if lease else ReadMode.READ_INDEX,
            pre_vote=lease or rng.random() < 0.8,
            check_quorum=lease or rng.random() < 0.8,
            max_inflight_appends=rng.choice([1, 4, 64]),
            max_append_bytes=rng.choice([None, 16, 64]),
        )


@dataclass
class SimNode:
    id: str
    storage: MemoryLogStorage
    tick_period: int
    raw: RawNode | None = None  # None while down
    applied_index: int = 0
    digest: bytes = b""
    reads: dict[bytes, int] = field(default_factory=dict)  # context -> index required


def chain(digest: bytes, entry: Entry) -> bytes:
    return hashlib.blake2b(digest + b"%d|%d|" % (entry.index, entry.term) + entry.data,
                           digest_size=12).digest()


class Simulation:
    def __init__(self, seed: int, settings: Settings | None = None, trace: bool = False,
                 ) -> None:
        self.seed = seed
        self.settings = settings or Settings.for_seed(seed)
        self.rng = random.Random(seed)
        self.trace = trace
        s = self.settings
        self.ids = tuple(f"n{i}" for i in range(1, s.nodes + 1))
        self.nodes = {
            node: SimNode(node, MemoryLogStorage(),
                          int(s.tick_ms * MS * (1 + self.rng.random() * s.drift)))
            for node in self.ids}
        self.now = 0
        self._events: list[tuple[int, int, str, object]] = []
        self._seq = 0
        self.partition: dict[str, int] = {}  # node -> side; empty: no partition
        self.leaders: dict[int, str] = {}  # term -> leader
        self.digests: dict[int, tuple[int, bytes]] = {}  # index -> (term, digest after it)
        self.max_applied = 0  # the highest index applied anywhere
        self.writes = 0
        self.reads_checked = 0
        self.crashes = 0
        self.log_lines: list[str] = []
        self._counter = 0
        self._events_seen = 0
        self.final_index: int | None = None  # where the write after healing was applied

    # -- running -----------------------------------------------------------------------

    def run(self) -> "Simulation":
        try:
            return self._run()
        except SafetyViolation:
            raise
        except AssertionError as broken:  # one of the core's own invariants
            self._fail(f"the core's invariant broke: {broken}")
            raise

    def _run(self) -> "Simulation":
        s = self.settings
        for node in self.nodes.values():
            self._start(node)
            self._at(self.rng.randrange(node.tick_period), "tick", node.id)
        self._at(s.write_every_ms * MS, "write", None)
        self._at(s.read_every_ms * MS, "read", None)
        self._at(s.compact_every_ms * MS, "compact", None)
        self._at(MS, "chaos", None)
        end = s.duration_ms * MS
        while self._events and self._events[0][0] <= end:
            self._next_event()
        self._heal_and_check_liveness(end)
        self.check_log_matching()
        return self

    def _next_event(self) -> None:
        time, _, kind, payload = heapq.heappop(self._events)
        self.now = time
        self._events_seen += 1
        if kind == "tick":
            node = self.nodes[str(payload)]
            if node.raw is not None:
                node.raw.tick()
                self._process(node)
            self._at(self.now + node.tick_period, "tick", node.id)
        elif kind == "deliver":
            self._deliver(payload)  # type: ignore[arg-type]
        elif kind == "restart":
            self._start(self.nodes[str(payload)])
        elif kind == "heal":
            self.partition = {}
            self._trace("heal")
        elif kind == "write":
            self._client_write()
            self._at(self.now + self.rng.randrange(1, 2 * self.settings.write_every_ms) * MS,
                     "write", None)
        elif kind == "read":
            self._client_read()
            self._at(self.now + self.rng.randrange(1, 2 * self.settings.read_every_ms) * MS,
                     "read", None)
        elif kind == "compact":
            self._compact()
            self._at(self.now + self.settings.compact_every_ms * MS, "compact", None)
        elif kind == "chaos":
            self._chaos()
            self._at(self.now + MS, "chaos", None)
        if self._events_seen % 200 == 0:
            self.check_log_matching()

    def _at(self, time: int, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (time, self._seq, kind, payload))

    # -- nodes --------------------------------------------------------------------------------

    def _config(self, node: str) -> Config:
        s = self.settings
        return Config(id=node, voters=self.ids, election_ticks=10, heartbeat_ticks=2,
                      pre_vote=s.pre_vote, check_quorum=s.check_quorum, read_mode=s.read_mode,
                      clock_drift_bound=1.1, max_inflight_appends=s.max_inflight_appends,
                      max_append_bytes=s.max_append_bytes, snapshot_retry_ticks=20)

    def _start(self, node: SimNode) -> None:
        node.raw = RawNode(self._config(node.id), node.storage,
                           random.Random(f"{self.seed}-{node.id}-{self.now}"))
        snapshot = node.storage.snapshot()
        node.applied_index = snapshot.index
        node.digest = snapshot.data
        node.reads = {}
        self._trace(f"{node.id} starts: {node.storage.hard_state()} log "
                    f"{node.storage.first_index()}..{node.storage.last_index()}")
        self._process(node)

    def _crash(self, node: SimNode, downtime_ms: int) -> None:
        node.raw = None
        self.crashes += 1
        self._trace(f"{node.id} crashes for {downtime_ms} ms")
        self._at(self.now + downtime_ms * MS, "restart", node.id)

    def _process(self, node: SimNode) -> None:
        """Handle the node's Readies until it has none; then check it."""
        while node.raw is not None and node.raw.has_ready():
            ready = node.raw.ready()
            self._send(ready.messages)
            if self.rng.random() < self.settings.crash_mid_ready and (
                    ready.entries or ready.hard_state):
                self._crash(node, self.rng.randrange(20, 400))  # before persisting
                return
            self._persist(node, ready)
            self._send(ready.messages_after_persist)
            self._apply(node, ready)
            node.raw.advance(ready)
        self._check_node(node)

    def _persist(self, node: SimNode, ready: Ready) -> None:
        if ready.hard_state is not None:
            node.storage.set_hard_state(ready.hard_state)
        if ready.snapshot is not None:
            node.storage.apply_snapshot(ready.snapshot)
        node.storage.append(ready.entries)

    def _apply(self, node: SimNode, ready: Ready) -> None:
        if ready.snapshot is not None:
            snapshot = ready.snapshot
            expected = self.digests.get(snapshot.index)
            if expected is not None and expected[1] != snapshot.data:
                self._fail(f"{node.id} restored a snapshot at {snapshot.index} unlike the "
                           "state applied there elsewhere")
            node.applied_index, node.digest = snapshot.index, snapshot.data
        for entry in ready.committed_entries:
            if entry.index != node.applied_index + 1:
                self._fail(f"{node.id} applied {entry.index} after {node.applied_index}")
            node.digest = chain(node.digest, entry)
            node.applied_index = entry.index
            seen = self.digests.setdefault(entry.index, (entry.term, node.digest))
            if seen != (entry.term, node.digest):
                self._fail(f"state machine safety: {node.id} applied {entry} (term "
                           f"{entry.term}) where another node applied term {seen[0]}")
            self.max_applied = max(self.max_applied, entry.index)
            if entry.data == FINAL and self.final_index is None:
                self.final_index = entry.index
        for state in ready.read_states:
            self._check_read(node, state)

    # -- checks -----------------------------------------------------------------------------------

    def _check_node(self, node: SimNode) -> None:
        if node.raw is None:
            return
        status = node.raw.status()
        if status.role is not Role.LEADER:
            return
        other = self.leaders.get(status.term)
        if other is None:
            self.leaders[status.term] = node.id
            self._check_leader_completeness(node)
        elif other != node.id:
            self._fail(f"election safety: {other} and {node.id} both lead term {status.term}")

    def _check_leader_completeness(self, node: SimNode) -> None:
        index = self.max_applied
        if index == 0:
            return
        storage = node.storage
        term, digest = self.digests[index]
        if storage.first_index() - 1 <= index <= storage.last_index():
            if storage.term(index) != term:
                self._fail(f"leader completeness: leader {node.id} has term "
                           f"{storage.term(index)} at {index}, applied elsewhere with {term}")
        elif index > storage.last_index():
            self._fail(f"leader completeness: leader {node.id}'s log ends at "
                       f"{storage.last_index()}, but {index} was applied")

    def check_log_matching(self) -> None:
        logs = {}
        for node in self.nodes.values():
            storage = node.storage
            if storage.last_index() >= storage.first_index():
                logs[node.id] = {e.index: e for e in storage.entries(
                    storage.first_index(), storage.last_index() + 1, None)}
        names = sorted(logs)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                common = sorted(set(logs[a]) & set(logs[b]), reverse=True)
                matched = False
                for index in common:
                    ea, eb = logs[a][index], logs[b][index]
                    if matched and ea != eb:
                        self._fail(f"log matching: {a} and {b} agree on a later entry but "
                                   f"differ at {index}: {ea} vs {eb}")
                    if ea.term == eb.term:
                        if ea != eb:
                            self._fail(f"log matching: {a} and {b} hold different entries "
                                       f"of term {ea.term} at {index}")
                        matched = True

    def _check_read(self, node: SimNode, state: ReadState) -> None:
        required = node.reads.pop(state.context, None)
        if required is None:
            return  # asked before a restart of this node
        self.reads_checked += 1
        if state.index < required:
            self._fail(f"linearizable read: {node.id}'s read {state.context!r} got index "
                       f"{state.index}, but {required} was applied before it began")

    def _fail(self, what: str) -> None:
        raise SafetyViolation(f"seed {self.seed} ({self.settings}): {what}\n  replay: "
                              f"python -m tests.raft_sim --seed {self.seed} --trace")

    # -- the network ---------------------------------------------------------------------------

    def _send(self, messages: tuple[Message, ...]) -> None:
        s = self.settings
        for m in messages:
            if not self._connected(m.sender, m.to) or self.rng.random() < s.loss:
                continue
            copies = 2 if self.rng.random() < s.duplicate else 1
            for _ in range(copies):
                latency = self.rng.randint(*s.latency_ms) * MS + self.rng.randrange(MS)
                self._at(self.now + latency, "deliver", m)

    def _deliver(self, m: Message) -> None:
        node = self.nodes[m.to]
        if node.raw is None or not self._connected(m.sender, m.to):
            return
        self._trace(f"  {m}")
        node.raw.step(m)
        self._process(node)

    def _connected(self, a: str, b: str) -> bool:
        return not self.partition or self.partition[a] == self.partition[b]

    # -- faults and clients -----------------------------------------------------------------------

    def _chaos(self) -> None:
        s = self.settings
        if not self.partition and self.rng.random() < s.partition_chance:
            sides = [self.rng.randrange(2) for _ in self.ids]
            self.partition = dict(zip(self.ids, sides))
            self._trace(f"partition {self.partition}")
            self._at(self.now + self.rng.randrange(50, 800) * MS, "heal", None)
        if self.rng.random() < s.crash_chance:
            node = self.nodes[self.rng.choice(self.ids)]
            if node.raw is not None:
                self._crash(node, self.rng.randrange(20, 600))

    def _up(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def _client_write(self) -> None:
        up = self._up()
        if not up:
            return
        # Mostly where a leader is believed to be, as a client that follows hints.
        node = self.rng.choice(up)
        assert node.raw is not None
        leader = node.raw.status().leader
        if leader is not None and self.nodes[leader].raw is not None and self.rng.random() < 0.8:
            node = self.nodes[leader]
        self._counter += 1
        try:
            assert node.raw is not None
            node.raw.propose(b"w%d" % self._counter)
            self.writes += 1
        except ProposalDropped:
            return
        self._process(node)

    def _client_read(self) -> None:
        up = self._up()
        if not up:
            return
        node = self.rng.choice(up)
        self._counter += 1
        context = b"r%d" % self._counter
        try:
            assert node.raw is not None
            node.raw.read_index(context)
        except ProposalDropped:
            return
        node.reads[context] = self.max_applied
        self._process(node)

    def _compact(self) -> None:
        up = self._up()
        if not up:
            return
        node = self.rng.choice(up)
        storage = node.storage
        if node.applied_index <= storage.snapshot().index + 3:
            return
        storage.create_snapshot(node.applied_index, node.digest)
        keep = self.rng.randrange(0, 4)
        if node.applied_index - keep > storage.first_index() - 1:
            storage.compact(node.applied_index - keep)
        self._trace(f"{node.id} compacts to {storage.first_index() - 1}")

    # -- the end -----------------------------------------------------------------------------------

    def _heal_and_check_liveness(self, end: int) -> None:
        """Heal, restart every node, stop losing messages; then the group
        must elect a leader, commit a new write (proposed again while it has
        not been applied: a deposed leader's may be overwritten) and every
        node apply it."""
        self.partition = {}
        self.settings = replace_settings(self.settings, loss=0.0, duplicate=0.0,
                                         crash_chance=0.0, partition_chance=0.0,
                                         crash_mid_ready=0.0)
        self._events = [e for e in self._events if e[2] in ("tick", "deliver", "restart")]
        heapq.heapify(self._events)
        deadline = end + 10_000 * MS
        next_try = self.now
        while self._events and self.now < deadline:
            self._next_event()
            if self.final_index is None:
                if self.now >= next_try:
                    self._propose_final()
                    next_try = self.now + 200 * MS
            elif all(n.raw is not None and n.applied_index >= self.final_index
                     for n in self.nodes.values()):
                return
        self._fail(f"not live after healing: the final write applied at {self.final_index}, "
                   f"applied {({n.id: n.applied_index for n in self.nodes.values()})}")

    def _propose_final(self) -> None:
        for node in self._up():
            assert node.raw is not None
            if node.raw.status().role is Role.LEADER:
                try:
                    node.raw.propose(FINAL)
                except ProposalDropped:
                    return
                self._process(node)
                return

    def _trace(self, line: str) -> None:
        if self.trace:
            print(f"{self.now / MS:10.3f} {line}")

    def summary(self) -> tuple[object, ...]:
        return (self.writes, self.reads_checked, self.crashes, self.max_applied,
                tuple(sorted(self.leaders.items())))


def replace_settings(settings: Settings, **changes: object) -> Settings:
    from dataclasses import replace
    return replace(settings, **changes)  # type: ignore[arg-type]


def run_seeds(seeds: range, runner: Callable[[int], Simulation] | None = None) -> list[int]:
    failed = []
    for seed in seeds:
        try:
            (runner or (lambda s: Simulation(s).run()))(seed)
        except SafetyViolation as violation:
            print(violation, file=sys.stderr)
            failed.append(seed)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if args.seed is not None:
        simulation = Simulation(args.seed, trace=args.trace).run()
        print(f"seed {args.seed}: ok {simulation.summary()}")
        return
    failed = run_seeds(range(1, args.seeds + 1))
    print(f"{args.seeds - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
