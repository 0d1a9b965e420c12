"""The settings of a node's multi-Raft host: the Raft timings and limits
every group of the node shares, quiescence, and compaction. Time is in
ticks; the driver's ticker says how long one is.

A frozen value with its checks; the node's configuration will fill it.
Pure: no I/O.
"""

from dataclasses import dataclass

from kvstore.leader.group_log import CACHED_ENTRIES
from kvstore.leader.quiescence import QuiesceSettings
from kvstore.leader.raft.config import Config, ReadMode
from kvstore.leader.raft.messages import NodeId


@dataclass(frozen=True)
class HostSettings:
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    read_mode: ReadMode = ReadMode.READ_INDEX
    pre_vote: bool = True
    check_quorum: bool = True
    max_append_bytes: int | None = 1 << 20
    max_inflight_appends: int = 256
    max_uncommitted_bytes: int | None = 64 << 20
    snapshot_retry_ticks: int = 30
    quiesce: QuiesceSettings = QuiesceSettings()
    snapshot_every: int = 10_000  # entries applied since the last snapshot
    keep_entries: int = 1_000  # entries kept behind a snapshot, for followers just behind
    cached_entries: int = CACHED_ENTRIES  # per group, the log's tail in memory

    def __post_init__(self) -> None:
        if self.snapshot_every < 1 or self.keep_entries < 0:
            raise ValueError("snapshot_every must be at least 1 and keep_entries at least 0")

    def config(self, node: NodeId, voters: tuple[NodeId, ...], applied: int) -> Config:
        return Config(id=node, voters=voters, election_ticks=self.election_ticks,
                      heartbeat_ticks=self.heartbeat_ticks, pre_vote=self.pre_vote,
                      check_quorum=self.check_quorum, read_mode=self.read_mode,
                      max_append_bytes=self.max_append_bytes,
                      max_inflight_appends=self.max_inflight_appends,
                      max_uncommitted_bytes=self.max_uncommitted_bytes,
                      snapshot_retry_ticks=self.snapshot_retry_ticks, applied=applied)
