"""The Raft oracle of the leader-mode simulation: it sees every persist pass
of every node (what the disk now holds, and the host's view of each group
at that moment) and checks Raft's safety properties as they happen:

- election safety: at most one leader per group and term (every new leader
  writes in its first pass: the no-op of its term);
- one vote per term: a node's persisted term never goes down, and the vote
  it persisted in a term never changes, not even across a restore from a
  backup (`restored`), which forgets votes: the fence must keep the node
  from voting again in any term it may have voted in. (One exception the
  fence allows: above the highest term the others held at the restore,
  the node may have voted for itself alone in a campaign no one else
  heard of, which won nothing.);
- log matching: an entry is known by (group, index, term); every copy of it
  anywhere holds the same data and follows an entry of the same term, so by
  induction two logs that share an entry share everything before it;
- leader completeness: a new leader's log holds every entry applied
  anywhere whose commit this oracle can place in an earlier term (see
  `_Applied.term_bound`);
- state machine safety: every node applies the same entry, with the same
  outcome, at each index, one index after the other, and every snapshot
  taken or installed at an index holds the same state;
- no group halted: the host stops a group whose data it cannot read, or
  whose core failed on a message.

It also keeps, per group, when each index was first applied anywhere and
what each applied write left in its key, so that the judge can check every
linearizable read against the order Raft applied writes in
(`read_problem`): a stricter check than the client history allows, since
something applied anywhere before a read began must be seen by it, whether
or not a client learnt of it.

Times are the virtual loop's. Pure bookkeeping besides that clock and the
store reads it is handed.
"""

import asyncio
import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

from kvstore.leader import commands
from kvstore.leader.commands import Put
from kvstore.leader.host import LeaderChange, MultiRaft
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.persistence import PassResult, PassWrite
from kvstore.leader.raft.messages import Entry, HardState
from kvstore.leader.raft.raft import Role
from kvstore.leader.state_machine import Outcome, Status

KeyState = tuple[int, bytes | None]  # (version, value); (0, None): absent


@dataclass(frozen=True)
class _Applied:
    term: int
    data: bytes
    outcome: Outcome | None
    # The applier's term when it applied the entry: it learnt of the commit
    # from a leader of that term or an earlier one, so the entry was
    # committed in a term no later than this, and every leader of a later
    # term must hold it.
    term_bound: int
    node: str


@dataclass
class _Group:
    applied: dict[int, _Applied] = field(default_factory=dict)
    # When each index was first applied anywhere, in index order (any node
    # applies one index after the other, so first applications come in order).
    first_times: list[float] = field(default_factory=list)
    first_indexes: list[int] = field(default_factory=list)
    # Per key, the writes applied to it: (index, state after), in index order.
    writes: dict[bytes, list[tuple[int, KeyState]]] = field(default_factory=dict)
    # term bound -> the highest index applied with that bound
    bounded: dict[int, int] = field(default_factory=dict)
    entries: dict[tuple[int, int], tuple[bytes, int]] = field(default_factory=dict)
    snapshots: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # index -> (data, node)
    leaders: dict[int, str] = field(default_factory=dict)  # term -> node

    def max_applied(self) -> int:
        return self.first_indexes[-1] if self.first_indexes else 0


# Raft messages a run may send: a storm (a leader and a follower sending
# each other appends without end) is a bug too, and would run for ever.
MAX_MESSAGES = 300_000
# Findings kept: the run stops at the first (`failed`), but what happens
# meanwhile may add more.
MAX_PROBLEMS = 20


class RaftOracle:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.problems: list[str] = []
        self.more_problems = 0  # beyond MAX_PROBLEMS
        self.failed = asyncio.Event()  # set at the first finding
        self.messages = 0
        self._groups: dict[int, _Group] = {}
        self._hard: dict[tuple[str, int], HardState] = {}
        # Every vote ever persisted, by (node, group, term), kept across restores.
        self._votes: dict[tuple[str, int, int], str] = {}
        self._restored_above: dict[str, int] = {}  # node -> the highest term at its restore
        self._node_applied: dict[tuple[str, int], int] = {}
        self.leader_terms = 0  # (group, term) pairs that had a leader
        self.snapshots_installed = 0

    def _group(self, group: int) -> _Group:
        g = self._groups.get(group)
        if g is None:
            g = self._groups[group] = _Group()
        return g

    def _problem(self, what: str) -> None:
        self.failed.set()
        if what in self.problems:
            return
        if len(self.problems) >= MAX_PROBLEMS:
            self.more_problems += 1
            return
        self.problems.append(what)
        self.say(f"ORACLE {what}")

    def sent(self, messages: int) -> None:
        """A node sent an envelope of this many Raft messages."""
        self.messages += messages
        if self.messages > MAX_MESSAGES:
            self._problem(f"message storm: the nodes sent more than {MAX_MESSAGES:,} Raft "
                          "messages")

    # -- what the nodes tell it ---------------------------------------------------------

    def leader_changed(self, node: str, change: LeaderChange) -> None:
        if change.leader == node:
            self._leader(change.group, change.term, node, None)

    def persisted(self, node: str, host: MultiRaft, store: MemoryRaftStore, batch: PassWrite,
                  result: PassResult) -> None:
        """`node` wrote `batch` to `store` with `result` (before the host finished the pass)."""
        now = asyncio.get_running_loop().time()
        for write in batch.groups:
            group = write.group
            done = result.groups[group]
            if done.failure is not None:
                self._problem(f"partition {group} halted on {node}: its write failed: "
                              f"{done.failure}")
                continue
            if write.hard_state is not None:
                self._hard_state(node, group, write.hard_state)
            if write.snapshot is not None:
                self.snapshots_installed += 1
                self._snapshot(group, write.snapshot.index, write.snapshot.data, node)
                self._node_applied[(node, group)] = write.snapshot.index
            if done.snapshot is not None:
                self._snapshot(group, done.snapshot[0], store.read_snapshot(group).data, node)
            if write.entries:
                self._entries(node, group, write.entries, store)
            status = host.status(group)
            self._applied(node, group, write.committed, dict(done.outcomes), done.applied,
                          status.term, now)
            if status.role is Role.LEADER:
                self._leader(group, status.term, node, store)

    def restored(self, node: str, store: MemoryRaftStore, highest_term: int) -> None:
        """`node` (stopped) was restored from a backup into `store`, fenced
        above `highest_term`: its state is the backup's from now on, but
        the votes it persisted before stay on record."""
        self._restored_above[node] = highest_term
        for group in store.groups():
            loaded = store.load(group, 0)
            self._hard[(node, group)] = loaded.hard_state
            self._node_applied[(node, group)] = loaded.applied

    # -- the checks -----------------------------------------------------------------------

    def _hard_state(self, node: str, group: int, state: HardState) -> None:
        before = self._hard.get((node, group))
        self._hard[(node, group)] = state
        if state.vote is not None:
            earlier = self._votes.setdefault((node, group, state.term), state.vote)
            forgotten_campaign = (earlier == node
                                  and state.term > self._restored_above.get(node, state.term))
            if earlier != state.vote and not forgotten_campaign:
                after = " (after a restore)" if node in self._restored_above else ""
                self._problem(f"one vote per term: {node} voted for {earlier} in term "
                              f"{state.term} of partition {group}, then{after} for "
                              f"{state.vote}")
            self._votes[(node, group, state.term)] = state.vote
        if before is not None and state.term < before.term:
            self._problem(f"partition {group}: {node} persisted term {state.term} after "
                          f"term {before.term}")

    def _leader(self, group: int, term: int, node: str, store: MemoryRaftStore | None) -> None:
        g = self._group(group)
        other = g.leaders.get(term)
        if other is None:
            g.leaders[term] = node
            self.leader_terms += 1
            self.say(f"ORACLE {node} leads partition {group} in term {term}")
            if store is not None:
                self._check_completeness(group, g, term, node, store)
        elif other != node:
            self._problem(f"election safety: {other} and {node} both lead partition {group} "
                          f"in term {term}")

    def _check_completeness(self, group: int, g: _Group, term: int, node: str,
                            store: MemoryRaftStore) -> None:
        index = max((i for bound, i in g.bounded.items() if bound < term), default=0)
        if index == 0:
            return
        wanted = g.applied[index].term
        loaded = store.load(group, 0)
        if index <= loaded.compacted_index:
            return  # it applied past it itself (state machine safety covers that)
        if index > loaded.last_index:
            self._problem(f"leader completeness: {node} leads partition {group} in term {term} "
                          f"with a log ending at {loaded.last_index}, but entry {index} (term "
                          f"{wanted}) was committed in an earlier term and applied")
            return
        (entry,) = store.read_entries(group, index, index + 1, None)
        if entry.term != wanted:
            self._problem(f"leader completeness: {node} leads partition {group} in term {term} "
                          f"with term {entry.term} at {index}, where term {wanted} was "
                          "committed and applied")

    def _entries(self, node: str, group: int, entries: tuple[Entry, ...],
                 store: MemoryRaftStore) -> None:
        g = self._group(group)
        prev = _term_before(store, group, entries[0].index)
        for entry in entries:
            if prev is not None:
                seen = g.entries.setdefault((entry.index, entry.term), (entry.data, prev))
                if seen != (entry.data, prev):
                    self._problem(
                        f"log matching: partition {group} has two entries of term {entry.term} "
                        f"at {entry.index}: {node}'s follows term {prev} and holds "
                        f"{entry.data[:40]!r}, another follows term {seen[1]} and holds "
                        f"{seen[0][:40]!r}")
            prev = entry.term

    def _snapshot(self, group: int, index: int, data: bytes, node: str) -> None:
        seen = self._group(group).snapshots.setdefault(index, (data, node))
        if seen[0] != data:
            self._problem(f"state machine safety: partition {group}'s snapshots at {index} "
                          f"differ between {seen[1]} and {node}")

    def _applied(self, node: str, group: int, committed: tuple[Entry, ...],
                 outcomes: dict[int, Outcome], applied_after: int, term: int,
                 now: float) -> None:
        g = self._group(group)
        current = self._node_applied.get((node, group), 0)
        for entry in committed:
            if entry.index <= current:
                continue  # applied before (a restart hands it out again): skipped
            if entry.index != current + 1:
                self._problem(f"partition {group}: {node} applied entry {entry.index} after "
                              f"{current}")
            current = entry.index
            mine = _Applied(entry.term, entry.data, outcomes.get(entry.index), term, node)
            first = g.applied.get(entry.index)
            if first is None:
                self._first_application(g, entry, mine, now)
            elif (first.term, first.data, first.outcome) != (mine.term, mine.data,
                                                             mine.outcome):
                self._problem(f"state machine safety: at {entry.index} of partition {group}, "
                              f"{first.node} applied term {first.term} with outcome "
                              f"{first.outcome}, {node} term {mine.term} with {mine.outcome}")
        if current != applied_after:
            self._problem(f"partition {group}: {node}'s state machine says it applied "
                          f"{applied_after}, its entries reach {current}")
        self._node_applied[(node, group)] = applied_after

    def _first_application(self, g: _Group, entry: Entry, applied: _Applied,
                           now: float) -> None:
        g.applied[entry.index] = applied
        g.first_times.append(now)
        g.first_indexes.append(entry.index)
        g.bounded[applied.term_bound] = entry.index
        outcome = applied.outcome
        if outcome is None or outcome.status is not Status.APPLIED or outcome.duplicate:
            return
        command = commands.decode(entry.data)
        state: KeyState = (outcome.version, command.value if isinstance(command, Put) else None)
        g.writes.setdefault(command.key, []).append((entry.index, state))

    # -- what the judge asks --------------------------------------------------------------

    def applied_entry(self, group: int, index: int) -> tuple[int, bytes] | None:
        """(term, data) of the entry applied at `index`, if any node applied one."""
        applied = self._group(group).applied.get(index)
        return None if applied is None else (applied.term, applied.data)

    def max_applied(self, group: int) -> int:
        return self._group(group).max_applied()

    def states_between(self, group: int, key: bytes, invoke: float,
                       complete: float) -> tuple[int, int, list[KeyState]]:
        """What a linearizable read of `key` called at `invoke` and answered
        by `complete` may return: the key as of the last index applied
        anywhere before the call (which it must see), or as any later write
        applied by the answer left it. Returns (that index, the last one
        applied by the answer, the states)."""
        g = self._group(group)
        before = bisect.bisect_left(g.first_times, invoke)  # strictly before the call
        by_answer = bisect.bisect_right(g.first_times, complete)
        low = g.first_indexes[before - 1] if before else 0
        high = g.first_indexes[by_answer - 1] if by_answer else 0
        writes = g.writes.get(key, [])
        at = bisect.bisect_right(writes, low, key=lambda w: w[0])
        states = [writes[at - 1][1] if at else (0, None)]
        states += [state for index, state in writes[at:] if index <= high]
        return low, high, states


def _term_before(store: MemoryRaftStore, group: int, index: int) -> int | None:
    """The term of the entry before `index` in the store's log; None when
    it is behind the log's start (nothing to compare)."""
    before = index - 1
    if before == 0:
        return 0
    loaded = store.load(group, 0)
    if before == loaded.compacted_index:
        return loaded.compacted_term
    if before < loaded.compacted_index or before > loaded.last_index:
        return None
    (entry,) = store.read_entries(group, before, before + 1, None)
    return entry.term
