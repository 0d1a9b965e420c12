"""The wire form of an `Envelope`: `kvstore.v1.RaftEnvelope` (proto/kvclient/pb/raft.proto),
for the peer-pair stream.

`to_proto`/`from_proto` translate between the host's envelope (core
messages, coalesced heartbeats, quiesce notices) and the protobuf message;
`encode`/`decode` add the bytes. The sender and receiver are carried once
per envelope and restored into every message. Decoding refuses, with a
message that names the sender, an envelope in a format this node does not
know (`UnsupportedFormat`), one without a sender or receiver, a group
outside 0..65535 and a message without a body (`InvalidArgument`); it
never hands the core a half-read message.
"""

from google.protobuf.message import DecodeError

from kvclient.pb import raft_pb2 as pb
from kvstore.errors import InvalidArgument
from kvstore.leader import data_format
from kvstore.leader.envelopes import (
    Envelope, GroupHeartbeat, GroupHeartbeatResponse, GroupMessage, QuiesceNotice,
)
from kvstore.leader.raft.messages import (
    Append, AppendResponse, Entry, Heartbeat, HeartbeatResponse, InstallSnapshot, Message,
    NodeId, ReadIndex, ReadIndexResponse, Snapshot, TimeoutNow, Vote, VoteResponse,
)

MAX_GROUP = 0xFFFF


def encode(envelope: Envelope) -> bytes:
    return to_proto(envelope).SerializeToString()


def decode(data: bytes) -> Envelope:
    envelope = pb.RaftEnvelope()
    try:
        envelope.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(f"a Raft envelope of {len(data)} bytes does not parse: "
                              f"{exc}") from None
    return from_proto(envelope)


def to_proto(envelope: Envelope) -> pb.RaftEnvelope:
    return pb.RaftEnvelope(
        format=data_format.FORMAT, sender=envelope.sender, to=envelope.to,
        messages=[_message_to_proto(m) for m in envelope.messages],
        heartbeats=[pb.RaftGroupHeartbeat(group=h.group, term=h.term, commit=h.commit,
                                          round=h.round) for h in envelope.heartbeats],
        heartbeat_responses=[pb.RaftGroupHeartbeatResponse(group=r.group, term=r.term,
                                                           round=r.round)
                             for r in envelope.heartbeat_responses],
        quiesce=[pb.RaftQuiesce(group=q.group, term=q.term, commit=q.commit)
                 for q in envelope.quiesce])


def from_proto(envelope: pb.RaftEnvelope) -> Envelope:
    sender, to = envelope.sender, envelope.to
    if not sender or not to:
        raise InvalidArgument("a Raft envelope names no sender or no receiver")
    data_format.check(f"a Raft envelope from {sender}", envelope.format)
    return Envelope(
        sender, to,
        messages=tuple(GroupMessage(_group(m.group, sender), _message_from_proto(m, sender, to))
                       for m in envelope.messages),
        heartbeats=tuple(GroupHeartbeat(_group(h.group, sender), h.term, h.commit, h.round)
                         for h in envelope.heartbeats),
        heartbeat_responses=tuple(GroupHeartbeatResponse(_group(r.group, sender), r.term,
                                                         r.round)
                                  for r in envelope.heartbeat_responses),
        quiesce=tuple(QuiesceNotice(_group(q.group, sender), q.term, q.commit)
                      for q in envelope.quiesce))


def _group(group: int, sender: NodeId) -> int:
    if group > MAX_GROUP:
        raise InvalidArgument(f"a Raft envelope from {sender} names partition {group}; "
                              f"partitions are 0..{MAX_GROUP}")
    return group


def _entries(entries: tuple[Entry, ...]) -> list[pb.RaftEntry]:
    return [pb.RaftEntry(index=e.index, term=e.term, data=e.data) for e in entries]


def _message_to_proto(grouped: GroupMessage) -> pb.RaftMessage:
    m = grouped.message
    out = pb.RaftMessage(group=grouped.group, term=m.term)
    if isinstance(m, Vote):
        out.vote.CopyFrom(pb.RaftVote(last_index=m.last_index, last_term=m.last_term,
                                      pre_vote=m.pre_vote, transfer=m.transfer))
    elif isinstance(m, VoteResponse):
        out.vote_response.CopyFrom(pb.RaftVoteResponse(granted=m.granted, pre_vote=m.pre_vote))
    elif isinstance(m, Append):
        out.append.CopyFrom(pb.RaftAppend(prev_index=m.prev_index, prev_term=m.prev_term,
                                          entries=_entries(m.entries), commit=m.commit))
    elif isinstance(m, AppendResponse):
        out.append_response.CopyFrom(pb.RaftAppendResponse(
            index=m.index, rejected=m.rejected, hint_index=m.hint_index, hint_term=m.hint_term))
    elif isinstance(m, Heartbeat):
        out.heartbeat.CopyFrom(pb.RaftHeartbeat(commit=m.commit, round=m.round))
    elif isinstance(m, HeartbeatResponse):
        out.heartbeat_response.CopyFrom(pb.RaftHeartbeatResponse(round=m.round))
    elif isinstance(m, InstallSnapshot):
        s = m.snapshot
        out.install_snapshot.CopyFrom(pb.RaftInstallSnapshot(
            snapshot=pb.RaftSnapshot(index=s.index, term=s.term, data=s.data)))
    elif isinstance(m, TimeoutNow):
        out.timeout_now.SetInParent()
    elif isinstance(m, ReadIndex):
        out.read_index.CopyFrom(pb.RaftReadIndex(context=m.context))
    else:
        out.read_index_response.CopyFrom(pb.RaftReadIndexResponse(context=m.context,
                                                                  index=m.index))
    return out


def _message_from_proto(m: pb.RaftMessage, sender: NodeId, to: NodeId) -> Message:
    term = m.term
    body = m.WhichOneof("body")
    if body == "vote":
        return Vote(to=to, sender=sender, term=term, last_index=m.vote.last_index,
                    last_term=m.vote.last_term, pre_vote=m.vote.pre_vote,
                    transfer=m.vote.transfer)
    if body == "vote_response":
        return VoteResponse(to=to, sender=sender, term=term, granted=m.vote_response.granted,
                            pre_vote=m.vote_response.pre_vote)
    if body == "append":
        return _append(m, sender, to)
    if body == "append_response":
        answer = m.append_response
        return AppendResponse(to=to, sender=sender, term=term, index=answer.index,
                              rejected=answer.rejected, hint_index=answer.hint_index,
                              hint_term=answer.hint_term)
    if body == "heartbeat":
        return Heartbeat(to=to, sender=sender, term=term, commit=m.heartbeat.commit,
                         round=m.heartbeat.round)
    if body == "heartbeat_response":
        return HeartbeatResponse(to=to, sender=sender, term=term,
                                 round=m.heartbeat_response.round)
    if body == "install_snapshot":
        s = m.install_snapshot.snapshot
        return InstallSnapshot(to=to, sender=sender, term=term,
                               snapshot=Snapshot(s.index, s.term, s.data))
    if body == "timeout_now":
        return TimeoutNow(to=to, sender=sender, term=term)
    if body == "read_index":
        return ReadIndex(to=to, sender=sender, term=term, context=m.read_index.context)
    if body == "read_index_response":
        return ReadIndexResponse(to=to, sender=sender, term=term,
                                 context=m.read_index_response.context,
                                 index=m.read_index_response.index)
    raise InvalidArgument(f"a Raft message from {sender} for partition {m.group} has no body "
                          "(a newer kvstore's message kind?)")


def _append(m: pb.RaftMessage, sender: NodeId, to: NodeId) -> Append:
    append = m.append
    entries = tuple(Entry(e.index, e.term, e.data) for e in append.entries)
    if any(e.index != append.prev_index + 1 + n for n, e in enumerate(entries)):
        raise InvalidArgument(f"an append from {sender} for partition {m.group} carries "
                              f"entries that do not follow {append.prev_index} one by one")
    return Append(to=to, sender=sender, term=m.term, prev_index=append.prev_index,
                  prev_term=append.prev_term, entries=entries, commit=append.commit)
