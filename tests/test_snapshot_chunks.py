"""Snapshots larger than a message travel in pieces (`kvstore.leader.snapshot_chunks`):
split and put together again whole, and dropped whole when a piece is
missing, so the core never installs part of a partition."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvclient.pb import raft_pb2 as pb
from kvstore.leader import wire
from kvstore.leader.envelopes import Envelope, GroupMessage
from kvstore.leader.raft.messages import Heartbeat, InstallSnapshot, Snapshot
from kvstore.leader.snapshot_chunks import SnapshotAssembly, split
from tests.properties import properties

pytestmark = pytest.mark.timeout(60)


def envelope(*snapshots: tuple[int, bytes]) -> pb.RaftEnvelope:
    messages = [GroupMessage(group, InstallSnapshot(to="n2", sender="n1", term=3,
                                                    snapshot=Snapshot(40 + group, 3, data)))
                for group, data in snapshots]
    messages.append(GroupMessage(9, Heartbeat(to="n2", sender="n1", term=3, commit=1)))
    return wire.to_proto(Envelope("n1", "n2", messages=tuple(messages)))


def received(pieces: list[pb.RaftEnvelope], assembly: SnapshotAssembly) -> Envelope | None:
    whole = None
    for piece in pieces:
        out = assembly.take(piece)
        assert (out is None) == piece.HasField("snapshot_chunk")
        whole = out if out is not None else whole
    return None if whole is None else wire.from_proto(whole)


@properties(200)
@given(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=3),
       chunk=st.integers(1, 64), whole=st.integers(0, 100))
def test_snapshots_split_and_put_together_arrive_as_sent(sizes: list[int], chunk: int,
                                                         whole: int) -> None:
    snapshots = [(group, bytes([group + 1]) * size) for group, size in enumerate(sizes)]
    pieces = split(envelope(*snapshots), chunk_bytes=chunk, whole_bytes=whole)
    for piece in pieces[:-1]:
        assert piece.snapshot_chunk.ByteSize() <= chunk + 50  # a piece fits a message
    for m in pieces[-1].messages:  # what stays in the envelope was small enough to go whole
        assert len(m.install_snapshot.snapshot.data) <= max(chunk, whole)
    assembly = SnapshotAssembly()
    arrived = received(pieces, assembly)
    assert arrived == wire.from_proto(envelope(*snapshots))
    assert assembly.held_bytes() == 0


def test_a_snapshot_missing_a_piece_is_dropped_with_its_message_and_the_rest_goes_on() -> None:
    pieces = split(envelope((0, b"a" * 10), (1, b"b" * 10)), chunk_bytes=4, whole_bytes=4)
    assert len(pieces) == 3 + 3 + 1
    lost = pieces[:1] + pieces[2:]  # the second piece of group 0's snapshot
    arrived = received(lost, SnapshotAssembly())
    assert arrived is not None
    groups = [(m.group, type(m.message).__name__) for m in arrived.messages]
    assert groups == [(1, "InstallSnapshot"), (9, "Heartbeat")]
    assert arrived.messages[0].message.snapshot.data == b"b" * 10


def test_a_new_first_piece_replaces_an_older_partial_snapshot() -> None:
    assembly = SnapshotAssembly()
    old = split(envelope((0, b"o" * 9)), chunk_bytes=3, whole_bytes=3)
    new = split(envelope((0, b"n" * 9)), chunk_bytes=3, whole_bytes=3)
    assembly.take(old[0])
    arrived = received(new, assembly)
    assert arrived is not None and arrived.messages[0].message.snapshot.data == b"n" * 9


def test_small_snapshots_go_whole_as_before() -> None:
    pieces = split(envelope((0, b"x" * 100)), chunk_bytes=10, whole_bytes=1000)
    assert len(pieces) == 1 and not pieces[0].messages[0].install_snapshot.snapshot.chunked
