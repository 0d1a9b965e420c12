"""A Raft group in one test: RawNodes over MemoryLogStorage, a state machine
per node (the list of applied data), and a network the test steers by hand,
in the manner of etcd-io/raft's interaction tests (`rafttest`): process a
node's Ready, deliver messages (or drop some), tick, stabilize.

Nothing is random unless the test says so: each node's election jitter comes
from its own seeded `random.Random`.
"""

import ast
import random
from collections.abc import Callable, Iterable
from dataclasses import replace

from kvstore.leader.raft.config import Config
from kvstore.leader.raft.messages import Entry, Message, ReadState, Snapshot
from kvstore.leader.raft.node import RawNode, Ready
from kvstore.leader.raft.raft import Role
from kvstore.leader.raft.storage import MemoryLogStorage

MessageFilter = Callable[[Message], bool]


def encode_state(applied: list[bytes]) -> bytes:
    return repr(applied).encode()


def decode_state(data: bytes) -> list[bytes]:
    state = ast.literal_eval(data.decode()) if data else []
    assert isinstance(state, list)
    return state


class Cluster:
    def __init__(self, size: int = 3, *, seed: int = 0, ids: Iterable[str] | None = None,
                 **settings: object) -> None:
        self.ids = tuple(ids) if ids is not None else tuple(str(n) for n in range(1, size + 1))
        self.config = Config(id=self.ids[0], voters=self.ids, **settings)
        self.storage = {node: MemoryLogStorage() for node in self.ids}
        self.seed = seed
        self.nodes: dict[str, RawNode] = {}
        self.applied: dict[str, list[bytes]] = {}
        self.applied_entries: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[ReadState]] = {node: [] for node in self.ids}
        self.in_flight: list[Message] = []
        self.sent: list[Message] = []  # every message ever sent, in order
        self.cut: set[str] = set()  # nodes whose messages (both ways) are dropped
        for node in self.ids:
            self.start(node)

    # -- nodes ----------------------------------------------------------------

    def start(self, node: str, **settings: object) -> None:
        """(Re)start `node` from what its storage holds."""
        config = replace(self.config, id=node, **settings)
        rng = random.Random(f"{self.seed}-{node}")
        self.nodes[node] = RawNode(config, self.storage[node], rng)
        snapshot = self.storage[node].snapshot()
        self.applied[node] = decode_state(snapshot.data)
        self.applied_entries[node] = []

    def restart(self, node: str, **settings: object) -> None:
        """Crash `node` (losing all it did not persist, and its messages in
        flight) and start it again."""
        self.in_flight = [m for m in self.in_flight if m.to != node and m.sender != node]
        self.start(node, **settings)

    def role(self, node: str) -> Role:
        return self.nodes[node].status().role

    def term(self, node: str) -> int:
        return self.nodes[node].status().term

    def leader_of(self, node: str) -> str | None:
        return self.nodes[node].status().leader

    def log(self, node: str) -> list[tuple[int, int]]:
        """(index, term) of the entries on `node`'s storage after its snapshot."""
        storage = self.storage[node]
        if storage.last_index() < storage.first_index():
            return []
        entries = storage.entries(storage.first_index(), storage.last_index() + 1, None)
        return [(e.index, e.term) for e in entries]

    def data(self, node: str) -> list[bytes]:
        """The data proposed by clients that `node` applied, in order."""
        return [d for d in self.applied[node] if d]

    # -- the Ready cycle ---------------------------------------------------------

    def process_ready(self, node: str) -> Ready | None:
        raw = self.nodes[node]
        if not raw.has_ready():
            return None
        ready = raw.ready()
        self._send(ready.messages)
        storage = self.storage[node]
        if ready.hard_state is not None:
            storage.set_hard_state(ready.hard_state)
        if ready.snapshot is not None:
            storage.apply_snapshot(ready.snapshot)
            self.applied[node] = decode_state(ready.snapshot.data)
        storage.append(ready.entries)
        self._send(ready.messages_after_persist)
        for entry in ready.committed_entries:
            self.applied[node].append(entry.data)
            self.applied_entries[node].append(entry)
        self.read_states[node].extend(ready.read_states)
        raw.advance(ready)
        return ready

    def process_all(self, nodes: Iterable[str] | None = None) -> bool:
        did = False
        for node in nodes or self.ids:
            while self.process_ready(node) is not None:
                did = True
        return did

    def _send(self, messages: Iterable[Message]) -> None:
        for m in messages:
            self.sent.append(m)
            if m.to not in self.cut and m.sender not in self.cut:
                self.in_flight.append(m)

    # -- the network ----------------------------------------------------------------

    def deliver(self, only: MessageFilter | None = None,
                drop: MessageFilter | None = None) -> list[Message]:
        """Deliver the messages in flight (those `only` picks; `drop`ped ones
        are lost); returns those delivered."""
        delivered = []
        keep = []
        for m in self.in_flight:
            if only is not None and not only(m):
                keep.append(m)
            elif drop is None or not drop(m):
                delivered.append(m)
        self.in_flight = keep
        for m in delivered:
            self.nodes[m.to].step(m)
        return delivered

    def take(self, only: MessageFilter | None = None) -> list[Message]:
        """Remove the messages in flight (that `only` picks) without delivering them."""
        taken = [m for m in self.in_flight if only is None or only(m)]
        self.in_flight = [m for m in self.in_flight if m not in taken]
        return taken

    def exchange(self, rounds: int, drop: MessageFilter | None = None) -> None:
        """`rounds` times: every node handles its Readies, then every message
        in flight is delivered (or dropped, as `drop` says)."""
        for _ in range(rounds):
            self.process_all()
            self.deliver(drop=drop)

    def stabilize(self, nodes: Iterable[str] | None = None, limit: int = 1000) -> None:
        """Process Readies and deliver messages (among `nodes`, all by default)
        until nothing moves."""
        chosen = set(nodes or self.ids)
        for _ in range(limit):
            processed = self.process_all(sorted(chosen))
            delivered = self.deliver(only=lambda m: m.to in chosen and m.sender in chosen)
            if not processed and not delivered:
                return
        raise AssertionError("the cluster did not stabilize")

    # -- time -------------------------------------------------------------------------

    def tick(self, node: str, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[node].tick()

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for node in self.ids:
                if node not in self.cut:
                    self.nodes[node].tick()

    def elect(self, node: str) -> None:
        self.nodes[node].campaign()
        self.stabilize()
        assert self.role(node) is Role.LEADER, f"{node} did not win: {self.nodes[node].status()}"

    def propose(self, node: str, data: bytes) -> Entry:
        return self.nodes[node].propose(data)

    def snapshot_and_compact(self, node: str, index: int | None = None) -> Snapshot:
        """`node` snapshots its state machine at its applied index (or one
        before it) and drops the log up to there."""
        storage = self.storage[node]
        at = self.nodes[node].status().applied if index is None else index
        assert len(self.applied[node]) >= at
        snapshot = storage.create_snapshot(at, encode_state(self.applied[node][:at]))
        storage.compact(at)
        return snapshot
