"""The causal context's wire form: the bytes clients hold and records store
never change, every vector survives the round trip, and anything the store
did not issue is refused as InvalidArgument."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvclient.pb import kv_pb2
from kvstore import causal_context
from kvstore.causality import versions
from kvstore.causality.versions import VersionVector
from kvstore.errors import InvalidArgument
from kvstore.leaderless.replica import state_record

# What VersionVector.to_bytes produced before the codec moved out of the
# causal core: contexts in clients' hands and versions on disk are these bytes.
PINNED = [
    ({}, "1001"),
    ({"n1": 1}, "0a060a026e3110011001"),
    ({"n2": 7, "n1": 3}, "0a060a026e3110030a060a026e3210071001"),
    ({"node-b": (1 << 64) - 1, "node-a": 1 << 40, "é": 300},
     "0a0f0a066e6f64652d61108080808080200a130a066e6f64652d6210ffffffffffffffffff01"
     "0a070a02c3a910ac021001"),
]

vectors = st.dictionaries(st.text(min_size=1, max_size=8), st.integers(1, (1 << 64) - 1),
                          max_size=8).map(VersionVector)


@pytest.mark.parametrize(("counters", "wire"), PINNED)
def test_a_vector_encodes_to_the_bytes_contexts_and_records_already_hold(
        counters: dict[str, int], wire: str) -> None:
    assert causal_context.encode(VersionVector(counters)).hex() == wire


@pytest.mark.parametrize(("counters", "wire"), PINNED)
def test_the_pinned_bytes_decode_to_their_vector(counters: dict[str, int], wire: str) -> None:
    assert causal_context.decode(bytes.fromhex(wire)) == VersionVector(counters)


@properties(200)
@given(vectors)
def test_every_vector_survives_the_round_trip(vector: VersionVector) -> None:
    assert causal_context.decode(causal_context.encode(vector)) == vector


@properties(100)
@given(vectors)
def test_the_encoding_does_not_depend_on_the_order_entries_were_added(
        vector: VersionVector) -> None:
    reversed_order = VersionVector(dict(reversed(list(vector.counters.items()))))
    assert causal_context.encode(reversed_order) == causal_context.encode(vector)


def test_the_empty_vector_is_not_empty_bytes_and_empty_bytes_are_a_blind_write() -> None:
    assert causal_context.encode(VersionVector()) != b""
    assert causal_context.decode(b"") == VersionVector()


def _context(*dots: tuple[str, int]) -> bytes:
    message = kv_pb2.CausalContext(
        issued=True, version_vector=[kv_pb2.Dot(node_id=n, counter=c) for n, c in dots])
    return message.SerializeToString()


@pytest.mark.parametrize(("data", "says"), [
    (b"\xff\xfe", "not a valid causal context"),
    (_context(("", 1)), "empty node id"),
    (_context(("n1", 0)), "zero counter"),
    (_context(("n1", 1), ("n1", 2)), "repeated"),
])
def test_bytes_the_store_did_not_issue_are_invalid_argument(data: bytes, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        causal_context.decode(data)


def test_a_stored_records_version_is_the_context_a_read_of_it_returns() -> None:
    state = versions.update(None, VersionVector(), "n1", b"v", False, 5)
    state = versions.update(state, VersionVector(), "n2", b"w", False, 6)
    assert state_record(state).version == causal_context.encode(versions.join(state))
