"""Several multi-Raft hosts in one test: the real `MultiRaft` of each node
over its own store (in memory, or LMDB under a directory), an in-memory
network of envelopes the test steers (cut links, nodes down), and a fake
clock; every pass run by hand, as the driver would run it. Nothing is
random but what the seeds say, so every run is the same.

`settle()` runs passes and delivers envelopes until nothing moves; `tick()`
advances every live node's clock by one tick and settles.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kvstore.errors import KVStoreError
from kvstore.leader.commands import Command
from kvstore.leader.envelopes import Envelope
from kvstore.leader.host import MultiRaft
from kvstore.leader.lmdb_store import LmdbRaftStore
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.persistence import PassResult, RaftStore
from kvstore.leader.quiescence import QuiesceSettings
from kvstore.leader.raft.messages import AFTER_PERSIST
from kvstore.leader.raft.raft import Role
from kvstore.leader.settings import HostSettings
from kvstore.leader.waiters import Result, Ticket

TICK_MS = 100
FAST = HostSettings(election_ticks=10, heartbeat_ticks=1,
                    quiesce=QuiesceSettings(enabled=True, after_ticks=3))


@dataclass
class Node:
    id: str
    store: RaftStore
    host: MultiRaft | None = None
    answers: dict[Ticket, Result] = field(default_factory=dict)
    incarnation: int = 0


class HostCluster:
    def __init__(self, ids: Iterable[str] = ("n1", "n2", "n3"), groups: int = 4, *,
                 settings: HostSettings = FAST, seed: int = 0, lmdb_dir: Path | None = None,
                 ) -> None:
        self.ids = tuple(ids)
        self.groups = {group: self.ids for group in range(groups)}
        self.settings = settings
        self.seed = seed
        self.lmdb_dir = lmdb_dir
        self.now_ms = 1_000_000
        self.in_flight: list[Envelope] = []
        self.sent: list[tuple[int, Envelope]] = []  # (tick, envelope), every one sent
        self.cut: set[frozenset[str]] = set()  # links that drop everything
        self.drop: Callable[[Envelope], bool] | None = None  # loses the envelopes it picks
        # Asked after a node sent a pass's first envelopes: crash it before it persists?
        self.crash_in_pass: Callable[[str], bool] | None = None
        self.tick_count = 0
        self.nodes = {node: Node(node, self._open_store(node)) for node in self.ids}
        for node in self.ids:
            self.start(node)

    # -- nodes ----------------------------------------------------------------------------

    def _open_store(self, node: str) -> RaftStore:
        if self.lmdb_dir is None:
            return MemoryRaftStore()
        return LmdbRaftStore(self.lmdb_dir / node, map_size=1 << 26)

    def host(self, node: str) -> MultiRaft:
        host = self.nodes[node].host
        assert host is not None, f"{node} is down"
        return host

    def start(self, node: str) -> None:
        n = self.nodes[node]
        n.incarnation += 1
        n.answers = {}  # tickets count from 1 again in the new incarnation
        n.host = MultiRaft(node, n.store, self.settings, seed=hash((self.seed, n.incarnation)),
                           clock_ms=lambda: self.now_ms)
        for group, voters in self.groups.items():
            if node in voters:
                n.host.add_group(group, voters)

    def crash(self, node: str) -> None:
        """The process dies: what it did not persist is lost, and its envelopes in flight."""
        self.nodes[node].host = None
        self.in_flight = [e for e in self.in_flight if node not in (e.to, e.sender)]
        if isinstance(self.nodes[node].store, LmdbRaftStore):
            self.nodes[node].store.close()  # type: ignore[union-attr]

    def restart(self, node: str) -> None:
        if self.nodes[node].host is not None:
            self.crash(node)
        if self.lmdb_dir is not None:
            self.nodes[node].store = self._open_store(node)
        self.start(node)

    def crash_mid_pass(self, node: str) -> None:
        """The node sends what may leave before persisting, then dies before its write."""
        host = self.host(node)
        p = host.start_pass()
        if p is not None:
            self._send(p.send)
        self.crash(node)

    def up(self) -> list[str]:
        return [node for node in self.ids if self.nodes[node].host is not None]

    def close(self) -> None:
        for node in self.up():
            self.crash(node)

    # -- passes and the network ---------------------------------------------------------------

    def run_pass(self, node: str) -> bool:
        n = self.nodes[node]
        host = self.host(node)
        p = host.start_pass()
        if p is None:
            return False
        # What vouches for this node's vote or log leaves only once persisted.
        early = [m.message for e in p.send for m in e.messages
                 if isinstance(m.message, AFTER_PERSIST)]
        assert not early, f"{node} would send {early[0]} before persisting it"
        self._send(p.send)
        if p.write is not None and self.crash_in_pass is not None and self.crash_in_pass(node):
            self.crash(node)
            return False
        result = n.store.write(p.write) if p.write is not None else PassResult()
        finished = host.finish_pass(p, result)
        self._send(finished.send)
        for release in (*p.released, *finished.released):
            n.answers[release.ticket] = release.result
        return True

    def _send(self, envelopes: Iterable[Envelope]) -> None:
        for envelope in envelopes:
            self.sent.append((self.tick_count, envelope))
            if frozenset((envelope.sender, envelope.to)) in self.cut:
                continue
            if self.drop is None or not self.drop(envelope):
                self.in_flight.append(envelope)

    def deliver(self) -> int:
        delivered, self.in_flight = self.in_flight, []
        count = 0
        for envelope in delivered:
            host = self.nodes[envelope.to].host
            if host is not None and frozenset((envelope.sender, envelope.to)) not in self.cut:
                host.receive(envelope)
                count += 1
        return count

    def settle(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            moved = False
            for node in self.up():
                while self.run_pass(node):
                    moved = True
            if not self.deliver() and not moved:
                return
        raise AssertionError("the cluster did not settle")

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            self.tick_count += 1
            self.now_ms += TICK_MS
            for node in self.up():
                self.host(node).tick()
            self.settle()

    def isolate(self, node: str) -> None:
        self.cut |= {frozenset((node, other)) for other in self.ids if other != node}

    def heal(self) -> None:
        self.cut.clear()

    # -- groups ---------------------------------------------------------------------------------

    def leader(self, group: int) -> str | None:
        """The one live node that leads `group` in the highest term, if any."""
        leaders = [(self.host(n).status(group).term, n) for n in self.up()
                   if self.host(n).status(group).role is Role.LEADER]
        return max(leaders)[1] if leaders else None

    def elect_all(self, limit: int = 200) -> dict[int, str]:
        """Tick until every group has a leader every live member follows."""
        for _ in range(limit):
            leaders = {group: self.leader(group) for group in self.groups}
            if all(leader is not None and all(
                    self.host(n).status(group).leader == leader for n in self.up())
                   for group, leader in leaders.items()):
                return {group: leader for group, leader in leaders.items() if leader}
            self.tick()
        raise AssertionError("some group elected no leader")

    def propose(self, node: str, group: int, command: Command) -> Ticket:
        return self.host(node).propose(group, command)

    def read(self, node: str, group: int, key: bytes) -> Ticket:
        return self.host(node).read(group, key)

    def answer(self, node: str, ticket: Ticket) -> Result | None:
        return self.nodes[node].answers.get(ticket)

    def await_answer(self, node: str, ticket: Ticket, ticks: int = 50) -> Result:
        self.settle()
        for _ in range(ticks):
            if (answer := self.answer(node, ticket)) is not None:
                return answer
            self.tick()
        raise AssertionError(f"{node} answered ticket {ticket} in no {ticks} ticks")

    def envelopes_in_tick(self, tick: int) -> list[Envelope]:
        return [e for t, e in self.sent if t == tick]


def error_reason(result: Result | None) -> str | None:
    return result.reason if isinstance(result, KVStoreError) else None
