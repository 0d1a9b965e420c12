"""Raft messages between nodes: envelopes (`kvstore.leader.envelopes`: one
per peer per pass, heartbeats coalesced) and their protobuf wire form
(`kvstore.leader.wire`): every message kind round-trips, and bad bytes get a
clear error, never a half-read message."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvclient.pb import raft_pb2
from kvstore.errors import InvalidArgument
from kvstore.leader import wire
from kvstore.leader.data_format import FORMAT, UnsupportedFormat
from kvstore.leader.envelopes import (
    Envelope, GroupHeartbeat, GroupMessage, Outbox, QuiesceNotice, unpack,
)
from kvstore.leader.raft.messages import (
    Append, AppendResponse, Entry, Heartbeat, HeartbeatResponse, InstallSnapshot, Message,
    ReadIndex, ReadIndexResponse, Snapshot, TimeoutNow, Vote, VoteResponse,
)
from tests.properties import properties

pytestmark = pytest.mark.timeout(60)

SENDER, TO = "n1", "n2"
u64 = st.integers(0, (1 << 64) - 1)
groups = st.integers(0, wire.MAX_GROUP)


def head(**fields: object) -> dict[str, object]:
    return {"to": st.just(TO), "sender": st.just(SENDER), "term": u64, **fields}


@st.composite
def appends(draw: st.DrawFn) -> Append:
    prev = draw(st.integers(0, 1 << 40))
    entries = tuple(Entry(prev + 1 + n, draw(u64), draw(st.binary(max_size=20)))
                    for n in range(draw(st.integers(0, 4))))
    return Append(to=TO, sender=SENDER, term=draw(u64), prev_index=prev, prev_term=draw(u64),
                  entries=entries, commit=draw(u64))


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Vote, **head(last_index=u64, last_term=u64, pre_vote=st.booleans(),
                           transfer=st.booleans())),
    st.builds(VoteResponse, **head(granted=st.booleans(), pre_vote=st.booleans())),
    appends(),
    st.builds(AppendResponse, **head(index=u64, rejected=st.booleans(), hint_index=u64,
                                     hint_term=u64)),
    st.builds(Heartbeat, **head(commit=u64, round=u64)),
    st.builds(HeartbeatResponse, **head(round=u64)),
    st.builds(InstallSnapshot, **head(snapshot=st.builds(Snapshot, u64, u64,
                                                         st.binary(max_size=50)))),
    st.builds(TimeoutNow, **head()),
    st.builds(ReadIndex, **head(context=st.binary(max_size=20))),
    st.builds(ReadIndexResponse, **head(context=st.binary(max_size=20), index=u64)),
)

envelopes = st.builds(
    Envelope, st.just(SENDER), st.just(TO),
    st.lists(st.builds(GroupMessage, groups, messages), max_size=6).map(tuple),
    st.lists(st.builds(GroupHeartbeat, groups, u64, u64, u64), max_size=4).map(tuple),
    st.lists(st.builds(wire.GroupHeartbeatResponse, groups, u64, u64), max_size=4).map(tuple),
    st.lists(st.builds(QuiesceNotice, groups, u64, u64), max_size=4).map(tuple))


@properties(300)
@given(envelopes)
def test_every_envelope_round_trips_through_its_wire_form(envelope: Envelope) -> None:
    assert wire.decode(wire.encode(envelope)) == envelope


def test_each_message_kind_has_its_own_body() -> None:
    bodies = raft_pb2.RaftMessage.DESCRIPTOR.oneofs_by_name["body"].fields
    kinds = {field.message_type.name for field in bodies}
    assert len(kinds) == len(bodies) == len(Message.__args__)  # type: ignore[attr-defined]


@properties(300)
@given(st.binary(max_size=80))
def test_any_bytes_decode_to_an_envelope_or_a_clear_error(data: bytes) -> None:
    try:
        wire.decode(data)
    except (InvalidArgument, UnsupportedFormat) as exc:
        assert str(exc)


def test_an_envelope_in_an_unknown_format_is_refused_naming_the_sender() -> None:
    data = raft_pb2.RaftEnvelope(format=FORMAT + 1, sender="n7", to="n1").SerializeToString()
    with pytest.raises(UnsupportedFormat, match=f"envelope from n7 is in format {FORMAT + 1}"):
        wire.decode(data)


def test_malformed_envelopes_are_refused_with_a_reason() -> None:
    def refused(envelope: raft_pb2.RaftEnvelope) -> str:
        with pytest.raises(InvalidArgument) as caught:
            wire.decode(envelope.SerializeToString())
        return str(caught.value)

    base = {"format": FORMAT, "sender": "n1", "to": "n2"}
    assert "no sender" in refused(raft_pb2.RaftEnvelope(format=FORMAT, to="n2"))
    assert "partition 70000" in refused(raft_pb2.RaftEnvelope(
        **base, quiesce=[raft_pb2.RaftQuiesce(group=70000)]))
    assert "no body" in refused(raft_pb2.RaftEnvelope(
        **base, messages=[raft_pb2.RaftMessage(group=1, term=2)]))
    gap = raft_pb2.RaftAppend(prev_index=4, entries=[raft_pb2.RaftEntry(index=6, term=1)])
    assert "do not follow 4" in refused(raft_pb2.RaftEnvelope(
        **base, messages=[raft_pb2.RaftMessage(group=1, term=2, append=gap)]))
    with pytest.raises(InvalidArgument, match="does not parse"):
        wire.decode(b"\xff\xff\xff")


# -- the outbox -----------------------------------------------------------------------------------


def test_heartbeats_of_all_groups_to_a_peer_travel_as_one_envelope() -> None:
    outbox = Outbox("n1")
    for group in range(100):
        for peer in ("n2", "n3"):
            outbox.add(group, Heartbeat(to=peer, sender="n1", term=3, commit=group, round=7))
    outbox.add(5, Append(to="n2", sender="n1", term=3, prev_index=1, prev_term=1))
    sent = outbox.envelopes()
    assert [(e.to, len(e.heartbeats), len(e.messages)) for e in sent] == [
        ("n2", 100, 1), ("n3", 100, 0)]
    assert len(wire.encode(sent[1])) < 100 * 12  # a few bytes a group, no per-message header


def test_unpacking_gives_the_core_its_messages_back_in_stepping_order() -> None:
    outbox = Outbox("n1")
    append = Append(to="n2", sender="n1", term=3, prev_index=1, prev_term=1)
    outbox.add(9, HeartbeatResponse(to="n2", sender="n1", term=3, round=4))
    outbox.add(8, Heartbeat(to="n2", sender="n1", term=3, commit=2, round=5))
    outbox.add(7, append)
    outbox.add_quiesce("n2", QuiesceNotice(6, 3, 10))
    (envelope,) = outbox.envelopes()
    assert unpack(envelope) == [
        (7, append), (8, Heartbeat(to="n2", sender="n1", term=3, commit=2, round=5)),
        (9, HeartbeatResponse(to="n2", sender="n1", term=3, round=4))]
    assert envelope.quiesce == (QuiesceNotice(6, 3, 10),)


def test_a_beat_makes_an_envelope_for_a_peer_with_nothing_else() -> None:
    outbox = Outbox("n1")
    outbox.add(1, TimeoutNow(to="n2", sender="n1", term=1))
    outbox.beat({"n2", "n3"})
    sent = outbox.envelopes()
    assert [(e.to, e.is_empty()) for e in sent] == [("n2", False), ("n3", True)]
    with pytest.raises(ValueError, match="itself"):
        outbox.beat({"n1"})
