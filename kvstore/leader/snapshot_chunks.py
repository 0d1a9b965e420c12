"""Snapshots larger than one message, in pieces on the peer-pair stream.

A partition's snapshot (its whole state, `images`) travels in an
InstallSnapshot message, and a gRPC message has a size limit (4 MiB by
default). `split` sends each snapshot larger than `WHOLE_BYTES` ahead of
its envelope, in envelopes of one `RaftSnapshotChunk` each, and leaves the
message in its envelope marked `chunked`, with no data. On the receiving
side `SnapshotAssembly` keeps the chunks of each sender's snapshot of each
group, in order, and fills a chunked message's data in when every byte
arrived; a snapshot with a piece missing (a stream broken mid-way, a chunk
out of order) is dropped whole, and the message with it: the leader sends
the snapshot again once its retry interval has passed, as for a snapshot
lost in transit. The Raft core never sees a piece.

Chunks ride the same ordered stream as their envelope, so they arrive
first. At most one snapshot per (sender, group) is held while it arrives:
a new first piece replaces an older partial one.
"""

from dataclasses import dataclass, field

from kvclient.pb import raft_pb2 as pb

CHUNK_BYTES = 1 << 20  # well under gRPC's 4 MiB default, beside the envelope's other bytes
# Snapshots up to this size still go whole, as before pieces existed, so a
# node of an older kvstore (which cannot put pieces together) still takes
# every snapshot it could take before; only larger ones, which never fitted
# a message, go in pieces.
WHOLE_BYTES = 3 << 20


def split(envelope: pb.RaftEnvelope, chunk_bytes: int = CHUNK_BYTES,
          whole_bytes: int = WHOLE_BYTES) -> list[pb.RaftEnvelope]:
    """The envelopes to send for `envelope`: the pieces of its snapshots
    larger than `whole_bytes`, then itself (their data moved out)."""
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    pieces: list[pb.RaftEnvelope] = []
    for m in envelope.messages:
        if m.WhichOneof("body") != "install_snapshot":
            continue
        snapshot = m.install_snapshot.snapshot
        data = snapshot.data
        if len(data) <= max(whole_bytes, chunk_bytes):
            continue
        for offset in range(0, len(data), chunk_bytes):
            pieces.append(pb.RaftEnvelope(
                format=envelope.format, sender=envelope.sender, to=envelope.to,
                snapshot_chunk=pb.RaftSnapshotChunk(
                    group=m.group, index=snapshot.index, term=snapshot.term, offset=offset,
                    total_bytes=len(data), data=data[offset:offset + chunk_bytes])))
        snapshot.data = b""
        snapshot.chunked = True
    return [*pieces, envelope]


@dataclass
class _Partial:
    index: int
    term: int
    total: int
    pieces: list[bytes] = field(default_factory=list)
    received: int = 0


class SnapshotAssembly:
    def __init__(self) -> None:
        self._partial: dict[tuple[str, int], _Partial] = {}

    def take(self, envelope: pb.RaftEnvelope) -> pb.RaftEnvelope | None:
        """None for a piece (kept); else `envelope`, each chunked snapshot's
        data filled in, or its message dropped when a piece is missing."""
        if envelope.HasField("snapshot_chunk"):
            self._keep(envelope.sender, envelope.snapshot_chunk)
            return None
        if not any(m.WhichOneof("body") == "install_snapshot"
                   and m.install_snapshot.snapshot.chunked for m in envelope.messages):
            return envelope
        kept = []
        for m in envelope.messages:
            if m.WhichOneof("body") == "install_snapshot" and m.install_snapshot.snapshot.chunked:
                snapshot = m.install_snapshot.snapshot
                whole = self._partial.pop((envelope.sender, m.group), None)
                if (whole is None or (whole.index, whole.term) != (snapshot.index, snapshot.term)
                        or whole.received != whole.total):
                    continue  # incomplete: the leader sends it again
                snapshot.data = b"".join(whole.pieces)
                snapshot.chunked = False
            kept.append(m)
        del envelope.messages[:]
        envelope.messages.extend(kept)
        return envelope

    def _keep(self, sender: str, chunk: pb.RaftSnapshotChunk) -> None:
        key = (sender, chunk.group)
        if chunk.offset == 0:
            self._partial[key] = _Partial(chunk.index, chunk.term, chunk.total_bytes)
        partial = self._partial.get(key)
        if partial is None:
            return
        if ((chunk.index, chunk.term, chunk.total_bytes) != (partial.index, partial.term,
                                                              partial.total)
                or chunk.offset != partial.received
                or partial.received + len(chunk.data) > partial.total):
            del self._partial[key]  # a piece went missing: drop the whole snapshot
            return
        partial.pieces.append(chunk.data)
        partial.received += len(chunk.data)

    def held_bytes(self) -> int:
        """Bytes of snapshots still arriving."""
        return sum(p.received for p in self._partial.values())
