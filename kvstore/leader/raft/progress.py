"""What a leader knows of each follower's log, and how fast it may send to it
(etcd-io/raft's `tracker.Progress` and `Inflights`).

A follower's progress is in one of three states:
- PROBE: the leader does not know where the logs agree. It sends one append
  at a time (at `next`) and waits for the answer (or a heartbeat response)
  before the next; a rejection moves `next` back, by a whole term at a time.
- REPLICATE: the logs agree up to `match`. The leader streams appends
  optimistically (advancing `next` as it sends, pipelining), bounded by the
  in-flight window: at most `max_messages` appends and `max_bytes` of payload
  unacknowledged.
- SNAPSHOT: the follower needs entries the leader compacted away; a snapshot
  is on its way and nothing else is sent until it is acknowledged, reported
  failed, or times out.

Pure bookkeeping: no messages are built here.
"""

from collections import deque
from dataclasses import dataclass, field
from enum import Enum


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The appends sent in REPLICATE state and not yet acknowledged, each by
    the index of its last entry and its payload bytes."""

    def __init__(self, max_messages: int, max_bytes: int | None) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._sent: deque[tuple[int, int]] = deque()
        self.bytes = 0

    @property
    def count(self) -> int:
        return len(self._sent)

    def full(self) -> bool:
        return len(self._sent) >= self.max_messages or (
            self.max_bytes is not None and self.bytes >= self.max_bytes)

    def add(self, last_index: int, size: int) -> None:
        assert not self.full(), "sent past a full in-flight window"
        self._sent.append((last_index, size))
        self.bytes += size

    def free_to(self, index: int) -> None:
        """The follower has everything up to `index`: the appends ending at or
        below it are no longer in flight."""
        while self._sent and self._sent[0][0] <= index:
            self.bytes -= self._sent.popleft()[1]

    def reset(self) -> None:
        self._sent.clear()
        self.bytes = 0


@dataclass
class Progress:
    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    # PROBE: an append is out and unanswered. REPLICATE: the window is full.
    paused: bool = False
    pending_snapshot: int = 0  # SNAPSHOT: the index of the snapshot sent
    snapshot_ticks: int = 0  # SNAPSHOT: ticks since it was sent
    # Heard from since the leader last checked its quorum (CheckQuorum).
    recent_active: bool = False
    # The highest commit index sent, so that one that moved is sent promptly.
    sent_commit: int = field(default=0)

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # A snapshot that arrived leaves the follower at its index at least.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(ProgressState.PROBE)
        self.sent_commit = min(self.sent_commit, self.next - 1)

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = index
        self.next = index + 1
        self.sent_commit = index

    def is_paused(self) -> bool:
        return self.state is ProgressState.SNAPSHOT or self.paused

    def sent_entries(self, count: int, size: int) -> None:
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next += count
                self.inflights.add(self.next - 1, size)
            self.paused = self.inflights.full()
        elif count:
            self.paused = True  # PROBE: one at a time

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index`; True if it moved `match`."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.paused = False
        return True

    def maybe_decrease_to(self, rejected: int, hint: int) -> bool:
        """A rejection of the append after `rejected`, with the follower's hint
        at where the logs agree. False if it is stale (already superseded)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
        else:
            if self.next - 1 != rejected:
                return False
            self.next = max(min(rejected, hint + 1), self.match + 1)
            self.paused = False
        self.sent_commit = min(self.sent_commit, self.next - 1)
        return True

    def can_bump_commit(self, commit: int) -> bool:
        """A newer commit index could be sent: the follower has not been told
        it and has entries (sent) it would cover."""
        return commit > self.sent_commit and self.sent_commit < self.next - 1

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.paused = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.inflights.reset()
