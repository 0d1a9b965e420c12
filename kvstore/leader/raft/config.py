"""The settings of one Raft member, checked once at construction.

Time is in ticks: the application calls `tick()` at its own pace (the host
will tick every group on one timer), so nothing here reads a clock.
"""

from dataclasses import dataclass
from enum import Enum

from kvstore.leader.raft.messages import NodeId


class ReadMode(Enum):
    # The leader confirms it still leads with a round of heartbeats before it
    # releases a read (the Raft thesis, 6.4). Needs no clock assumption.
    READ_INDEX = "read_index"
    # The leader answers at once while it holds a lease: a quorum acknowledged
    # a heartbeat round it started less than `lease_ticks` ticks ago, and
    # those voters refuse to elect anyone else for an election timeout after
    # they heard it (CheckQuorum's rule). Safe only if no member's clock runs
    # more than `clock_drift_bound` times as fast as another's (the thesis,
    # 6.4.1); outside a lease it falls back to READ_INDEX.
    LEASE = "lease"


@dataclass(frozen=True)
class Config:
    id: NodeId
    voters: tuple[NodeId, ...]  # the group's members, this one included
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    read_mode: ReadMode = ReadMode.READ_INDEX
    clock_drift_bound: float = 1.1  # LEASE only: the ratio between clock rates
    # Flow control (etcd's MaxSizePerMsg, MaxInflightMsgs, MaxInflightBytes,
    # MaxUncommittedEntriesSize, MaxCommittedSizePerReady); payload bytes.
    max_append_bytes: int | None = 1 << 20  # per append message (at least one entry)
    max_inflight_appends: int = 256
    max_inflight_bytes: int | None = None
    max_uncommitted_bytes: int | None = None  # the leader refuses proposals beyond it
    max_apply_bytes: int | None = None  # committed entries handed out per Ready
    # A snapshot sent and not acknowledged is sent again after this many ticks
    # (the rate limit of snapshot transfer: one in flight per follower).
    snapshot_retry_ticks: int = 30
    # The last index the application applied, on a restart (0: the snapshot's).
    applied: int = 0

    def __post_init__(self) -> None:
        if self.id not in self.voters or len(set(self.voters)) != len(self.voters):
            raise ValueError(f"voters must be distinct and include {self.id!r}: {self.voters}")
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be at least 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("election_ticks must be greater than heartbeat_ticks")
        if self.max_inflight_appends < 1:
            raise ValueError("max_inflight_appends must be at least 1")
        if self.read_mode is ReadMode.LEASE and not self.check_quorum:
            raise ValueError("lease reads need check_quorum: voters must refuse to elect "
                             "another leader while they hear from this one")
        if self.clock_drift_bound < 1.0:
            raise ValueError("clock_drift_bound is a ratio of clock rates, at least 1")
        if self.read_mode is ReadMode.LEASE and self.lease_ticks < 1:
            raise ValueError("election_ticks is too short for a lease with this drift bound")

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @property
    def lease_ticks(self) -> int:
        """How long a confirmed heartbeat round backs a lease, counted from
        when the round started. A voter refuses votes until it has ticked
        `election_ticks` times after the heartbeat arrived, which is at least
        `election_ticks - 1` of its tick periods (its next tick may come at
        once); on the leader's clock that is at least that divided by the
        drift bound."""
        return int((self.election_ticks - 1) / self.clock_drift_bound)
