"""Causal versions of a key's value.

A version vector maps node ids to counters; one vector descends from another
when it is at least as large in every entry. Its wire form, the opaque
context clients pass back, is `kvstore.causal_context`'s (protobuf stays out
of this module).

A key's stored value is a `DVVSet` (dotted version vector set): its causal
history plus the concurrent siblings it has not seen overwritten. `update`
applies a client write, `sync` merges replicas, `lww_update`/`lww_sync` do
the same for last-write-wins clusters. Pure logic: no I/O, no protobuf, no
clock (timestamps are passed in).
"""

import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvstore.errors import DataLoss, FailedPrecondition


@dataclass(frozen=True)
class VersionVector:
    counters: Mapping[str, int] = field(default_factory=dict)

    def descends(self, other: "VersionVector") -> bool:
        """True when this vector has seen every event `other` has."""
        return all(self.counters.get(node, 0) >= n for node, n in other.counters.items())

    def merge(self, other: "VersionVector") -> "VersionVector":
        merged = dict(self.counters)
        for node, n in other.counters.items():
            if n > merged.get(node, 0):
                merged[node] = n
        return VersionVector(merged)

    def increment(self, node_id: str, floor: int = 0) -> "VersionVector":
        """`node_id`'s counter one higher, and at least `floor`."""
        bumped = dict(self.counters)
        bumped[node_id] = max(bumped.get(node_id, 0) + 1, floor)
        return VersionVector(bumped)


# ---------------------------------------------------------------------------
# Dotted version vector sets: a key's value(s) and their causal history.
#
# This is the DVVSet of Almeida et al., "Scalable and accurate causality
# tracking for eventually consistent stores" (as in Riak's dvvset), stored
# with explicit dots: `history` is a version vector of every event the set
# has seen, and each sibling carries the dot (node_id, counter) of the write
# that made it. A sibling is kept while no event the set has seen overwrote
# it. Riak's dvvset keeps a node's siblings as the newest counters of that
# node's entry and leaves their dots implicit; the explicit form holds the
# same information, is easier to read, and makes `sync` one rule (keep a
# sibling unless the other side has seen its dot and dropped it). Riak's
# anonymous values are not needed: every write here is coordinated by a node.
# ---------------------------------------------------------------------------

DEFAULT_MAX_SIBLINGS = 64


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """One write event: the `counter`-th write to a key coordinated by `node_id`."""

    node_id: str
    counter: int

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ValueError(f"a dot's node_id must be a non-empty string, got {self.node_id!r}")
        if not 1 <= self.counter < 1 << 64:
            raise ValueError(f"a dot's counter must be 1..2**64-1, got {self.counter}")


@dataclass(frozen=True, slots=True)
class Sibling:
    """One concurrent value of a key (or a delete marker, when `tombstone`)."""

    dot: Dot
    value: bytes
    tombstone: bool
    timestamp: int  # hybrid-logical-clock time of the write (see kvstore.causality.hlc)

    def __post_init__(self) -> None:
        if self.tombstone and self.value:
            raise ValueError("a tombstone carries no value")
        if not 0 <= self.timestamp < 1 << 64:
            raise ValueError(f"timestamp must fit in 64 bits, got {self.timestamp}")


@dataclass(frozen=True)
class DVVSet:
    """A key's causal history and the siblings nothing in it has overwritten.

    Invariant: every sibling's dot is in `history`, and no two share a dot.
    Siblings are kept in dot order, so equal sets compare and encode equal.
    """

    history: VersionVector = field(default_factory=VersionVector)
    siblings: tuple[Sibling, ...] = ()

    def __post_init__(self) -> None:
        # On every write's path: normalise and check without copying what is
        # already in canonical form.
        counters = self.history.counters
        if not all(n > 0 for n in counters.values()):
            if any(n < 0 for n in counters.values()):
                raise ValueError(f"history counters must be >= 0, got {dict(counters)}")
            # Zero entries say nothing; dropping them makes equal histories equal.
            counters = {node: n for node, n in counters.items() if n}
            object.__setattr__(self, "history", VersionVector(counters))
        siblings = tuple(self.siblings)
        if len(siblings) > 1:
            siblings = tuple(sorted(siblings, key=_dot_order))
            if len({s.dot for s in siblings}) != len(siblings):
                raise ValueError("two siblings share a dot")
        object.__setattr__(self, "siblings", siblings)
        for sibling in siblings:
            if counters.get(sibling.dot.node_id, 0) < sibling.dot.counter:
                raise ValueError(
                    f"sibling dot {sibling.dot} is not in the history {dict(counters)}")

    @property
    def live(self) -> list[Sibling]:
        """The siblings a read returns: every one that is not a tombstone."""
        return [s for s in self.siblings if not s.tombstone]

    @property
    def values(self) -> list[bytes]:
        """The values a read returns, in dot order."""
        return [s.value for s in self.live]

    @property
    def absent(self) -> bool:
        """True when the key reads as absent: no siblings, or only tombstones."""
        return not self.live

    @property
    def timestamp(self) -> int:
        """The newest sibling's timestamp; 0 for an empty set."""
        return max((s.timestamp for s in self.siblings), default=0)

    def to_bytes(self) -> bytes:
        return encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> "DVVSet":
        return decode(data)


def _dot_order(sibling: Sibling) -> Dot:
    return sibling.dot


def join(dvvset: DVVSet | None) -> VersionVector:
    """The causal context a read returns: every event the set has seen."""
    return dvvset.history if dvvset is not None else VersionVector()


def update(
    current: DVVSet | None,
    context: VersionVector,
    node_id: str,
    value: bytes,
    tombstone: bool,
    timestamp: int,
    *,
    max_siblings: int = DEFAULT_MAX_SIBLINGS,
    counter_floor: int = 0,
) -> DVVSet:
    """The set after the coordinator `node_id` writes `value` having read `context`.

    Siblings the context covers were seen by the writer and are replaced;
    the others are concurrent with this write and stay. The new sibling's dot
    is the next counter of `node_id`, at least `counter_floor`; `node_id`
    must be the node holding `current` (a coordinator writes through its own
    replica).

    Why a floor: once a key's tombstone is purged its history is gone, and
    counting again from 1 would reissue dots that contexts read before the
    delete still cover; a write with such a context would then replace the
    new value unseen. The storage node passes its hybrid logical clock, which
    exceeds every counter it issued earlier (the tombstone grace period
    bounds how far back its wall clock could step).

    The sibling cap is checked here, on client writes, and not in `sync`:
    the client that gets FailedPrecondition can read and resolve, whereas a
    replica that refused to merge could never converge (nor serve the read
    the client needs to resolve).
    """
    current = current if current is not None else DVVSet()
    kept = [s for s in current.siblings if not _covers(context, s.dot)]
    history = current.history.merge(context).increment(node_id, counter_floor)
    dot = Dot(node_id, history.counters[node_id])
    result = DVVSet(history, (*kept, Sibling(dot, value, tombstone, timestamp)))
    _check_cap(result, max_siblings)
    return result


def sync(a: DVVSet, b: DVVSet, *, max_siblings: int | None = None) -> DVVSet:
    """Merge two replicas' sets (read repair, anti-entropy, hand-off).

    Keeps each sibling unless the other side has seen its dot and dropped
    it. Commutative, associative and idempotent. Uncapped by default (see
    `update`); pass `max_siblings` to refuse a merge that would exceed it.
    """
    if a == b:  # the common case: replicas that agree
        if max_siblings is not None:
            _check_cap(a, max_siblings)
        return a
    merged: dict[Dot, Sibling] = {}
    for mine, theirs in ((a, b), (b, a)):
        their_dots = {s.dot for s in theirs.siblings}
        for sibling in mine.siblings:
            if sibling.dot in their_dots or not _covers(theirs.history, sibling.dot):
                # The same dot on both sides is the same write; pick one
                # deterministically so the merge stays commutative even if a
                # replica's copy differs.
                other = merged.get(sibling.dot)
                merged[sibling.dot] = sibling if other is None else max(other, sibling, key=_rank)
    result = DVVSet(a.history.merge(b.history), tuple(merged.values()))
    if max_siblings is not None:
        _check_cap(result, max_siblings)
    return result


def descends(a: DVVSet, b: DVVSet) -> bool:
    """True when `a` has seen every event `b` has (so `a` can replace `b`)."""
    return a.history.descends(b.history)


def equal(a: DVVSet, b: DVVSet) -> bool:
    """True when both have seen exactly the same events."""
    return descends(a, b) and descends(b, a)


def less(a: DVVSet, b: DVVSet) -> bool:
    """True when `b` has seen everything `a` has, and more."""
    return descends(b, a) and not descends(a, b)


def concurrent(a: DVVSet, b: DVVSet) -> bool:
    """True when each has seen an event the other has not."""
    return not descends(a, b) and not descends(b, a)


# Last-write-wins mode: the same histories, but a set keeps only the sibling
# with the highest timestamp, so concurrent writes never surface as siblings.


def lww_update(
    current: DVVSet | None, node_id: str, value: bytes, tombstone: bool, timestamp: int,
    *, counter_floor: int = 0,
) -> DVVSet:
    """The set after `node_id` writes `value`: the newest of it and what was
    there (`counter_floor` as in `update`)."""
    current = current if current is not None else DVVSet()
    history = current.history.increment(node_id, counter_floor)
    new = Sibling(Dot(node_id, history.counters[node_id]), value, tombstone, timestamp)
    return DVVSet(history, (max((*current.siblings, new), key=_rank),))


def lww_sync(a: DVVSet, b: DVVSet) -> DVVSet:
    """Merge two replicas' sets keeping the newest sibling of either."""
    siblings = (*a.siblings, *b.siblings)
    winner = (max(siblings, key=_rank),) if siblings else ()
    return DVVSet(a.history.merge(b.history), winner)


def _rank(sibling: Sibling) -> tuple[int, str, bytes, bool, int]:
    """Last-write-wins order: newest timestamp, then node id, then value (then
    the rest, so the order is total and every replica picks the same)."""
    s = sibling
    return (s.timestamp, s.dot.node_id, s.value, s.tombstone, s.dot.counter)


def _covers(history: VersionVector, dot: Dot) -> bool:
    return history.counters.get(dot.node_id, 0) >= dot.counter


def _check_cap(result: DVVSet, max_siblings: int) -> None:
    if max_siblings < 1:
        raise ValueError(f"max_siblings must be >= 1, got {max_siblings}")
    if len(result.siblings) > max_siblings:
        raise FailedPrecondition(
            f"key has {len(result.siblings)} siblings, the limit is {max_siblings}; "
            "read the key and write back a resolved value with its context"
        )


# The encoding of a set, big-endian:
#
#     format     u8   DVVSET_FORMAT
#     nodes      u16  number of entries in the history, then for each:
#       idlen    u16  length of the node id (UTF-8)
#       id
#       counter  u64
#     siblings   u32  number of siblings, then for each:
#       node     u16  index of the dot's node in the history above
#       counter  u64  the dot's counter
#       stamp    u64  hybrid-logical-clock timestamp
#       flags    u8   bit 0: tombstone
#       vlen     u32  length of the value
#       value
#     crc        u32  CRC-32 of everything above
#
# The CRC catches corruption that still parses; storage checksums its records
# too, but sets also travel between replicas inside larger messages.

DVVSET_FORMAT = 1
_FLAG_TOMBSTONE = 0x01
_U8, _U16, _U32, _U64 = (struct.Struct(f">{c}") for c in "BHIQ")
_SIBLING = struct.Struct(">HQQBI")


def encode(dvvset: DVVSet) -> bytes:
    """The compact binary form of `dvvset` (deterministic)."""
    entries = sorted(dvvset.history.counters.items())
    index = {node: i for i, (node, _) in enumerate(entries)}
    if len(entries) > 0xFFFF:
        raise ValueError(f"history has {len(entries)} nodes; at most 65535 can be encoded")
    out = [_U8.pack(DVVSET_FORMAT), _U16.pack(len(entries))]
    for node, counter in entries:
        raw = node.encode()
        if len(raw) > 0xFFFF:
            raise ValueError(f"node id of {len(raw)} bytes is too long to encode")
        out += [_U16.pack(len(raw)), raw, _U64.pack(counter)]
    out.append(_U32.pack(len(dvvset.siblings)))
    for s in dvvset.siblings:
        flags = _FLAG_TOMBSTONE if s.tombstone else 0
        out += [
            _SIBLING.pack(index[s.dot.node_id], s.dot.counter, s.timestamp, flags, len(s.value)),
            s.value,
        ]
    body = b"".join(out)
    encoded = body + _U32.pack(zlib.crc32(body))
    _remember(encoded, dvvset)
    return encoded


# Encodings up to this size are memoised: a read decodes the same bytes from
# each of the N replicas, a write decodes what the previous write encoded, and
# sets are immutable, so one decode (or the encode itself) serves them all.
_MEMO_MAX_BYTES = 1024
_MEMO_ENTRIES = 16384  # at most 16 MiB of encodings
_memo: "OrderedDict[bytes, DVVSet]" = OrderedDict()
_memo_lock = threading.Lock()  # the event loop and the commit thread share it


def _remember(data: bytes, dvvset: DVVSet) -> None:
    if len(data) <= _MEMO_MAX_BYTES:
        with _memo_lock:
            _memo[data] = dvvset
            if len(_memo) > _MEMO_ENTRIES:
                _memo.popitem(last=False)


def decode(data: bytes | memoryview) -> DVVSet:
    """The set `encode` made; DataLoss if `data` is not an intact encoding."""
    data = bytes(data)
    with _memo_lock:
        known = _memo.get(data)
        if known is not None:
            _memo.move_to_end(data)
    if known is not None:
        return known
    dvvset = _decode(data)
    _remember(data, dvvset)
    return dvvset


def _decode(data: bytes) -> DVVSet:
    if len(data) < _U32.size or zlib.crc32(data[:-4]) != _U32.unpack_from(data, len(data) - 4)[0]:
        raise DataLoss("stored version set failed its checksum; the copy is corrupt")
    try:
        return _parse(memoryview(data)[:-4])
    except (struct.error, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise DataLoss(f"stored version set is malformed ({exc}); the copy is corrupt") from exc


def _parse(body: memoryview) -> DVVSet:
    reader = _Reader(body)
    if reader.take(_U8) != DVVSET_FORMAT:
        raise ValueError("unknown format")
    counters: dict[str, int] = {}
    for _ in range(reader.take(_U16)):
        node = bytes(reader.bytes(reader.take(_U16))).decode()
        counter = reader.take(_U64)
        if not node or node in counters or counter < 1:
            raise ValueError("bad history entry")
        counters[node] = counter
    nodes = list(counters)
    siblings = []
    for _ in range(reader.take(_U32)):
        node_index, counter, timestamp, flags, vlen = reader.take_many(_SIBLING)
        if flags & ~_FLAG_TOMBSTONE:
            raise ValueError("unknown flags")
        value = bytes(reader.bytes(vlen))
        dot = Dot(nodes[node_index], counter)
        siblings.append(Sibling(dot, value, bool(flags & _FLAG_TOMBSTONE), timestamp))
    if reader.offset != len(body):
        raise ValueError("trailing bytes")
    return DVVSet(VersionVector(counters), tuple(siblings))


class _Reader:
    def __init__(self, data: memoryview) -> None:
        self.data, self.offset = data, 0

    def take_many(self, layout: struct.Struct) -> tuple[Any, ...]:
        fields = layout.unpack_from(self.data, self.offset)
        self.offset += layout.size
        return fields

    def take(self, layout: struct.Struct) -> int:
        return int(self.take_many(layout)[0])

    def bytes(self, length: int) -> memoryview:
        if self.offset + length > len(self.data):
            raise ValueError("truncated")
        chunk = self.data[self.offset : self.offset + length]
        self.offset += length
        return chunk
