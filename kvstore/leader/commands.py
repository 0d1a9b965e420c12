"""The writes that travel through a partition's Raft log, and their bytes in
a log entry.

A command is a `Put` or a `Delete` of one key, with the client's request id
(so a retry applies once) and an optional `if_version` (compare-and-set:
apply only if the key's version is that, 0 meaning absent). `proposed_ms`
is the leader's wall clock when it proposed the write; it travels in the
entry so that every replica expires request ids at the same point of the
log (the state machine must not read a clock of its own).

Layout (big-endian), after which the value fills the rest (puts only):

    format       u8   data_format.FORMAT
    kind         u8   1 put, 2 delete
    flags        u8   bit 0: if_version is set
    proposed_ms  u64
    if_version   u64  0 when not set
    id length    u8   the request id's length (1..255)
    key length   u32
    request id, key, value

An empty entry is the leader's no-op, never a command. Decoding refuses a
format it does not know (`UnsupportedFormat`) and anything truncated or
inconsistent (`DataLoss`): a committed entry that cannot be read is never
guessed at. Pure: no I/O.
"""

import struct
from dataclasses import dataclass

from kvstore.errors import DataLoss, InvalidArgument
from kvstore.leader import data_format

_HEADER = struct.Struct(">BBBQQBI")
_PUT, _DELETE = 1, 2
_IF_VERSION = 0x01
MAX_REQUEST_ID_BYTES = 0xFF
_U64 = 1 << 64


def _check(key: bytes, request_id: bytes, proposed_ms: int, if_version: int | None) -> None:
    if not key:
        raise InvalidArgument("the key is empty; a command writes one non-empty key")
    if not 1 <= len(request_id) <= MAX_REQUEST_ID_BYTES:
        raise InvalidArgument(f"the request id is {len(request_id)} bytes; a leader-mode write "
                              f"carries one of 1 to {MAX_REQUEST_ID_BYTES} bytes")
    if not 0 <= proposed_ms < _U64:
        raise InvalidArgument(f"proposed_ms {proposed_ms} is outside 0..2**64-1")
    if if_version is not None and not 0 <= if_version < _U64:
        raise InvalidArgument(f"if_version {if_version} is outside 0..2**64-1 (0: only if absent)")


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    request_id: bytes
    proposed_ms: int = 0
    if_version: int | None = None  # apply only if the key's version is this (0: absent)

    def __post_init__(self) -> None:
        _check(self.key, self.request_id, self.proposed_ms, self.if_version)


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    request_id: bytes
    proposed_ms: int = 0
    if_version: int | None = None

    def __post_init__(self) -> None:
        _check(self.key, self.request_id, self.proposed_ms, self.if_version)


Command = Put | Delete


def encode(command: Command) -> bytes:
    kind, value = (_PUT, command.value) if isinstance(command, Put) else (_DELETE, b"")
    flags = _IF_VERSION if command.if_version is not None else 0
    header = _HEADER.pack(data_format.FORMAT, kind, flags, command.proposed_ms,
                          command.if_version or 0, len(command.request_id), len(command.key))
    return b"".join((header, command.request_id, command.key, value))


def decode(data: bytes | memoryview) -> Command:
    """The command in a log entry's data (never empty: no-ops are skipped
    before)."""
    data = bytes(data)
    if not data:
        raise DataLoss("a log entry holds no command (an empty entry is a no-op)")
    data_format.check("a log entry", data[0])
    if len(data) < _HEADER.size:
        raise DataLoss(f"a log entry is truncated: {len(data)} bytes, shorter than a "
                       f"command's {_HEADER.size}-byte header")
    _, kind, flags, proposed_ms, if_version, id_length, key_length = _HEADER.unpack_from(data)
    start = _HEADER.size
    key_start = start + id_length
    value_start = key_start + key_length
    if value_start > len(data) or flags & ~_IF_VERSION or kind not in (_PUT, _DELETE):
        raise DataLoss(f"a log entry is corrupt: kind {kind}, flags {flags:#x}, lengths "
                       f"{id_length} and {key_length} in {len(data)} bytes")
    if kind == _DELETE and value_start != len(data):
        raise DataLoss("a log entry is corrupt: a delete carries a value")
    try:
        if kind == _PUT:
            return Put(data[key_start:value_start], data[value_start:], data[start:key_start],
                       proposed_ms, if_version if flags & _IF_VERSION else None)
        return Delete(data[key_start:value_start], data[start:key_start], proposed_ms,
                      if_version if flags & _IF_VERSION else None)
    except InvalidArgument as exc:
        raise DataLoss(f"a log entry is corrupt: {exc}") from None
