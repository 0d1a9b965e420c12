"""Which queued items make one message (bounded in count and bytes, an item
over the bound alone), and the message's bytes, joined from items each
serialized once, are what protobuf itself would serialize."""

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvclient.pb import replica_pb2
from kvstore.rpc.batches import batch_is_full, encode_batch, framed_size, take_batch
from tests.properties import properties

pytestmark = pytest.mark.timeout(30)


def _size(item: tuple[int, int, bool]) -> int:
    return item[1]


def _live(item: tuple[int, int, bool]) -> bool:
    return item[2]


# (identity, size, live)
items = st.lists(st.tuples(st.integers(), st.integers(1, 5000), st.booleans()), max_size=60)


@properties(300)
@given(items, st.integers(1, 20), st.integers(1, 4000))
def test_a_batch_is_within_its_bounds_unless_one_item_alone_is_larger(
        queued: list[tuple[int, int, bool]], max_count: int, max_bytes: int) -> None:
    queue = deque(queued)
    batches = []
    while batch := take_batch(queue, max_count, max_bytes, _size, _live):
        batches.append(batch)
    assert not queue  # every item was taken or dropped
    for batch in batches:
        assert 1 <= len(batch) <= max_count
        assert sum(_size(item) for item in batch) <= max_bytes or len(batch) == 1
    # Live items go out in order, each once, and only they do.
    assert [item for batch in batches for item in batch] == [item for item in queued if item[2]]


@properties(300)
@given(items, st.integers(1, 20), st.integers(1, 4000))
def test_a_batch_stops_only_at_a_bound(queued: list[tuple[int, int, bool]], max_count: int,
                                       max_bytes: int) -> None:
    queue = deque(queued)
    batch = take_batch(queue, max_count, max_bytes, _size, _live)
    following = next((item for item in queue if item[2]), None)
    if following is not None:  # it did not fit
        assert len(batch) == max_count or sum(map(_size, batch)) + _size(following) > max_bytes


def test_an_item_larger_than_the_bound_goes_alone_and_does_not_hold_up_the_rest() -> None:
    queue = deque([(1, 10, True), (2, 5000, True), (3, 10, True), (4, 10, True)])
    taken = [take_batch(queue, 10, 100, _size, _live) for _ in range(3)]
    assert [[item[0] for item in batch] for batch in taken] == [[1], [2], [3, 4]]


ops = st.lists(st.builds(
    lambda key, value, op_id: replica_pb2.ReplicaOp(
        id=op_id, merge=replica_pb2.ReplicaMerge(key=key, state=value)),
    st.binary(min_size=1, max_size=40), st.binary(max_size=300), st.integers(0, 2**64 - 1)),
    max_size=20)


@properties(200)
@given(ops)
def test_a_batch_joined_from_serialized_ops_is_the_message_protobuf_would_send(
        batch: list[replica_pb2.ReplicaOp]) -> None:
    encoded = [op.SerializeToString() for op in batch]
    joined = encode_batch(encoded)
    assert joined == replica_pb2.ReplicaBatchRequest(ops=batch).SerializeToString()
    assert replica_pb2.ReplicaBatchRequest.FromString(joined).ops == batch
    assert len(joined) == sum(framed_size(item) for item in encoded)


def test_sizes_count_the_length_prefix_of_large_items() -> None:
    big = replica_pb2.ReplicaResult(state=b"v" * 1_048_576).SerializeToString()
    message = encode_batch([big, b""])
    assert len(message) == framed_size(big) + framed_size(b"") == len(big) + 1 + 3 + 2
    assert replica_pb2.ReplicaBatchResponse.FromString(message).results[0].state == b"v" * 1_048_576


@properties(300)
@given(items, st.integers(1, 20), st.integers(1, 4000))
def test_a_batch_is_full_when_taking_it_stops_at_a_bound_not_at_the_end(
        queued: list[tuple[int, int, bool]], max_count: int, max_bytes: int) -> None:
    full = batch_is_full(deque(queued), max_count, max_bytes, _size, _live)
    queue = deque(queued)
    batch = take_batch(queue, max_count, max_bytes, _size, _live)
    left_live = [item for item in queue if item[2]]
    if not full:  # everything live went, within both bounds
        assert not left_live and len(batch) < max_count
        assert sum(map(_size, batch)) < max_bytes
    else:  # at a bound: the count, the bytes, or an item that did not fit
        assert (left_live or len(batch) == max_count
                or sum(map(_size, batch)) >= max_bytes)
