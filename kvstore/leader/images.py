"""The bytes of a `PartitionImage`: a partition's state in a Raft snapshot,
stored by the node that took it and sent to followers that fell behind.

Layout (big-endian):

    format         u8   data_format.FORMAT
    applied        u64
    keys           u64  how many
    requests       u64  how many
    each key:      key length u32, version u64, value length u32, key, value
    each request:  id length u8, proposed_ms u64, status u8, version u64,
                   index u64, id
    crc            u32  CRC-32 of every byte before it

The checksum matters because the image crosses the network and replaces a
follower's whole state: a damaged one is refused (`DataLoss`), never
restored. Pure: no I/O.
"""

import struct
import zlib

from kvstore.errors import DataLoss
from kvstore.leader import data_format
from kvstore.leader.state_machine import (
    Outcome, PartitionImage, RequestRecord, Status, Versioned,
)

_HEADER = struct.Struct(">BQQQ")
_KEY = struct.Struct(">IQI")
_REQUEST = struct.Struct(">BQBQQ")
_CRC = struct.Struct(">I")
_STATUS_CODES = {Status.APPLIED: 1, Status.VERSION_MISMATCH: 2}
_STATUSES = {code: status for status, code in _STATUS_CODES.items()}


def encode(image: PartitionImage) -> bytes:
    parts = [_HEADER.pack(data_format.FORMAT, image.applied, len(image.keys),
                          len(image.requests))]
    for key, versioned in image.keys:
        parts += [_KEY.pack(len(key), versioned.version, len(versioned.value)), key,
                  versioned.value]
    for request_id, record in image.requests:
        outcome = record.outcome
        parts += [_REQUEST.pack(len(request_id), record.proposed_ms,
                                _STATUS_CODES[outcome.status], outcome.version, outcome.index),
                  request_id]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes | memoryview) -> PartitionImage:
    data = bytes(data)
    if not data:
        raise DataLoss("a snapshot's partition image is empty")
    data_format.check("a snapshot's partition image", data[0])
    if len(data) < _HEADER.size + _CRC.size:
        raise DataLoss(f"a snapshot's partition image is truncated ({len(data)} bytes)")
    body, (crc,) = data[:-_CRC.size], _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(body) != crc:
        raise DataLoss("a snapshot's partition image failed its checksum: it was damaged "
                       "on the way or on disk, and was not restored")
    _, applied, key_count, request_count = _HEADER.unpack_from(body)
    reader = _Reader(body, _HEADER.size)
    keys = []
    for _ in range(key_count):
        key_length, version, value_length = reader.unpack(_KEY)
        keys.append((reader.take(key_length), Versioned(version, reader.take(value_length))))
    requests = []
    for _ in range(request_count):
        id_length, proposed_ms, code, version, index = reader.unpack(_REQUEST)
        if code not in _STATUSES:
            raise DataLoss(f"a snapshot's partition image has an unknown outcome {code}")
        outcome = Outcome(_STATUSES[code], version, index)
        requests.append((reader.take(id_length), RequestRecord(outcome, proposed_ms)))
    if reader.offset != len(body):
        raise DataLoss(f"a snapshot's partition image has {len(body) - reader.offset} "
                       "bytes after its last record")
    return PartitionImage(applied, tuple(keys), tuple(requests))


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self.offset = offset

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        self._need(layout.size)
        fields = layout.unpack_from(self._data, self.offset)
        self.offset += layout.size
        return fields

    def take(self, length: int) -> bytes:
        self._need(length)
        chunk = self._data[self.offset:self.offset + length]
        self.offset += length
        return chunk

    def _need(self, length: int) -> None:
        if self.offset + length > len(self._data):
            raise DataLoss("a snapshot's partition image is truncated: a record runs past "
                           "its end")
