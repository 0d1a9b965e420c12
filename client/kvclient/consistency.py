"""Turning the `r`/`w` arguments of the client API into `kv_pb2.Consistency`.

Owns the accepted spellings: None (the server's default, QUORUM), "one",
"quorum", "all" (any case) or a positive int (a number of replicas). Anything
else is refused locally with `errors.InvalidArgument` before a request is sent.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Union

from kvclient import errors
from kvclient.pb import kv_pb2

# What callers may pass as `r` or `w`.
Level = Union[str, int, None]

_LEVEL_BY_NAME: dict[str, kv_pb2.Consistency.Level] = {
    "one": kv_pb2.Consistency.ONE,
    "quorum": kv_pb2.Consistency.QUORUM,
    "all": kv_pb2.Consistency.ALL,
}

# Consistency.count is a uint32 on the wire.
_MAX_COUNT = 2**32 - 1

ALLOWED = 'None, "one", "quorum", "all" (any case) or a positive int'


def parse_consistency(level: Level, name: str = "r") -> kv_pb2.Consistency | None:
    """The wire form of `level`, or None to leave the field unset.

    `name` ("r" or "w") only words the error message.
    """
    if level is None:
        return None
    if isinstance(level, str):
        return _named(level, name)
    # bool is an int subclass, but r=True is a mistake, not "1 replica".
    if isinstance(level, int) and not isinstance(level, bool):
        return _counted(level, name)
    raise errors.InvalidArgument(f"{name} must be {ALLOWED}; got {level!r}")


def _named(level: str, name: str) -> kv_pb2.Consistency:
    value = _LEVEL_BY_NAME.get(level.lower())
    if value is None:
        raise errors.InvalidArgument(f"{name} must be {ALLOWED}; got {level!r}")
    return kv_pb2.Consistency(level=value)


def _counted(level: int, name: str) -> kv_pb2.Consistency:
    if not 1 <= level <= _MAX_COUNT:
        raise errors.InvalidArgument(f"{name} must be {ALLOWED}; got {level!r}")
    return kv_pb2.Consistency(count=level)
