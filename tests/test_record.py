"""The record encoding: what goes in comes out, and damage is never data."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import DataLoss
from kvstore.storage.record import HEADER_BYTES, Record, decode, encode

keys = st.binary(max_size=64)
records = st.builds(
    Record,
    version=st.binary(max_size=300),
    timestamp=st.integers(min_value=0, max_value=2**64 - 1),
    tombstone=st.booleans(),
    value=st.binary(max_size=600),
)


@given(keys, records)
def test_decoding_an_encoded_record_returns_it(key: bytes, record: Record) -> None:
    assert decode(key, encode(key, record)) == record


@given(keys, records)
def test_decode_accepts_a_memoryview(key: bytes, record: Record) -> None:
    assert decode(key, memoryview(encode(key, record))) == record


@given(keys, records, st.data())
def test_any_flipped_bit_is_data_loss(key: bytes, record: Record, data: st.DataObject) -> None:
    damaged = bytearray(encode(key, record))
    bit = data.draw(st.integers(min_value=0, max_value=len(damaged) * 8 - 1))
    damaged[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DataLoss):
        decode(key, bytes(damaged))


@given(keys, records, st.data())
def test_any_replaced_byte_is_data_loss(key: bytes, record: Record, data: st.DataObject) -> None:
    damaged = bytearray(encode(key, record))
    index = data.draw(st.integers(min_value=0, max_value=len(damaged) - 1))
    damaged[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    with pytest.raises(DataLoss):
        decode(key, bytes(damaged))


@given(keys, records, st.data())
def test_any_truncation_is_data_loss(key: bytes, record: Record, data: st.DataObject) -> None:
    encoded = encode(key, record)
    length = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(DataLoss):
        decode(key, encoded[:length])


@given(keys, keys, records)
def test_a_record_under_the_wrong_key_is_data_loss(key: bytes, other: bytes,
                                                   record: Record) -> None:
    if other == key:
        other = key + b"\x00"
    with pytest.raises(DataLoss):
        decode(other, encode(key, record))


@given(keys, st.binary(max_size=HEADER_BYTES + 64))
def test_arbitrary_bytes_decode_or_raise_data_loss_only(key: bytes, garbage: bytes) -> None:
    try:
        decode(key, garbage)
    except DataLoss:
        pass


def test_a_version_too_large_to_store_is_refused() -> None:
    with pytest.raises(ValueError):
        encode(b"k", Record(version=b"v" * 0x10000, timestamp=0, tombstone=False, value=b""))
