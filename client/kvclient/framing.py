"""How the items of a KV.Session stream are packed into its messages: as
many as are ready, but no message over a byte budget or a count of items,
so that no message passes a receiver's size limit however many operations
are waiting.

Both ends use it: the client for operations, the server for results. Pure:
no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, TypeVar

# Well under gRPC's default 4 MiB receive limit, which is the least any
# kvstore process accepts (its limit also fits one largest key and value),
# so a message of small items always fits. One item larger than this goes
# alone, as its unary call would.
MESSAGE_BUDGET_BYTES = 1024 * 1024
# Items in one message at most: beyond a few hundred, a fuller message saves
# nothing measurable per item, and a smaller one answers sooner.
MESSAGE_MAX_ITEMS = 256

# A repeated field's tag and length prefix, per item, at most.
_ITEM_OVERHEAD_BYTES = 11


class Sized(Protocol):
    def ByteSize(self) -> int: ...


Item = TypeVar("Item", bound=Sized)


def pack(items: Sequence[Item], budget: int = MESSAGE_BUDGET_BYTES,
         max_items: int = MESSAGE_MAX_ITEMS) -> Iterator[list[Item]]:
    """`items` in order, cut into runs of at most `max_items` whose encoded
    size stays within `budget` (a run of one item may exceed it)."""
    run: list[Item] = []
    size = 0
    for item in items:
        item_size = item.ByteSize() + _ITEM_OVERHEAD_BYTES
        if run and (size + item_size > budget or len(run) >= max_items):
            yield run
            run, size = [], 0
        run.append(item)
        size += item_size
    if run:
        yield run

