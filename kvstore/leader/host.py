"""`MultiRaft`: every Raft group (one per partition it replicates) of one
node, driven together: one tick for all, one persist pass for all groups
with work, one envelope per peer per pass.

The driver (`driver`, or a test) runs it in passes:

    host.receive(envelope) / host.tick() / host.propose(...) / host.read(...)
    p = host.start_pass()          # None: nothing to do
    send(p.send)                   # may leave before persisting (the thesis, 10.2.1)
    result = store.write(p.write)  # one transaction, one fsync (skip if p.write is None)
    f = host.finish_pass(p, result)   # or host.abort_pass(p) if the write failed
    send(f.send); answer(p.released + f.released)

Inputs are queued and take effect at the next `start_pass`, in arrival
order, so nothing touches a core while its Ready is being persisted (the
core's rule: nothing between `ready` and `advance`). `start_pass` feeds
the inputs to the cores, collects the Ready of every group that has one,
and turns their messages into envelopes (`envelopes.Outbox`: heartbeats
coalesced) and their persistence into one `PassWrite`. `finish_pass`
records what committed in each group's `GroupLog`, advances the cores,
sends the answers that had to wait for the disk (`messages_after_persist`),
and answers the waiting proposals and reads (`waiters`).

Each tick, every awake group is ticked once, an idle leader may quiesce its
group instead (`quiescence`), a quiesced group whose leader's node has been
silent for an election timeout wakes, and every peer gets an envelope in
the next pass (the node pair's liveness beat). Groups compact themselves:
once `snapshot_every` entries applied since the last snapshot, the next
pass snapshots the state machine and drops the log but `keep_entries`.

A group whose data cannot be read (a format this node does not know, or
damage) or whose core fails on a message is halted: it stops (no ticks, no
messages, no passes), its waiters are answered that it stopped, and the
other groups go on; the reason is in `problems`.

Pure: no I/O, no asyncio, no clock but the injected `clock_ms` (stamped in
each command, for request-id expiry); randomness from the `seed`.
"""

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from kvstore.errors import NOT_APPLIED, UNKNOWN, KVStoreError, Unavailable
from kvstore.leader import commands
from kvstore.leader.commands import Command
from kvstore.leader.envelopes import Envelope, Outbox, QuiesceNotice, unpack
from kvstore.leader.group_log import GroupLog
from kvstore.leader.persistence import GroupWrite, PassResult, PassWrite, RaftStore
from kvstore.leader.quiescence import (
    PeerLiveness, Sleep, catch_up_ticks, follower_may_quiesce, leader_lost_quorum,
    leader_may_quiesce,
)
from kvstore.leader.raft.config import Config
from kvstore.leader.raft.leadership import DropReason, ProposalDropped
from kvstore.leader.raft.messages import (
    AppendResponse, Heartbeat, HeartbeatResponse, Message, NodeId,
)
from kvstore.leader.raft.node import RawNode, Ready, Status
from kvstore.leader.raft.raft import Role
from kvstore.leader.settings import HostSettings
from kvstore.leader.state_machine import Outcome
from kvstore.leader.waiters import (
    GroupWaiters, ReadValue, Release, Ticket, not_leader,
)


@dataclass(frozen=True)
class Pass:
    send: tuple[Envelope, ...]  # may leave now, before the write
    write: PassWrite | None  # None: nothing to persist (call finish_pass with PassResult())
    released: tuple[Release, ...]  # answers already known (refused proposals and reads)
    readies: Mapping[int, Ready]
    writes: Mapping[int, GroupWrite]


@dataclass(frozen=True, slots=True)
class LeaderChange:
    """A group of this node learnt of another leader (None: it knows none now)."""

    group: int
    leader: NodeId | None
    term: int


@dataclass(frozen=True)
class Finished:
    send: tuple[Envelope, ...]  # the answers that waited for the write
    released: tuple[Release, ...]
    problems: tuple[str, ...] = ()  # groups halted, envelopes dropped: for the log
    leaders: tuple[LeaderChange, ...] = ()  # in the order they happened


@dataclass
class _Group:
    id: int
    voters: tuple[NodeId, ...]
    config: Config
    log: GroupLog
    raw: RawNode
    waiters: GroupWaiters
    sleep: Sleep = field(default_factory=Sleep)
    halted: str | None = None
    compact: bool = False  # snapshot and compact in the next pass
    leader: NodeId | None = None


class MultiRaft:
    def __init__(self, node: NodeId, store: RaftStore, settings: HostSettings = HostSettings(),
                 *, clock_ms: Callable[[], int], seed: int | None = None) -> None:
        """`seed`: for tests, which replay; None (a random one) otherwise.
        `clock_ms`: the wall clock stamped in each command."""
        self.id = node
        self._store = store
        self._settings = settings
        self._seed = seed if seed is not None else random.SystemRandom().getrandbits(64)
        # Read contexts are unique across restarts: an answer meant for a
        # read of a previous incarnation must not release a new one.
        self._nonce = random.Random(f"{self._seed}/{node}/reads").getrandbits(64).to_bytes(8, "big")
        self._clock_ms = clock_ms
        self._groups: dict[int, _Group] = {}
        self._peers: set[NodeId] = set()
        self._inputs: list[Callable[[], None]] = []
        self._dirty: set[int] = set()
        self._released: list[Release] = []
        self._problems: list[str] = []
        self._leader_changes: list[LeaderChange] = []
        self._notices: list[tuple[NodeId, QuiesceNotice]] = []
        self._beat_due: set[NodeId] = set()
        self._liveness = PeerLiveness()
        self._ticks = 0
        self._next_ticket = 0
        self._tickets: dict[Ticket, int] = {}  # ticket -> group
        self._pass: Pass | None = None

    # -- groups ------------------------------------------------------------------------

    def add_group(self, group: int, voters: tuple[NodeId, ...]) -> None:
        """Host `group`, whose members are `voters` (this node among them),
        from what the store holds of it."""
        if group in self._groups:
            raise ValueError(f"partition {group} is hosted already")
        self._groups[group] = self._load(group, voters)
        self._peers.update(v for v in voters if v != self.id)
        self._dirty.add(group)

    def _load(self, group: int, voters: tuple[NodeId, ...]) -> _Group:
        loaded = self._store.load(group, self._settings.cached_entries)
        config = self._settings.config(self.id, voters, loaded.applied)
        log = GroupLog(group, loaded, self._store, self._settings.cached_entries)
        rng = random.Random(f"{self._seed}/{self.id}/{group}/{loaded.hard_state.term}")
        return _Group(group, voters, config, log, RawNode(config, log, rng), GroupWaiters(group))

    def groups(self) -> tuple[int, ...]:
        """The groups this node hosts, in order."""
        return tuple(sorted(self._groups))

    def status(self, group: int) -> Status:
        return self._groups[group].raw.status()

    def leader(self, group: int) -> NodeId | None:
        """The leader `group` knows, as of the last pass (None: none known)."""
        return self._groups[group].leader

    def entry_term(self, group: int, index: int) -> int | None:
        """The term of `group`'s entry at `index` in this node's log (None:
        compacted away, beyond the log, or no such group). A committed
        entry's term never changes: after a write's outcome, the term of the
        entry that carried it."""
        g = self._groups.get(group)
        return None if g is None else g.raw.log_term(index)

    def is_quiesced(self, group: int) -> bool:
        return self._groups[group].sleep.quiesced

    def halted(self, group: int) -> str | None:
        return self._groups[group].halted

    @property
    def ticks(self) -> int:
        return self._ticks

    # -- inputs (queued until the next pass) ---------------------------------------------

    def tick(self) -> None:
        self._inputs.append(self._do_tick)

    def receive(self, envelope: Envelope) -> None:
        self._inputs.append(lambda: self._do_receive(envelope))

    def propose(self, group: int, command: Command) -> Ticket:
        """Propose a write; its outcome (a `state_machine.Outcome`, or a
        KVStoreError) comes in a Release with this ticket."""
        ticket = self._ticket(group)
        self._inputs.append(lambda: self._do_propose(ticket, group, command))
        return ticket

    def read(self, group: int, key: bytes) -> Ticket:
        """A linearizable read of `key`: a `ReadValue` (or a KVStoreError)
        comes in a Release with this ticket."""
        ticket = self._ticket(group)
        self._inputs.append(lambda: self._do_read(ticket, group, key))
        return ticket

    def read_local(self, group: int, key: bytes) -> ReadValue:
        """This replica's committed value, however stale (a stale read).
        Raises the refusal when this node holds no replica of `group`."""
        if group not in self._groups:
            raise Unavailable(f"{self.id} holds no replica of partition {group}",
                              reason="NOT_A_REPLICA", metadata={"outcome": NOT_APPLIED})
        value = self._store.read(group, key)
        return ReadValue(0, None) if value is None else ReadValue(value.version, value.value)

    def cancel(self, ticket: Ticket) -> None:
        """The caller gave up (its deadline passed): no answer will come."""
        group = self._tickets.pop(ticket, None)
        if group is not None and group in self._groups:
            self._groups[group].waiters.cancel(ticket)

    def campaign(self, group: int) -> None:
        self._inputs.append(lambda: self._with_core(group, lambda raw: raw.campaign()))

    def transfer_leadership(self, group: int, to: NodeId) -> None:
        self._inputs.append(lambda: self._with_core(group,
                                                    lambda raw: raw.transfer_leadership(to)))

    def report_unreachable(self, peer: NodeId) -> None:
        """The transport could not deliver to `peer`: stop streaming appends."""
        def report() -> None:
            for g in self._groups.values():
                if peer in g.voters and not g.halted:
                    g.raw.report_unreachable(peer)
                    self._dirty.add(g.id)
        self._inputs.append(report)

    def has_work(self) -> bool:
        return bool(self._inputs or self._dirty or self._released or self._notices
                    or self._beat_due)

    def _ticket(self, group: int) -> Ticket:
        self._next_ticket += 1
        self._tickets[self._next_ticket] = group
        return self._next_ticket

    def _release(self, ticket: Ticket, result: ReadValue | KVStoreError) -> None:
        self._released.append(Release(ticket, result))

    # -- the pass --------------------------------------------------------------------------

    def start_pass(self) -> Pass | None:
        if self._pass is not None:
            raise RuntimeError("a pass is under way: finish_pass (or abort_pass) it first")
        inputs, self._inputs = self._inputs, []
        for apply_input in inputs:
            apply_input()
        outbox = Outbox(self.id)
        readies: dict[int, Ready] = {}
        writes: dict[int, GroupWrite] = {}
        for gid in sorted(self._dirty):
            g = self._groups[gid]
            if g.halted:
                continue
            keep = self._settings.keep_entries if g.compact else None
            g.compact = False
            if g.raw.has_ready():
                ready = readies[gid] = g.raw.ready()
                for m in ready.messages:
                    outbox.add(gid, m)
                writes[gid] = GroupWrite(
                    gid, ready.hard_state, ready.entries, ready.snapshot, ready.committed_entries,
                    keep if ready.snapshot is None else None)
            elif keep is not None:
                writes[gid] = GroupWrite(gid, compact_keeping=keep)
        self._dirty.clear()
        for peer, notice in self._notices:
            outbox.add_quiesce(peer, notice)
        self._notices.clear()
        outbox.beat(self._beat_due)
        self._beat_due.clear()
        released, self._released = tuple(self._released), []
        for r in released:
            self._tickets.pop(r.ticket, None)
        if not writes and not outbox.peers() and not released:
            return None
        sync = any(r.must_sync or r.snapshot is not None for r in readies.values())
        write = PassWrite(tuple(writes.values()), sync) if writes else None
        self._pass = Pass(tuple(outbox.envelopes()), write, released, readies, writes)
        return self._pass

    def finish_pass(self, p: Pass, result: PassResult) -> Finished:
        """The pass's write committed with `result`."""
        self._end(p)
        outbox = Outbox(self.id)
        released: list[Release] = []
        for gid, write in p.writes.items():
            g = self._groups[gid]
            done = result.groups[gid]
            if done.failure is not None:
                released += self._halt(g, done.failure)
                continue
            g.log.record(write, done)
            ready = p.readies.get(gid)
            if ready is not None:
                released += self._advance(g, ready, dict(done.outcomes), outbox)
            if g.raw.applied - g.log.snapshot_index() >= self._settings.snapshot_every:
                g.compact = True
            self._dirty.add(gid)
        problems, self._problems = tuple(self._problems), []
        leaders, self._leader_changes = tuple(self._leader_changes), []
        for r in released:
            self._tickets.pop(r.ticket, None)
        return Finished(tuple(outbox.envelopes()), tuple(released), problems, leaders)

    def abort_pass(self, p: Pass, error: BaseException) -> Finished:
        """The pass's write failed: nothing of it is on disk. Every group in
        it restarts from what the store holds, as after a crash; its
        proposals keep waiting (their entries may still commit through
        another node), its reads waiting for a leader's answer are refused."""
        self._end(p)
        released: list[Release] = []
        for gid in p.writes:
            g = self._groups[gid]
            refusal = Unavailable(f"partition {gid} could not persist ({error}); retry",
                                  reason="STORE_FAILED")
            released += g.waiters.leader_changed(refusal)
            fresh = self._load(gid, g.voters)
            g.config, g.log, g.raw = fresh.config, fresh.log, fresh.raw
            g.sleep.wake(self._ticks)
            self._dirty.add(gid)
        self._problems.append(f"a persist pass of {len(p.writes)} partitions failed: {error}")
        problems, self._problems = tuple(self._problems), []
        return Finished((), tuple(released), problems)

    def _end(self, p: Pass) -> None:
        if p is not self._pass:
            raise ValueError("finish_pass takes the pass that start_pass returned last")
        self._pass = None

    def _advance(self, g: _Group, ready: Ready, outcomes: dict[int, Outcome],
                 outbox: Outbox) -> list[Release]:
        g.raw.advance(ready)
        for m in ready.messages_after_persist:
            outbox.add(g.id, m)
        released = g.waiters.applied(ready.committed_entries, outcomes)
        if ready.snapshot is not None:
            released += g.waiters.snapshot_applied(
                ready.snapshot.index, lambda rid: self._store.find_request(g.id, rid))
        for state in ready.read_states:  # confirmed by the leader that gave them: valid
            g.waiters.read_state(state)
        if ready.soft_state is not None and ready.soft_state.leader != g.leader:
            g.leader = ready.soft_state.leader
            self._leader_changes.append(LeaderChange(g.id, g.leader, g.raw.term))
            released += g.waiters.leader_changed(not_leader(self.id, g.id, g.leader))
        released += g.waiters.reads_done(g.raw.applied,
                                         lambda key: self._store.read(g.id, key))
        return released

    def _halt(self, g: _Group, reason: str) -> list[Release]:
        g.halted = reason
        self._problems.append(f"partition {g.id} stopped on {self.id}: {reason}")
        return g.waiters.fail_all(Unavailable(
            f"partition {g.id} stopped on {self.id}: {reason}", reason="PARTITION_STOPPED",
            metadata={"outcome": UNKNOWN}))

    # -- applying inputs ---------------------------------------------------------------------

    def _do_tick(self) -> None:
        self._ticks += 1
        election = self._settings.election_ticks
        down = self._liveness.down(self._peers, self._ticks, election)
        for g in self._groups.values():
            if g.halted:
                continue
            if g.sleep.quiesced:
                status = g.raw.status()
                if status.leader == self.id:
                    if not leader_lost_quorum(status, g.voters, down):
                        continue
                    self._wake(g)  # its followers went silent: let CheckQuorum step it down
                elif status.leader is None or status.leader not in down:
                    continue
                else:
                    self._wake(g)  # its leader's node went silent: let it elect another
            elif self._may_quiesce(g, down):
                self._quiesce(g)
                continue
            g.raw.tick()
            g.sleep.ticked()
            self._dirty.add(g.id)
        self._beat_due = set(self._peers)

    def _may_quiesce(self, g: _Group, down: set[NodeId]) -> bool:
        # leader_may_quiesce's cheap conditions first: status() is built
        # only for an idle leader, not for every busy group every tick.
        return (g.sleep.idle_ticks >= self._settings.quiesce.after_ticks
                and g.raw.role is Role.LEADER
                and not g.waiters.busy() and not g.raw.has_ready()
                and leader_may_quiesce(g.raw.status(), g.voters, g.sleep.heard, down,
                                       g.sleep.idle_ticks, self._settings.quiesce))

    def _quiesce(self, g: _Group) -> None:
        status = g.raw.status()
        g.sleep.fall_asleep(self._ticks)
        for peer in g.voters:
            if peer != self.id:  # the down ones too: the notice may still arrive
                self._notices.append((peer, QuiesceNotice(g.id, status.term, status.last_index)))

    def _wake(self, g: _Group) -> None:
        slept = g.sleep.wake(self._ticks)
        if slept is None:
            return
        if g.raw.role is Role.LEADER:
            for _ in range(catch_up_ticks(g.config, slept)):
                g.raw.tick()
        self._dirty.add(g.id)

    def _do_receive(self, envelope: Envelope) -> None:
        if envelope.to != self.id:
            self._problems.append(f"{self.id} dropped an envelope from {envelope.sender} "
                                  f"addressed to {envelope.to}")
            return
        self._liveness.heard(envelope.sender, self._ticks)
        for gid, message in unpack(envelope):
            g = self._groups.get(gid)
            if g is None or g.halted:
                continue  # not a member (any more): the sender will learn otherwise
            if g.sleep.quiesced and not isinstance(message, HeartbeatResponse):
                self._wake(g)
            if isinstance(message, (AppendResponse, HeartbeatResponse)):
                g.sleep.heard.add(message.sender)
            self._step(g, message)
        for notice in envelope.quiesce:
            self._on_quiesce_notice(envelope.sender, notice)

    def _on_quiesce_notice(self, leader: NodeId, notice: QuiesceNotice) -> None:
        g = self._groups.get(notice.group)
        if g is None or g.halted or g.sleep.quiesced:
            return
        status = g.raw.status()
        if status.term != notice.term or status.role is Role.LEADER:
            return  # stale, or from a term this node is not in: stay awake
        if (status.commit < notice.commit <= status.last_index
                and g.raw.log_term(notice.commit) == notice.term):
            # The leader's commit index, as a heartbeat of its term would
            # bring it. The leader's log ends there with an entry of its
            # term (a leader appends only in its own term), so a log with
            # an entry of that term there holds the leader's log up to it
            # (log matching). A log with another term there diverges from
            # the leader's (this node may lead an old term, cut off when the
            # leader quiesced without it): it must wait for the leader's
            # appends, and never commit its own entry at that index (a
            # heartbeat's commit is bounded by the follower's match for the
            # same reason; the notice carries no match).
            self._step(g, Heartbeat(to=self.id, sender=leader, term=notice.term,
                                    commit=notice.commit, round=0))
        # Its own waiters need no ticks: what they wait for comes in messages.
        if not g.halted and follower_may_quiesce(g.raw.status(), leader, notice.term,
                                                 notice.commit):
            g.sleep.fall_asleep(self._ticks)
        self._dirty.add(g.id)

    def _step(self, g: _Group, message: Message) -> None:
        try:
            g.raw.step(message)
        except Exception as exc:  # the core refused it midway: it cannot be trusted to go on
            self._released += self._halt(
                g, f"its Raft core failed on a {type(message).__name__} from "
                   f"{message.sender}: {exc!r}")
            return
        self._dirty.add(g.id)

    def _do_propose(self, ticket: Ticket, group: int, command: Command) -> None:
        g = self._usable(ticket, group)
        if g is None:
            return
        if g.raw.role is not Role.LEADER:
            self._release(ticket, not_leader(self.id, group, g.raw.leader))
            return
        self._wake(g)
        g.sleep.used()
        command = replace(command, proposed_ms=self._clock_ms())
        try:
            entry = g.raw.propose(commands.encode(command))
        except ProposalDropped as dropped:
            self._release(ticket, _refusal(self.id, group, dropped))
            return
        g.waiters.propose(ticket, entry, command.request_id)
        self._dirty.add(group)

    def _do_read(self, ticket: Ticket, group: int, key: bytes) -> None:
        g = self._usable(ticket, group)
        if g is None:
            return
        self._wake(g)
        g.sleep.used()
        context = self._nonce + ticket.to_bytes(8, "big")
        try:
            g.raw.read_index(context)
        except ProposalDropped as dropped:
            self._release(ticket, _refusal(self.id, group, dropped))
            return
        g.waiters.read(ticket, context, key)
        self._dirty.add(group)

    def _usable(self, ticket: Ticket, group: int) -> _Group | None:
        if ticket not in self._tickets:
            return None  # cancelled before it was applied
        g = self._groups.get(group)
        if g is None:
            self._release(ticket, Unavailable(
                f"{self.id} holds no replica of partition {group}", reason="NOT_A_REPLICA",
                metadata={"outcome": NOT_APPLIED}))
        elif g.halted:
            self._release(ticket, Unavailable(f"partition {group} stopped on {self.id}: "
                                              f"{g.halted}", reason="PARTITION_STOPPED",
                                              metadata={"outcome": NOT_APPLIED}))
        else:
            return g
        return None

    def _with_core(self, group: int, act: Callable[[RawNode], None]) -> None:
        g = self._groups.get(group)
        if g is None or g.halted:
            return
        self._wake(g)
        try:
            act(g.raw)
        except ProposalDropped:
            pass  # not the leader: nothing to transfer
        self._dirty.add(group)


def _refusal(node: NodeId, group: int, dropped: ProposalDropped) -> KVStoreError:
    if dropped.reason is DropReason.UNCOMMITTED_LIMIT:
        return Unavailable(f"partition {group} on {node} has too much uncommitted data "
                           f"({dropped}); retry after a pause", reason="OVERLOADED",
                           metadata={"outcome": NOT_APPLIED})
    return not_leader(node, group, dropped.leader)
