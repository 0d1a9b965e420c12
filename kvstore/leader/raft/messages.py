"""The values the Raft core takes and gives: log entries, the hard state, a
snapshot, and the messages between the members of one group.

All are frozen dataclasses, so a message handed to the transport can be kept
(for a retry, in a test's history) without a copy. The wire form is the rpc
edge's business; nothing here knows about protobuf.

Every message carries the sender's term: a receiver that is behind adopts it,
one that is ahead answers or ignores it (`kvstore.leader.raft.raft`). Node ids
are the store's node ids (strings); `None` where etcd uses 0 ("no node").
"""

from dataclasses import dataclass

NodeId = str


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. Empty `data` is the no-op a new leader appends at the
    start of its term (the application skips it); proposals are never empty."""

    index: int
    term: int
    data: bytes = b""

    @property
    def size(self) -> int:
        """What the entry counts against the byte limits (its payload)."""
        return len(self.data)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on stable storage before the messages that depend on it
    leave: the current term, the vote cast in it, and the commit index (the
    commit index may be written lazily; see `Ready.must_sync`).

    `fence` (0: none) is set by a restore from a backup (`restore_fence`):
    the member may have voted and acknowledged entries after the backup was
    taken, and forgot it, so until it follows a leader of a term >= `fence`
    whose commit index it has caught up to, it grants no votes and never
    campaigns (`raft.Raft`)."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0
    fence: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state machine as of `index` (whose entry had `term`):
    the log before and at `index` can be dropped. Index 0 is "no snapshot"."""

    index: int = 0
    term: int = 0
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied
    `index`: every write acknowledged before the read began is at or below it.
    `context` is the caller's, to match the read it asked for."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class _Header:
    to: NodeId
    sender: NodeId
    term: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Vote(_Header):
    """Request a vote (or, with `pre_vote`, ask whether a vote would be granted
    at `term` without anyone changing term: the Raft thesis, section 9.6).
    `transfer` marks the election a leadership transfer asked for: voters grant
    it even while they hear from the current leader."""

    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteResponse(_Header):
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Append(_Header):
    """Entries after (`prev_index`, `prev_term`), and the leader's commit index.
    No entries: a probe, or news of the commit index."""

    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...] = ()
    commit: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResponse(_Header):
    """Accepted: the follower's log matches the leader's up to `index`.
    Rejected (the consistency check failed at `index`): `hint_index` and
    `hint_term` are the follower's guess at where the logs last agree, the
    largest index at or below `index` whose term is at most the probe's, so
    the leader skips a whole divergent term per round trip."""

    index: int
    rejected: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(_Header):
    """The leader is alive. `commit` is capped at what the follower is known to
    hold; `round` numbers the leader's heartbeat rounds in its term, and its
    echo confirms the leadership for reads (`kvstore.leader.raft.reads`)."""

    commit: int = 0
    round: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatResponse(_Header):
    round: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallSnapshot(_Header):
    """The leader's snapshot, for a follower that needs entries it compacted."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNow(_Header):
    """Leadership transfer: the target is caught up; campaign now."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndex(_Header):
    """A follower forwards a read to the leader."""

    context: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIndexResponse(_Header):
    """The leader's answer to a forwarded read: serve it once `index` is applied."""

    context: bytes
    index: int


Message = (Vote | VoteResponse | Append | AppendResponse | Heartbeat | HeartbeatResponse
           | InstallSnapshot | TimeoutNow | ReadIndex | ReadIndexResponse)

# The answers that vouch for what the sender holds (its vote, its log): they
# may leave only once that state is on stable storage (the Raft thesis, 3.8).
AFTER_PERSIST = (VoteResponse, AppendResponse)


def entries_size(entries: tuple[Entry, ...] | list[Entry]) -> int:
    return sum(entry.size for entry in entries)
