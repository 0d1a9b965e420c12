"""When an idle group may stop ticking, and when a silent peer wakes it
(CockroachDB's quiesced ranges, over our core).

A quiesced group is not ticked, so it sends no heartbeats and starts no
election; it still steps every message and hands out Readies, so a
proposal, a read or any message but a heartbeat's answer wakes it.

The leader decides, at a tick, before ticking the group:
- it leads, no transfer is under way, and its log ends at its commit and
  applied index (nothing in flight, nothing to apply);
- every follower whose node is live is in REPLICATE with the whole log
  (`match` = last index), so none needs anything it would only get from a
  tick; a follower whose node has been silent for an election timeout is
  left out (it is down: it campaigns when it comes back, and its vote wakes
  the group), but the caught-up members must be a quorum;
- every live follower was heard from since the previous tick. The core's
  CheckQuorum forgets who it heard from inside a tick, so at this moment
  they count as recently active; a leader woken later may pass one
  CheckQuorum check on that before it hears from them again (see
  `catch_up_ticks`), and does not step down for having been idle;
- no proposal, read or pass of its own is pending, and it has been idle
  (no proposal or read) for `after_ticks` ticks, so a busy group does not
  flap between the two states.

It then tells each follower in a `QuiesceNotice` (term, commit = last
index); a follower quiesces only if the notice is of its term and its own
log ends there, all committed (after taking the notice's commit index); any
other follower stays awake, times out, and its (pre-)vote wakes the leader.

A quiesced follower's leader may die. Nodes exchange an envelope every tick
(`envelopes`), so a peer silent for an election timeout is presumed down:
the host wakes every quiesced group it led, whose followers then time out
and elect a new leader as usual. A quiesced leader's followers may die (or
be cut off from it) too: once its live voters are no longer a quorum, the
host wakes it (`leader_lost_quorum`), and its CheckQuorum steps it down,
rather than it going on saying it leads, in its status and metrics, a
group that cannot commit.

Pure: no I/O, no clock (ticks are counted by the host).
"""

from dataclasses import dataclass, field

from kvstore.leader.raft.config import Config, ReadMode
from kvstore.leader.raft.messages import NodeId
from kvstore.leader.raft.node import Status
from kvstore.leader.raft.progress import ProgressState
from kvstore.leader.raft.raft import Role


@dataclass(frozen=True)
class QuiesceSettings:
    enabled: bool = True
    after_ticks: int = 6  # idle ticks before a leader quiesces its group (CockroachDB's default)


def leader_may_quiesce(status: Status, voters: tuple[NodeId, ...], heard: set[NodeId],
                       down: set[NodeId], idle_ticks: int, settings: QuiesceSettings) -> bool:
    """`heard`: the followers heard from since the last tick; `down`: the
    peers silent for an election timeout."""
    if not settings.enabled or idle_ticks < settings.after_ticks:
        return False
    if status.role is not Role.LEADER or status.transferee is not None:
        return False
    if not status.last_index == status.commit == status.applied:
        return False
    live = [voter for voter in voters if voter != status.id and voter not in down]
    caught_up = all(
        voter in heard and (progress := status.progress.get(voter)) is not None
        and progress.match == status.last_index and progress.state is ProgressState.REPLICATE
        for voter in live)
    return caught_up and len(live) + 1 >= len(voters) // 2 + 1


def leader_lost_quorum(status: Status, voters: tuple[NodeId, ...], down: set[NodeId]) -> bool:
    """A leader whose voters that are not `down` (itself among them) are
    fewer than a quorum."""
    if status.role is not Role.LEADER:
        return False
    live = [voter for voter in voters if voter == status.id or voter not in down]
    return len(live) < len(voters) // 2 + 1


def follower_may_quiesce(status: Status, leader: NodeId, term: int, commit: int) -> bool:
    """After the notice's commit index was taken."""
    return (status.role is Role.FOLLOWER and status.term == term and status.leader == leader
            and status.last_index == status.commit == commit)


def catch_up_ticks(config: Config, quiesced_for: int) -> int:
    """Ticks a leader takes at once when it wakes, so that its lease does
    not outlive the time it slept: with lease reads, a leader's lease is
    counted in its own ticks, which stopped while it was quiesced. Enough
    to expire the lease, and fewer than an election timeout, so at most one
    CheckQuorum check falls inside them (which it passes: every follower
    was heard from when it quiesced). ReadIndex needs none."""
    if config.read_mode is not ReadMode.LEASE:
        return 0
    return min(quiesced_for, config.lease_ticks)


@dataclass
class Sleep:
    """One group's sleep on this node: whether it is quiesced and since which
    host tick, how many ticks it has been idle, and (as leader) which
    followers it heard from since its last tick."""

    quiesced: bool = False
    since: int = 0
    idle_ticks: int = 0
    heard: set[NodeId] = field(default_factory=set)

    def ticked(self) -> None:
        self.heard.clear()
        self.idle_ticks += 1

    def used(self) -> None:
        """A proposal or a read: not idle."""
        self.idle_ticks = 0

    def fall_asleep(self, tick: int) -> None:
        self.quiesced, self.since = True, tick

    def wake(self, tick: int) -> int | None:
        """The ticks it slept; None if it was awake."""
        if not self.quiesced:
            return None
        self.quiesced = False
        self.idle_ticks = 0
        return tick - self.since


class PeerLiveness:
    """When each peer was last heard from, in host ticks."""

    def __init__(self) -> None:
        self._heard: dict[NodeId, int] = {}

    def heard(self, peer: NodeId, tick: int) -> None:
        self._heard[peer] = tick

    def silent(self, peer: NodeId, tick: int, ticks: int) -> bool:
        """Nothing from `peer` for `ticks` ticks (never heard: counted from tick 0)."""
        return tick - self._heard.get(peer, 0) >= ticks

    def down(self, peers: set[NodeId], tick: int, ticks: int) -> set[NodeId]:
        return {peer for peer in peers if self.silent(peer, tick, ticks)}
