"""What one node sends another in one pass: an `Envelope` with the Raft
messages of all their groups, heartbeats coalesced, and quiesce notices.

A node pair exchanges one envelope per pass at the most, whatever the
number of groups they share, and at least one per tick (an empty one is
the pair's liveness beat: the host wakes the groups a silent peer leads).
Heartbeats, the bulk of an idle cluster's traffic, travel as one small
entry per group with the sender, receiver and message kind said once for
the envelope (CockroachDB's coalesced heartbeats); quiesced groups send
none at all.

`Outbox` collects a pass's messages into envelopes; `unpack` turns an
envelope back into the core's messages, in the order to step them: the
messages as sent, then the heartbeats, then their answers (Raft does not
depend on the order between them), then the quiesce notices, which the
host handles after everything else the envelope carried.

Pure: no I/O, no protobuf (the wire form is `wire`'s).
"""

from dataclasses import dataclass

from kvstore.leader.raft.messages import Heartbeat, HeartbeatResponse, Message, NodeId


@dataclass(frozen=True, slots=True)
class GroupMessage:
    group: int
    message: Message  # from the envelope's sender to its receiver


@dataclass(frozen=True, slots=True)
class GroupHeartbeat:
    group: int
    term: int
    commit: int
    round: int


@dataclass(frozen=True, slots=True)
class GroupHeartbeatResponse:
    group: int
    term: int
    round: int


@dataclass(frozen=True, slots=True)
class QuiesceNotice:
    """The sender leads `group` in `term` and stops ticking it: its log
    ends at `commit`, all committed and applied, every follower has it."""

    group: int
    term: int
    commit: int


@dataclass(frozen=True)
class Envelope:
    sender: NodeId
    to: NodeId
    messages: tuple[GroupMessage, ...] = ()
    heartbeats: tuple[GroupHeartbeat, ...] = ()
    heartbeat_responses: tuple[GroupHeartbeatResponse, ...] = ()
    quiesce: tuple[QuiesceNotice, ...] = ()

    def is_empty(self) -> bool:
        return not (self.messages or self.heartbeats or self.heartbeat_responses or self.quiesce)


class _Draft:
    def __init__(self) -> None:
        self.messages: list[GroupMessage] = []
        self.heartbeats: list[GroupHeartbeat] = []
        self.responses: list[GroupHeartbeatResponse] = []
        self.quiesce: list[QuiesceNotice] = []


class Outbox:
    """The envelopes of one pass, one per peer that gets anything."""

    def __init__(self, sender: NodeId) -> None:
        self._sender = sender
        self._drafts: dict[NodeId, _Draft] = {}

    def _draft(self, to: NodeId) -> _Draft:
        if to == self._sender:
            raise ValueError(f"{self._sender} would send itself an envelope")
        return self._drafts.setdefault(to, _Draft())

    def add(self, group: int, message: Message) -> None:
        draft = self._draft(message.to)
        if isinstance(message, Heartbeat):
            draft.heartbeats.append(GroupHeartbeat(group, message.term, message.commit,
                                                   message.round))
        elif isinstance(message, HeartbeatResponse):
            draft.responses.append(GroupHeartbeatResponse(group, message.term, message.round))
        else:
            draft.messages.append(GroupMessage(group, message))

    def add_quiesce(self, to: NodeId, notice: QuiesceNotice) -> None:
        self._draft(to).quiesce.append(notice)

    def beat(self, peers: set[NodeId]) -> None:
        """An envelope (empty if nothing else) to each of `peers`."""
        for peer in peers:
            self._draft(peer)

    def peers(self) -> set[NodeId]:
        return set(self._drafts)

    def envelopes(self) -> list[Envelope]:
        return [Envelope(self._sender, to, tuple(d.messages), tuple(d.heartbeats),
                         tuple(d.responses), tuple(d.quiesce))
                for to, d in sorted(self._drafts.items())]


def unpack(envelope: Envelope) -> list[tuple[int, Message]]:
    """The envelope's Raft messages as the core takes them, in stepping order
    (quiesce notices are not Raft messages: the host reads them itself)."""
    sender, to = envelope.sender, envelope.to
    unpacked = [(m.group, m.message) for m in envelope.messages]
    unpacked += [(h.group, Heartbeat(to=to, sender=sender, term=h.term, commit=h.commit,
                                     round=h.round)) for h in envelope.heartbeats]
    unpacked += [(r.group, HeartbeatResponse(to=to, sender=sender, term=r.term, round=r.round))
                 for r in envelope.heartbeat_responses]
    return unpacked
