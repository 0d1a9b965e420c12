"""The values kvclient calls return, and the rule that picks `GetResult.value`.

Owns `GetResult`, `WriteResult`, the `Resolver` type and `choose_value`.
Pure: no I/O, no protobuf.

Versions (leader mode only): a key's version is the index of its last
write in its partition's Raft log, 0 when it is absent; `put(...,
if_version=V)` applies only if the key is at version V. In leaderless mode
`.version` is None and the causal `.context` plays that part.

Sibling rule: the server returns a key's concurrent, unresolved values as
siblings ordered oldest to newest. `GetResult.value` is then
`resolver(siblings)` when the client was given a resolver, else the last
(newest) sibling. Either way `.siblings` keeps them all, and writing back with
`.context` tells the store the siblings are resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Merges a key's siblings (oldest to newest; at least two) into one value.
Resolver = Callable[[list[bytes]], bytes]


@dataclass(frozen=True)
class GetResult:
    """What a read saw.

    `value`: bytes, or None when the key is absent (never written or deleted).
    `siblings`: every concurrent value, oldest to newest; [] when absent.
    `context`: opaque causal context; pass it to put/delete to replace what
    was read rather than write concurrently with it.
    `timestamp`: hybrid-logical-clock time of the newest sibling (0 if absent).
    `found`: whether the key has a value.
    `version`: leader mode: the key's version (0 when absent); None in
    leaderless mode.
    """

    value: bytes | None
    siblings: list[bytes] = field(default_factory=list)
    context: bytes = b""
    timestamp: int = 0
    found: bool = False
    version: int | None = None


@dataclass(frozen=True)
class WriteResult:
    """What a put or delete wrote.

    `context`: causal context of the value (or tombstone) just written.
    `timestamp`: its hybrid-logical-clock time; 0 for deletes, whose
    response carries none.
    `version`: leader mode: the key's version after the write (0 after a
    delete); None in leaderless mode.
    """

    context: bytes
    timestamp: int = 0
    version: int | None = None


def choose_value(siblings: list[bytes], resolver: Resolver | None) -> bytes | None:
    """The value a read returns for these siblings (see the module docstring)."""
    if not siblings:
        return None
    if len(siblings) == 1:
        return siblings[0]
    if resolver is None:
        return siblings[-1]
    # A copy, so a resolver that mutates its argument cannot change .siblings.
    resolved = resolver(list(siblings))
    if isinstance(resolved, (bytearray, memoryview)):
        return bytes(resolved)
    if not isinstance(resolved, bytes):
        raise TypeError(f"the resolver must return bytes, got {type(resolved).__name__}")
    return resolved
