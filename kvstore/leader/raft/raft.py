"""The Raft state machine of one group member: roles, terms and votes,
elections (with PreVote and CheckQuorum's lease), and a follower's handling
of appends, heartbeats and snapshots. What a leader does lives in
`leadership`; the Ready/advance cycle and the public API in `node`.

Rules that matter for safety, and where they are:
- A message from a higher term makes this member a follower in that term
  (`_on_term`), except votes ignored under the lease and the term-less parts
  of PreVote; one from a lower term is ignored, or answered so that a stale
  leader learns the term.
- A vote is granted only once per term, and only to a candidate whose log is
  at least as up to date (`_on_vote`).
- Answers that vouch for the vote or the log (`messages.AFTER_PERSIST`) wait
  for the Ready's hard state and entries to be persisted; so do this node's
  own vote and its own acknowledgement of its entries (`self_messages`).
- A member restored from a backup is fenced (`HardState.fence`): it grants
  no vote or pre-vote and never campaigns until it has followed a leader of
  a term at or above the fence to an entry of that leader's term
  (`_maybe_lift_fence`), so it can neither vote twice in a term it forgot
  nor help elect a leader that lacks entries it acknowledged and forgot.

Randomness (the election timeout's jitter) comes only from the `random.Random`
the caller passes in. Pure: no I/O, no clock, no threads.
"""

import random
from enum import Enum

from kvstore.leader.raft.config import Config, ReadMode
from kvstore.leader.raft.leadership import DropReason, Leadership, ProposalDropped
from kvstore.leader.raft.log import RaftLog
from kvstore.leader.raft.messages import (
    AFTER_PERSIST, Append, AppendResponse, Entry, HardState, Heartbeat, HeartbeatResponse,
    InstallSnapshot, Message, NodeId, ReadIndex, ReadIndexResponse, ReadState, TimeoutNow,
    Vote, VoteResponse,
)
from kvstore.leader.raft.storage import LogStorage


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Campaign(Enum):
    PRE_VOTE = "pre_vote"  # the first phase, when PreVote is on
    ELECTION = "election"
    TRANSFER = "transfer"  # asked for by the leader (TimeoutNow): no PreVote, no lease


class Raft:
    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        self.config = config
        self.id = config.id
        self._rng = rng
        self.log = RaftLog(storage)
        state = storage.hard_state()
        if not self.log.committed <= state.commit <= self.log.last_index():
            raise ValueError(f"stored commit {state.commit} is outside the stored log "
                             f"{self.log.committed}..{self.log.last_index()}")
        self.log.committed = state.commit
        # The state machine starts from the snapshot (or from what the
        # application says it applied); the committed entries after it are
        # handed out again.
        self.log.applied_to(max(config.applied, storage.snapshot().index, self.log.applied))
        self.term = state.term
        self.vote: NodeId | None = state.vote
        self.fence = state.fence
        self.leader: NodeId | None = None
        self.role = Role.FOLLOWER
        self.leadership: Leadership | None = None
        self._votes: dict[NodeId, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._election_timeout = config.election_ticks
        # With lease reads, a member that (re)starts may have acknowledged a
        # leader's round just before it went down: it keeps the lease it
        # promised for an election timeout before it votes.
        # (A member that never had a term never acknowledged anyone.)
        self._restart_lease = config.read_mode is ReadMode.LEASE and state.term > 0
        self.messages: list[Message] = []  # may leave at once
        self.messages_after_persist: list[Message] = []  # to others, once persisted
        self.self_messages: list[Message] = []  # to this node, stepped once persisted
        self.read_states: list[ReadState] = []
        self._become_follower(self.term, None)

    # -- inputs -------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._restart_lease = False
        if self._election_elapsed >= self._election_timeout:
            if self._promotable():
                self._election_elapsed = 0
                self.campaign()
            elif self.fence and self.id in self.config.voters:
                self._election_elapsed = 0
                self._probe()

    def campaign(self) -> None:
        """Start an election now (etcd's MsgHup)."""
        self._hup(Campaign.PRE_VOTE if self.config.pre_vote else Campaign.ELECTION)

    def propose(self, data: bytes) -> Entry:
        if not data:
            raise ValueError("a proposal carries data (an empty entry is a leader's no-op)")
        if self.leadership is None:
            raise ProposalDropped(DropReason.NOT_LEADER,
                                  f"{self.id} is not the leader of term {self.term}", self.leader)
        return self.leadership.propose(data)

    def read_index(self, context: bytes) -> None:
        if self.leadership is not None:
            self.leadership.read(context, self.id)
        elif self.leader is not None:
            self._send(ReadIndex(to=self.leader, sender=self.id, term=self.term,
                                 context=context))
        else:
            raise ProposalDropped(DropReason.NOT_LEADER,
                                  f"{self.id} knows no leader in term {self.term}")

    def transfer_leadership(self, target: NodeId) -> None:
        if self.leadership is None:
            raise ProposalDropped(DropReason.NOT_LEADER,
                                  f"{self.id} is not the leader of term {self.term}", self.leader)
        self.leadership.transfer(target)

    def step(self, m: Message) -> None:
        if m.to != self.id:
            raise ValueError(f"a message for {m.to!r} was stepped on {self.id!r}")
        if m.sender not in self.config.voters:
            return  # not a member of this group
        if m.term > self.term:
            if not self._on_higher_term(m):
                return
        elif m.term < self.term:
            self._on_lower_term(m)
            return
        if isinstance(m, Vote):
            self._on_vote(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # -- terms --------------------------------------------------------------------------

    def _on_higher_term(self, m: Message) -> bool:
        """False when the message is to be ignored."""
        if isinstance(m, Vote) and not m.transfer and self._in_lease():
            # CheckQuorum's lease: while this member hears from a leader it
            # neither changes term nor votes, so a partitioned node that comes
            # back cannot unseat a working leader.
            return False
        if isinstance(m, Vote) and m.pre_vote:
            return True  # a pre-vote changes no one's term
        if isinstance(m, VoteResponse) and m.pre_vote and m.granted:
            return True  # granted for the term we would campaign in
        from_leader = isinstance(m, (Append, Heartbeat, InstallSnapshot))
        self._become_follower(m.term, m.sender if from_leader else None)
        return True

    def _on_lower_term(self, m: Message) -> None:
        stale_leader = isinstance(m, (Append, Heartbeat))
        if stale_leader and (self.config.check_quorum or self.config.pre_vote or self.fence):
            # A leader of an older term (or one cut off while this member's
            # term moved on): tell it the term, so it steps down and this
            # member, which ignores votes while it hears a leader, is not
            # stranded with a term no one else has. A fenced member never
            # campaigns, so without this its term would never reach them.
            self._send(AppendResponse(to=m.sender, sender=self.id, term=self.term, index=0))
        elif isinstance(m, Vote) and m.pre_vote:
            self._send(VoteResponse(to=m.sender, sender=self.id, term=self.term,
                                    granted=False, pre_vote=True))

    def _in_lease(self) -> bool:
        return (self.config.check_quorum and (self.leader is not None or self._restart_lease)
                and self._election_elapsed < self.config.election_ticks)

    # -- elections ----------------------------------------------------------------------

    def _on_vote(self, m: Vote) -> None:
        can_vote = not self.fence and (
            self.vote == m.sender
            or (self.vote is None and self.leader is None)
            or (m.pre_vote and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            # The answer carries the request's term: a pre-vote's is ahead of ours.
            self._send(VoteResponse(to=m.sender, sender=self.id, term=m.term, granted=True,
                                    pre_vote=m.pre_vote))
            if not m.pre_vote:
                self._election_elapsed = 0
                self.vote = m.sender
        else:
            self._send(VoteResponse(to=m.sender, sender=self.id, term=self.term, granted=False,
                                    pre_vote=m.pre_vote))

    def _hup(self, kind: Campaign) -> None:
        if self.role is Role.LEADER or not self._promotable():
            return
        pre_vote = kind is Campaign.PRE_VOTE
        if pre_vote:
            self._become_pre_candidate()
            term = self.term + 1  # asked about, not taken
        else:
            self._become_candidate()
            term = self.term
        for voter in self.config.voters:
            if voter == self.id:
                self._send(VoteResponse(to=self.id, sender=self.id, term=term, granted=True,
                                        pre_vote=pre_vote))
            else:
                self._send(Vote(to=voter, sender=self.id, term=term,
                                last_index=self.log.last_index(), last_term=self.log.last_term(),
                                pre_vote=pre_vote, transfer=kind is Campaign.TRANSFER))

    def _probe(self) -> None:
        """A fenced member's election timeout: it asks for pre-votes it will
        never act on (it stays a follower whatever the answers). They wake
        the peers of a group that quiesced while it was down, which then
        hear its higher term and elect a leader without it, and a refusal
        from a later term tells it that term."""
        for voter in self.config.voters:
            if voter != self.id:
                self._send(Vote(to=voter, sender=self.id, term=self.term + 1,
                                last_index=self.log.last_index(), last_term=self.log.last_term(),
                                pre_vote=True))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, (Append, Heartbeat, InstallSnapshot)):
            self._become_follower(m.term, m.sender)  # a leader won this term
            self._step_follower(m)
        elif isinstance(m, VoteResponse) and m.pre_vote == (self.role is Role.PRE_CANDIDATE):
            self._votes.setdefault(m.sender, m.granted)
            granted = sum(self._votes.values())
            rejected = len(self._votes) - granted
            if granted >= self.config.quorum:
                if self.role is Role.PRE_CANDIDATE:
                    self._hup(Campaign.ELECTION)
                else:
                    self._become_leader()
            elif rejected > len(self.config.voters) - self.config.quorum:
                self._become_follower(self.term, None)

    def _promotable(self) -> bool:
        return (self.id in self.config.voters and self.log.unstable_snapshot() is None
                and not self.fence)

    # -- roles -----------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self.leadership = None
        self._votes = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        # In [election_ticks, 2 * election_ticks): split votes do not repeat.
        self._election_timeout = self._rng.randrange(self.config.election_ticks,
                                                     2 * self.config.election_ticks)

    def _become_follower(self, term: int, leader: NodeId | None) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Neither the term nor the vote changes; nor the election timer.
        self.role = Role.PRE_CANDIDATE
        self.leader = None
        self.leadership = None
        self._votes = {}

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        self.leadership = Leadership(self.config, self.term, self.log, self._send,
                                     self.read_states.append)
        # The no-op: committing an entry of its own term is how a new leader
        # learns which entries are committed (the Raft thesis, 6.4).
        self.leadership.append(b"")

    # -- the leader -------------------------------------------------------------------------

    def _tick_leader(self) -> None:
        assert self.leadership is not None
        self.leadership.tick()
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks:
            self._election_elapsed = 0
            if self.config.check_quorum and not self.leadership.check_quorum():
                self._become_follower(self.term, None)  # CheckQuorum: no quorum heard
                return
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self.leadership.broadcast_heartbeat()

    def _step_leader(self, m: Message) -> None:
        assert self.leadership is not None
        if isinstance(m, AppendResponse):
            self.leadership.on_append_response(m)
        elif isinstance(m, HeartbeatResponse):
            self.leadership.on_heartbeat_response(m)
        elif isinstance(m, ReadIndex):
            self.leadership.read(m.context, m.sender)

    def after_persist(self, last_persisted: Entry | None, applied: list[Entry]) -> None:
        """The application persisted a Ready's entries (up to `last_persisted`)
        and applied its committed entries; then this node's own vote counts."""
        if self.leadership is not None:
            if last_persisted is not None:
                # Its own log counts towards the commit only once on stable
                # storage (the leader's appends left before: the thesis, 10.2.1).
                self.leadership.self_acknowledge(last_persisted.index)
            self.leadership.applied(applied)
        pending, self.self_messages = self.self_messages, []
        for m in pending:
            self.step(m)

    def flush(self) -> None:
        if self.leadership is not None:
            self.leadership.flush()

    def needs_flush(self) -> bool:
        return self.leadership is not None and self.leadership.needs_flush()

    # -- the follower ------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, (Append, Heartbeat, InstallSnapshot)):
            self._election_elapsed = 0
            self.leader = m.sender
            if isinstance(m, Append):
                self._on_append(m)
            elif isinstance(m, Heartbeat):
                self.log.commit_to(m.commit)
                self._send(HeartbeatResponse(to=m.sender, sender=self.id, term=self.term,
                                             round=m.round))
            else:
                self._on_snapshot(m)
            self._maybe_lift_fence()
        elif isinstance(m, TimeoutNow):
            self._hup(Campaign.TRANSFER)
        elif isinstance(m, ReadIndexResponse):
            self.read_states.append(ReadState(index=m.index, context=m.context))

    def _maybe_lift_fence(self) -> None:
        """A fenced member may vote again once it follows a leader elected
        without it (a term at or above the fence: it voted in none of those)
        and has caught up to an entry that leader committed in its own term:
        its log then holds every entry committed before, including any it
        acknowledged and forgot. It records its vote for that leader, so it
        never grants another in this term either."""
        if (self.fence and self.term >= self.fence and self.leader is not None
                and self.log.term(self.log.committed) == self.term):
            self.fence = 0
            self.vote = self.leader

    def _on_append(self, m: Append) -> None:
        if m.prev_index < self.log.committed:
            # Older than what is known committed (a duplicate or a late one).
            self._send(AppendResponse(to=m.sender, sender=self.id, term=self.term,
                                      index=self.log.committed))
            return
        last = self.log.try_append(m.prev_index, m.prev_term, m.entries, m.commit)
        if last is not None:
            self._send(AppendResponse(to=m.sender, sender=self.id, term=self.term, index=last))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.prev_index, self.log.last_index()), m.prev_term)
        self._send(AppendResponse(to=m.sender, sender=self.id, term=self.term,
                                  index=m.prev_index, rejected=True, hint_index=hint_index,
                                  hint_term=hint_term))

    def _on_snapshot(self, m: InstallSnapshot) -> None:
        snapshot = m.snapshot
        if snapshot.index <= self.log.committed:
            index = self.log.committed  # nothing new in it
        elif self.log.matches(snapshot.index, snapshot.term):
            self.log.commit_to(snapshot.index)  # the log has it all: fast-forward
            index = self.log.committed
        else:
            self.log.restore(snapshot)
            index = snapshot.index
        self._send(AppendResponse(to=m.sender, sender=self.id, term=self.term, index=index))

    # -- output ------------------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if m.to == self.id:
            self.self_messages.append(m)
        elif isinstance(m, AFTER_PERSIST):
            self.messages_after_persist.append(m)
        else:
            self.messages.append(m)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed,
                         fence=self.fence)
