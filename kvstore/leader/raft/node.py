"""`RawNode`: the Raft core's public face (etcd-io/raft's RawNode), and the
`Ready` it hands the application.

The application drives it in a loop:

    node.tick()                      # at its own pace: every tick period
    node.step(message)               # every message that arrives for it
    node.propose(data) / node.read_index(context) / node.transfer_leadership(to)
    if node.has_ready():
        ready = node.ready()
        send(ready.messages)         # may go at once, before or while persisting
        persist(ready.hard_state, ready.entries, ready.snapshot)   # fsync if must_sync
        send(ready.messages_after_persist)
        apply(ready.snapshot, ready.committed_entries)   # in log order
        serve(ready.read_states)     # once the state machine has applied each index
        node.advance(ready)

Between `ready()` and `advance()` nothing else may be called: the core
assumes what it handed out is being persisted, and the application keeps
messages and ticks that arrive meanwhile for after `advance` (a host that
persists many groups in one transaction does exactly that).

Pure: no I/O, no clock, no threads; storage is only read (the application
writes it), randomness comes from the `random.Random` passed in.
"""

import random
from dataclasses import dataclass, field

from kvstore.leader.raft.config import Config
from kvstore.leader.raft.messages import (
    Entry, HardState, Message, NodeId, ReadState, Snapshot,
)
from kvstore.leader.raft.progress import ProgressState
from kvstore.leader.raft.raft import Raft, Role
from kvstore.leader.raft.storage import LogStorage


@dataclass(frozen=True)
class SoftState:
    """Volatile, need not be persisted: who leads and this member's role."""

    leader: NodeId | None
    role: Role


@dataclass(frozen=True)
class Ready:
    """What the application must do before `advance`, in this order: send
    `messages` (any time), persist `hard_state`, `entries` and `snapshot`
    (durably when `must_sync`), then send `messages_after_persist` (the
    answers that vouch for the vote and the log: the Raft thesis, 3.8), apply
    `snapshot` and then `committed_entries` to the state machine, and serve
    each read in `read_states` once its index is applied.

    `messages` may leave before the persisting because none of them vouches
    for this node's stable state: the leader's appends and heartbeats (the
    leader counts its own log towards a commit only once persisted, the
    thesis, 10.2.1), vote requests (the candidate's own vote waits), read
    answers (from the commit index, durable on a quorum already)."""

    soft_state: SoftState | None = None  # None when unchanged
    hard_state: HardState | None = None  # None when unchanged
    must_sync: bool = False  # the term, the vote or the log changed: fsync
    entries: tuple[Entry, ...] = ()  # append to stable storage (replacing from the first's index)
    snapshot: Snapshot | None = None  # a leader's: replaces the log and the state machine
    messages: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()  # apply in order; skip empty (no-op) data
    read_states: tuple[ReadState, ...] = ()


@dataclass(frozen=True)
class FollowerProgress:
    match: int
    next: int
    state: ProgressState


@dataclass(frozen=True)
class Status:
    id: NodeId
    term: int
    vote: NodeId | None
    leader: NodeId | None
    role: Role
    commit: int
    applied: int
    last_index: int
    progress: dict[NodeId, FollowerProgress] = field(default_factory=dict)  # the leader's only
    transferee: NodeId | None = None
    fence: int = 0  # a restored member's, until lifted (`HardState.fence`)


class ReadyOutstanding(RuntimeError):
    """Called between ready() and advance()."""


class RawNode:
    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        self._raft = Raft(config, storage, rng)
        self._hard_state = self._raft.hard_state()
        self._soft_state = SoftState(self._raft.leader, self._raft.role)
        self._outstanding: Ready | None = None

    # -- inputs ---------------------------------------------------------------------

    def tick(self) -> None:
        self._idle()
        self._raft.tick()

    def step(self, message: Message) -> None:
        self._idle()
        self._raft.step(message)

    def campaign(self) -> None:
        """Start an election now, without waiting for the timeout."""
        self._idle()
        self._raft.campaign()

    def propose(self, data: bytes) -> Entry:
        """Append `data` to the log (on the leader only). Returns the entry:
        the write is done when an entry with this index *and term* is
        applied; another term at that index means it was overwritten. Raises
        `ProposalDropped` (not the leader, transfer under way, too many
        uncommitted bytes): nothing was appended."""
        self._idle()
        return self._raft.propose(data)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; a `ReadState` with this `context`
        comes in a later Ready (a follower asks the leader). It may never
        come (the leader changed, a message was lost): the caller times out.
        Raises `ProposalDropped` when no leader is known."""
        self._idle()
        self._raft.read_index(context)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to `target` once its log is caught up (TimeoutNow);
        proposals are refused meanwhile, and the attempt ends after an
        election timeout. On the leader only."""
        self._idle()
        self._raft.transfer_leadership(target)

    def report_unreachable(self, peer: NodeId) -> None:
        """The transport could not send to `peer`: stop streaming to it."""
        self._idle()
        if self._raft.leadership is not None:
            self._raft.leadership.report_unreachable(peer)

    def report_snapshot(self, peer: NodeId, succeeded: bool) -> None:
        """The transport knows whether a snapshot sent to `peer` arrived."""
        self._idle()
        if self._raft.leadership is not None:
            self._raft.leadership.report_snapshot(peer, succeeded)

    # -- the Ready cycle ------------------------------------------------------------

    def has_ready(self) -> bool:
        raft = self._raft
        hard, soft = self._hard_state, self._soft_state
        # Field by field, not by building the states: called for every busy
        # group in every pass.
        return bool(
            self._outstanding is None and (
                raft.messages or raft.messages_after_persist or raft.self_messages
                or raft.read_states or raft.needs_flush()
                or raft.log.unstable_entries() or raft.log.unstable_snapshot() is not None
                or raft.log.has_entries_to_apply()
                or raft.term != hard.term or raft.vote != hard.vote
                or raft.log.committed != hard.commit or raft.fence != hard.fence
                or raft.leader != soft.leader or raft.role is not soft.role))

    def ready(self) -> Ready:
        self._idle()
        raft = self._raft
        raft.flush()
        hard_state = raft.hard_state()
        soft_state = SoftState(raft.leader, raft.role)
        entries = tuple(raft.log.unstable_entries())
        previous = self._hard_state
        ready = Ready(
            soft_state=soft_state if soft_state != self._soft_state else None,
            hard_state=hard_state if hard_state != previous else None,
            must_sync=bool(entries) or hard_state.term != previous.term
            or hard_state.vote != previous.vote or hard_state.fence != previous.fence,
            entries=entries,
            snapshot=raft.log.unstable_snapshot(),
            messages=tuple(raft.messages),
            messages_after_persist=tuple(raft.messages_after_persist),
            committed_entries=tuple(raft.log.entries_to_apply(raft.config.max_apply_bytes)),
            read_states=tuple(raft.read_states),
        )
        raft.messages.clear()
        raft.messages_after_persist.clear()
        raft.read_states.clear()
        self._hard_state = hard_state
        self._soft_state = soft_state
        self._outstanding = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """The application has done all `ready` asked."""
        if ready is not self._outstanding:
            raise ValueError("advance() takes the Ready that ready() returned last")
        self._outstanding = None
        log = self._raft.log
        last = ready.entries[-1] if ready.entries else None
        log.stable_to(last, ready.snapshot)
        if ready.committed_entries:
            log.applied_to(ready.committed_entries[-1].index)
        self._raft.after_persist(last, list(ready.committed_entries))

    # -- reading --------------------------------------------------------------------

    def status(self) -> Status:
        raft = self._raft
        leadership = raft.leadership
        progress = {} if leadership is None else {
            peer: FollowerProgress(p.match, p.next, p.state)
            for peer, p in leadership.progress.items()}
        return Status(id=raft.id, term=raft.term, vote=raft.vote, leader=raft.leader,
                      role=raft.role, commit=raft.log.committed, applied=raft.log.applied,
                      last_index=raft.log.last_index(), progress=progress,
                      transferee=None if leadership is None else leadership.transferee,
                      fence=raft.fence)

    # Single fields, for the host's hot paths: `status()` builds the whole
    # picture (the leader's progress of every follower included).

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def leader(self) -> NodeId | None:
        return self._raft.leader

    @property
    def applied(self) -> int:
        return self._raft.log.applied

    def log_term(self, index: int) -> int | None:
        """The term of this member's entry at `index`, those not yet
        persisted included; None when compacted away or beyond its log."""
        return self._raft.log.term(index)

    def _idle(self) -> None:
        if self._outstanding is not None:
            raise ReadyOutstanding("a Ready is outstanding: call advance() first")
