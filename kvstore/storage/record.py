"""The on-disk form of one stored record: a small header plus the value.

Layout (big-endian):

    format  u8   RECORD_FORMAT, so the layout can change later
    flags   u8   bit 0: tombstone
    stamp   u64  hybrid-logical-clock timestamp of the write
    crc     u32  CRC-32 of the key and of every byte below and above except itself
    vlen    u16  length of the version
    version      serialized CausalContext (vlen bytes)
    value        the rest

The checksum covers the key as well, so a record that LMDB hands back under
the wrong key is caught like a flipped bit. Pure: no I/O.
"""

import struct
import zlib
from dataclasses import dataclass

from kvstore.errors import DataLoss

RECORD_FORMAT = 1
FLAG_TOMBSTONE = 0x01
_HEADER = struct.Struct(">BBQIH")
HEADER_BYTES = _HEADER.size
MAX_VERSION_BYTES = 0xFFFF


@dataclass(frozen=True, slots=True)
class Record:
    version: bytes  # serialized CausalContext: what this write descends from
    timestamp: int  # hybrid-logical-clock time of the write
    tombstone: bool  # a delete marker, kept until every replica has it
    value: bytes  # empty for tombstones


def _checksum(key: bytes, format_: int, flags: int, timestamp: int, body: bytes) -> int:
    crc = zlib.crc32(key)
    crc = zlib.crc32(struct.pack(">BBQ", format_, flags, timestamp), crc)
    return zlib.crc32(body, crc)


def encode(key: bytes, record: Record) -> bytes:
    if len(record.version) > MAX_VERSION_BYTES:
        raise ValueError(f"version is {len(record.version)} bytes; at most {MAX_VERSION_BYTES}")
    flags = FLAG_TOMBSTONE if record.tombstone else 0
    body = struct.pack(">H", len(record.version)) + record.version + record.value
    crc = _checksum(key, RECORD_FORMAT, flags, record.timestamp, body)
    return _HEADER.pack(RECORD_FORMAT, flags, record.timestamp, crc, len(record.version)) + (
        record.version + record.value
    )


def decode(key: bytes, data: bytes | memoryview) -> Record:
    """The record stored under `key`; DataLoss if its bytes are not intact."""
    data = bytes(data)
    if len(data) < HEADER_BYTES:
        raise DataLoss(f"record for key {key[:64]!r} is truncated ({len(data)} bytes)")
    format_, flags, timestamp, crc, vlen = _HEADER.unpack_from(data)
    body = data[HEADER_BYTES - 2 :]
    if format_ != RECORD_FORMAT or len(data) < HEADER_BYTES + vlen:
        raise DataLoss(f"record for key {key[:64]!r} has a corrupt header")
    if _checksum(key, format_, flags, timestamp, body) != crc:
        raise DataLoss(
            f"record for key {key[:64]!r} failed its checksum; "
            "the replica's copy is corrupt and was not returned"
        )
    return Record(
        version=data[HEADER_BYTES : HEADER_BYTES + vlen],
        timestamp=timestamp,
        tombstone=bool(flags & FLAG_TOMBSTONE),
        value=data[HEADER_BYTES + vlen :],
    )
