"""What a leader does in its term: replicate its log to each follower (with
the flow control of `progress`), commit by majority, confirm reads, check its
quorum, hand out snapshots, and transfer leadership.

A `Leadership` lives exactly as long as one term's leadership: the core makes
one when it wins an election and drops it when it steps down, so nothing of
one term's bookkeeping (progress, reads, a transfer) leaks into the next.

Appends are not sent from inside each proposal: proposals only append to the
log and `flush` (called when the application asks for a Ready) sends what
each follower can take, so proposals made between two Readies travel in the
same messages (batching), and a follower in REPLICATE state gets several
appends in flight at once (pipelining).
"""

from collections.abc import Callable
from enum import Enum

from kvstore.leader.raft.config import Config, ReadMode
from kvstore.leader.raft.log import RaftLog
from kvstore.leader.raft.messages import (
    Append, AppendResponse, Entry, Heartbeat, HeartbeatResponse, InstallSnapshot, Message,
    NodeId, ReadIndexResponse, ReadState, TimeoutNow, entries_size,
)
from kvstore.leader.raft.progress import Inflights, Progress, ProgressState
from kvstore.leader.raft.reads import PendingRead, ReadRounds


class DropReason(Enum):
    NOT_LEADER = "not_leader"
    TRANSFERRING = "transferring"  # a leadership transfer is under way
    UNCOMMITTED_LIMIT = "uncommitted_limit"  # max_uncommitted_bytes reached


class ProposalDropped(Exception):
    """The proposal (or read, or transfer) was not taken: nothing was
    appended. `leader` is the leader this member knows of, if any."""

    def __init__(self, reason: DropReason, message: str, leader: NodeId | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.leader = leader


class Leadership:
    def __init__(self, config: Config, term: int, log: RaftLog,
                 send: Callable[[Message], None],
                 release: Callable[[ReadState], None]) -> None:
        self._config = config
        self._id = config.id
        self._term = term
        self._log = log
        self._send = send
        self._release = release
        last = log.last_index()
        self.progress = {
            peer: Progress(match=last if peer == self._id else 0, next=last + 1,
                           inflights=Inflights(config.max_inflight_appends,
                                               config.max_inflight_bytes))
            for peer in config.voters
        }
        mine = self.progress[self._id]
        mine.become_replicate()
        mine.recent_active = True
        self.transferee: NodeId | None = None
        self._transfer_ticks = 0
        self._timeout_now_sent = False  # this term: no lease reads after one
        self.uncommitted_bytes = 0
        self.ticks = 0
        self._reads = ReadRounds(self._id, config.voters, config.quorum)
        self._postponed_reads: list[PendingRead] = []  # until an entry of this term commits
        self._broadcast_commit = False
        self._broadcast_entries = False

    # -- proposals -------------------------------------------------------------

    def propose(self, data: bytes) -> Entry:
        if self.transferee is not None:
            raise ProposalDropped(DropReason.TRANSFERRING,
                                  f"leadership is being transferred to {self.transferee}",
                                  self.transferee)
        limit = self._config.max_uncommitted_bytes
        size = len(data)
        # An empty uncommitted tail takes a proposal of any size, so one larger
        # than the limit is not refused for ever (etcd does the same).
        if limit is not None and self.uncommitted_bytes and self.uncommitted_bytes + size > limit:
            raise ProposalDropped(DropReason.UNCOMMITTED_LIMIT,
                                  f"{self.uncommitted_bytes} bytes are uncommitted "
                                  f"(max_uncommitted_bytes {limit})", self._id)
        return self.append(data)

    def append(self, data: bytes) -> Entry:
        entry = Entry(index=self._log.last_index() + 1, term=self._term, data=data)
        self._log.append([entry])
        self.uncommitted_bytes += entry.size
        # Counted for the commit only once on this node's stable storage
        # (`self_acknowledge`, from advance): the Raft thesis, 10.2.1.
        self._broadcast_entries = True
        return entry

    def applied(self, entries: list[Entry]) -> None:
        self.uncommitted_bytes = max(0, self.uncommitted_bytes - entries_size(entries))

    # -- sending -----------------------------------------------------------------

    def needs_flush(self) -> bool:
        return self._broadcast_entries or self._broadcast_commit or self._reads.needs_round()

    def flush(self) -> None:
        """Send what is due: new entries and commit indexes to every follower
        that can take them, and a heartbeat round for reads that wait for one."""
        if self._broadcast_entries or self._broadcast_commit:
            for peer in self._peers():
                self._send_appends(peer, send_if_empty=self._broadcast_commit)
            self._broadcast_entries = self._broadcast_commit = False
        if self._reads.needs_round():
            self.broadcast_heartbeat()

    def broadcast_heartbeat(self) -> None:
        round_, released = self._reads.start_round(self.ticks)
        for read in released:
            self._answer(read, read.index)
        for peer in self._peers():
            progress = self.progress[peer]
            commit = min(progress.match, self._log.committed)
            self._send(Heartbeat(to=peer, sender=self._id, term=self._term, commit=commit,
                                 round=round_))
            progress.sent_commit = commit

    def _send_appends(self, peer: NodeId, send_if_empty: bool) -> None:
        """As many appends as the follower's window takes."""
        if self._send_append(peer, send_if_empty):
            while self._send_append(peer, send_if_empty=False):
                pass

    def _send_append(self, peer: NodeId, send_if_empty: bool) -> bool:
        progress = self.progress[peer]
        if progress.is_paused():
            return False
        prev_index = progress.next - 1
        prev_term = self._log.term(prev_index)
        if prev_term is None:
            return self._send_snapshot(peer)
        entries: list[Entry] | None = []
        # A full window still lets an empty append through (on a heartbeat
        # response), so appends that were all lost cannot stall the follower.
        if progress.state is not ProgressState.REPLICATE or not progress.inflights.full():
            entries = self._log.entries(progress.next, max_bytes=self._config.max_append_bytes)
        if entries is None:
            return self._send_snapshot(peer)
        if not entries and not send_if_empty:
            return False
        commit = self._log.committed
        self._send(Append(to=peer, sender=self._id, term=self._term, prev_index=prev_index,
                          prev_term=prev_term, entries=tuple(entries), commit=commit))
        progress.sent_entries(len(entries), entries_size(entries))
        progress.sent_commit = commit
        return True

    def _send_snapshot(self, peer: NodeId) -> bool:
        progress = self.progress[peer]
        if not progress.recent_active:
            return False  # not while it may be down: snapshots are expensive
        snapshot = self._log.snapshot()
        assert snapshot.index > 0, "entries were compacted without a snapshot"
        progress.become_snapshot(snapshot.index)
        self._send(InstallSnapshot(to=peer, sender=self._id, term=self._term,
                                   snapshot=snapshot))
        return True

    # -- answers from followers ---------------------------------------------------

    def self_acknowledge(self, index: int) -> None:
        """This node's own entries up to `index` are on stable storage."""
        if self.progress[self._id].maybe_update(index):
            self._maybe_commit()

    def on_append_response(self, m: AppendResponse) -> None:
        progress = self.progress.get(m.sender)
        if progress is None:
            return
        progress.recent_active = True
        if m.rejected:
            self._on_rejection(progress, m)
            return
        caught_up_probe = progress.match == m.index and progress.state is ProgressState.PROBE
        if not progress.maybe_update(m.index) and not caught_up_probe:
            return
        if progress.state is ProgressState.PROBE:
            progress.become_replicate()
        elif (progress.state is ProgressState.SNAPSHOT
              and progress.match + 1 >= self._log.first_index()):
            # The snapshot (or any other way) brought it to where the log can
            # take over (snapshot_succeed_via_app_resp.txt).
            progress.become_probe()
            progress.become_replicate()
        elif progress.state is ProgressState.REPLICATE:
            progress.inflights.free_to(m.index)
        if not self._maybe_commit() and progress.can_bump_commit(self._log.committed):
            self._send_append(m.sender, send_if_empty=True)
        self._send_appends(m.sender, send_if_empty=False)
        if m.sender == self.transferee and progress.match == self._log.last_index():
            self._send_timeout_now(m.sender)

    def _on_rejection(self, progress: Progress, m: AppendResponse) -> None:
        hint = m.hint_index
        if m.hint_term > 0:
            # Skip every index whose term here is above the follower's term at
            # its hint: the follower cannot match there (log terms only grow).
            hint, _ = self._log.find_conflict_by_term(m.hint_index, m.hint_term)
        if progress.maybe_decrease_to(m.index, hint):
            if progress.state is ProgressState.REPLICATE:
                progress.become_probe()
            self._send_append(m.sender, send_if_empty=True)

    def on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        progress = self.progress.get(m.sender)
        if progress is None:
            return
        progress.recent_active = True
        progress.paused = False
        # Resume a follower that is behind or probing (and, with a full window,
        # send an empty append: heartbeat_resp_recovers_from_probing.txt).
        if progress.match < self._log.last_index() or progress.state is ProgressState.PROBE:
            self._send_append(m.sender, send_if_empty=True)
        for read in self._reads.ack(m.sender, m.round):
            self._answer(read, read.index)

    def report_snapshot(self, peer: NodeId, succeeded: bool) -> None:
        progress = self.progress.get(peer)
        if progress is None or progress.state is not ProgressState.SNAPSHOT:
            return
        if not succeeded:
            progress.pending_snapshot = 0  # probe from what it is known to hold
        progress.become_probe()
        # Wait for its answer (success) or a heartbeat interval (failure).
        progress.paused = True

    def report_unreachable(self, peer: NodeId) -> None:
        progress = self.progress.get(peer)
        if progress is not None and progress.state is ProgressState.REPLICATE:
            progress.become_probe()  # appends in flight were probably lost

    def _maybe_commit(self) -> bool:
        matches = sorted((p.match for p in self.progress.values()), reverse=True)
        quorum_index = matches[self._config.quorum - 1]
        if not self._log.maybe_commit(quorum_index, self._term):
            return False
        self._broadcast_commit = True
        if self._postponed_reads:
            for read in self._postponed_reads:
                self._read(PendingRead(self._log.committed, read.context, read.requester))
            self._postponed_reads = []
        return True

    # -- reads -------------------------------------------------------------------------

    def read(self, context: bytes, requester: NodeId) -> None:
        read = PendingRead(self._log.committed, context, requester)
        if not self.committed_in_term():
            # Its commit index may be behind what earlier leaders committed
            # until an entry of this term (the no-op) commits.
            self._postponed_reads.append(read)
            return
        self._read(read)

    def _read(self, read: PendingRead) -> None:
        if self._config.read_mode is ReadMode.LEASE and self._holds_lease():
            self._answer(read, read.index)
        else:
            self._reads.add(read)

    def _holds_lease(self) -> bool:
        # A transfer lets voters elect its target at once, lease or not.
        return (self.transferee is None and not self._timeout_now_sent
                and self._reads.lease_valid(self.ticks, self._config.lease_ticks))

    def committed_in_term(self) -> bool:
        return self._log.term(self._log.committed) == self._term

    def _answer(self, read: PendingRead, index: int) -> None:
        if read.requester == self._id:
            self._release(ReadState(index=index, context=read.context))
        else:
            self._send(ReadIndexResponse(to=read.requester, sender=self._id, term=self._term,
                                         context=read.context, index=index))

    # -- time, quorum, transfer -----------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        for peer, progress in self.progress.items():
            if progress.state is ProgressState.SNAPSHOT:
                progress.snapshot_ticks += 1
                if progress.snapshot_ticks >= self._config.snapshot_retry_ticks:
                    self.report_snapshot(peer, succeeded=False)
        if self.transferee is not None:
            self._transfer_ticks += 1
            if self._transfer_ticks >= self._config.election_ticks:
                self.transferee = None  # it did not take over in time: lead on

    def check_quorum(self) -> bool:
        """Whether a quorum was heard from since the last check; starts the
        next interval."""
        active = sum(1 for p in self.progress.values() if p.recent_active)
        for peer, progress in self.progress.items():
            progress.recent_active = peer == self._id
        return active >= self._config.quorum

    def transfer(self, target: NodeId) -> None:
        if target not in self.progress:
            raise ValueError(f"{target!r} is not a voter of this group: {self._config.voters}")
        if target == self._id or target == self.transferee:
            return
        self.transferee = target
        self._transfer_ticks = 0
        if self.progress[target].match == self._log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target, send_if_empty=True)

    def _send_timeout_now(self, target: NodeId) -> None:
        self._timeout_now_sent = True
        self._send(TimeoutNow(to=target, sender=self._id, term=self._term))

    def _peers(self) -> list[NodeId]:
        return [peer for peer in self._config.voters if peer != self._id]
