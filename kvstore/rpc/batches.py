"""How queued items become one message: which of them go together (bounded
in count and in bytes), and the message's bytes, put together from items
each serialized once.

A repeated message field is, on the wire, its elements one after another,
each as a tag, a length and the element's own serialization. So a batch
(`ReplicaBatchRequest.ops`, `ReplicaBatchResponse.results`, both field 1)
can be built by joining items serialized when they were queued: its exact
size is known before it is built, so it is bounded in bytes for the price of
a `len`, and nothing is serialized or copied twice (asking protobuf for a
message's size serializes it).

Pure: no I/O, no asyncio.
"""

from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")

BATCH_FIELD = 1  # `ops` and `results`: the repeated field of both batch messages
_LENGTH_DELIMITED = 2  # protobuf wire type of a message field


def always_live(_: object) -> bool:
    """`live` for a queue whose items never lapse (serialized answers, posts)."""
    return True


def take_batch(queue: "deque[Item]", max_count: int, max_bytes: int,
               size: Callable[[Item], int], live: Callable[[Item], bool]) -> list[Item]:
    """Take from the front of `queue` the items of the next message, oldest
    first: at most `max_count`, at most `max_bytes` of `size` in all, except
    that an item larger than `max_bytes` goes alone (so it still goes).
    Items no longer `live` (cancelled, timed out) are dropped on the way."""
    batch: list[Item] = []
    total = 0
    while queue and len(batch) < max_count:
        item = queue[0]
        if not live(item):
            queue.popleft()
            continue
        item_size = size(item)
        if batch and total + item_size > max_bytes:
            break
        queue.popleft()
        batch.append(item)
        total += item_size
    return batch


def batch_is_full(queue: "deque[Item]", max_count: int, max_bytes: int,
                  size: Callable[[Item], int], live: Callable[[Item], bool]) -> bool:
    """Whether the next `take_batch` would stop at a bound (count or bytes)
    rather than at the end of the queue: a full batch gains nothing by
    waiting for more items. Looks at most `max_count` live items."""
    count = total = 0
    for item in queue:
        if not live(item):
            continue
        count += 1
        total += size(item)
        if count >= max_count or total >= max_bytes:
            return True
    return False


def framed_size(encoded: bytes) -> int:
    """What `encoded` adds to a batch message: its tag, its length and itself."""
    return 1 + _varint_size(len(encoded)) + len(encoded)


def encode_batch(encoded_items: Sequence[bytes]) -> bytes:
    """The serialized batch message whose repeated field 1 holds these
    serialized elements, in order."""
    tag = bytes([BATCH_FIELD << 3 | _LENGTH_DELIMITED])
    parts: list[bytes] = []
    for encoded in encoded_items:
        parts += (tag, _varint(len(encoded)), encoded)
    return b"".join(parts)


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _varint_size(value: int) -> int:
    size = 1
    while value >= 0x80:
        value >>= 7
        size += 1
    return size
