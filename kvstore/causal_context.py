"""The wire form of a version vector: a serialized `kvstore.v1.CausalContext`.

Owns the only translation between `kvstore.causality.versions.VersionVector`
and those bytes. They are the opaque context a client gets from a read or a
write and passes back, and the version in every stored record's header
(`kvstore.storage.record`), so `encode` must give the same bytes for an equal
vector forever: contexts held by clients and records on disk depend on it.

It sits at the top of the package, beside `errors`, because both the rpc edge
(replies' contexts) and the leaderless replica (a record's version, the
context of a write it coordinates) need it: the causal core must not import
protobuf, and the replica, below the rpc edge, must not import `kvstore.rpc`.
Never does I/O.
"""

import functools

from google.protobuf.message import DecodeError

from kvclient.pb import kv_pb2
from kvstore.causality.versions import VersionVector
from kvstore.errors import InvalidArgument

_Entries = tuple[tuple[str, int], ...]


def encode(vector: VersionVector) -> bytes:
    """The serialized CausalContext of `vector` (deterministic: dots in node
    order, `issued` set so that even an empty vector is not empty bytes)."""
    return _encode_entries(tuple(sorted(vector.counters.items())))


# Memoised: one write serialises the same vector twice (the stored record's
# version and the reply's context), and serialising costs ~10 us.
@functools.lru_cache(maxsize=4096)
def _encode_entries(entries: _Entries) -> bytes:
    message = kv_pb2.CausalContext(
        issued=True,
        version_vector=[kv_pb2.Dot(node_id=node, counter=n) for node, n in entries],
    )
    return message.SerializeToString(deterministic=True)


def decode(data: bytes) -> VersionVector:
    """Parse a context; InvalidArgument if the bytes are not one we issued.
    Empty bytes (a blind write) are the empty vector."""
    if not data:
        return VersionVector()
    message = kv_pb2.CausalContext()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidArgument(
            "context is not a valid causal context; pass back the context "
            "returned by get/put unchanged, or none for a blind write"
        ) from exc
    counters: dict[str, int] = {}
    for dot in message.version_vector:
        if not dot.node_id or dot.counter == 0 or dot.node_id in counters:
            raise InvalidArgument(
                "context is malformed (empty node id, zero counter or a repeated "
                "node); pass back the context returned by get/put unchanged"
            )
        counters[dot.node_id] = dot.counter
    return VersionVector(counters)
