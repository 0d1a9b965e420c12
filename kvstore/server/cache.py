"""The coordinator's read cache: least-recently-used, bounded in bytes and age.

It owns the bookkeeping only: which entries are cached, in what order of
use, how many bytes they account for, and the hit/miss/eviction counters the
metrics read. It never reads a clock itself (the caller injects a monotonic
one) and never decides what may be cached: the coordinator does that (strong
reads never come from here; a write through the coordinator updates or
invalidates its key, for read-your-writes).

Staleness bound: an entry is served for less than `ttl` seconds after it was
put; from then on a `get` treats it as a miss and drops it. Expired entries
are dropped lazily (on `get`, or when eviction reaches them), so they can
hold bytes until then, but never more than `max_bytes` in all.
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Bytes charged per entry on top of len(key) + size: what CPython spends to keep
# it (the ordered-dict slot and link, the entry record, its timestamp, the key
# object's header), measured at ~250 bytes with tracemalloc on 3.11. Without it
# a flood of tiny entries would use far more memory than `max_bytes` says.
ENTRY_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class _Entry:
    value: object
    cost: int  # bytes charged: len(key) + size + ENTRY_OVERHEAD
    stored_at: float  # clock() when put


class LruCache:
    """Values by key, least recently used first out, at most `max_bytes` in all.

    Counters, read by the metrics: `hits`, `misses`, `evictions` (entries
    dropped to make room), `expirations` (entries dropped because they were
    older than `ttl`), `bytes` (charged by the entries now cached) and
    `entries`. `max_bytes == 0` disables the cache: every get misses and puts
    are ignored.
    """

    def __init__(self, max_bytes: int, ttl: float, clock: Callable[[], float]) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0 disables the cache), got {max_bytes}")
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds (use max_bytes=0 to disable), got {ttl}")
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.expirations = 0
        self.bytes = 0

    @property
    def entries(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> object | None:
        """The cached value, or None on a miss (absent or expired)."""
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry.stored_at >= self.ttl:
            self._remove(key)
            self.expirations += 1
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.value

    def put(self, key: bytes, value: object, size: int, *, stored_at: float | None = None) -> None:
        """Cache `value` (of `size` bytes) under `key`, replacing what was there,
        evicting least-recently-used entries until it fits. `stored_at`:
        how old the value is (a clock reading before it was read; default
        now), from which its ttl runs.

        A value too large for the whole cache is not cached and evicts nothing,
        but still drops the key's older value, which it supersedes.
        """
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self.invalidate(key)
        cost = len(key) + size + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        if stored_at is None:
            stored_at = self._clock()
        while self.bytes + cost > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        self._entries[key] = _Entry(value, cost, stored_at)
        self.bytes += cost

    def stored_at(self, key: bytes) -> float | None:
        """When `key`'s entry was stored, if it is cached (counts as no use)."""
        entry = self._entries.get(key)
        return None if entry is None else entry.stored_at

    def invalidate(self, key: bytes) -> None:
        """Forget `key`, if cached."""
        if key in self._entries:
            self._remove(key)

    def clear(self) -> None:
        """Forget every entry (the counters of past activity stay)."""
        self._entries.clear()
        self.bytes = 0

    def _remove(self, key: bytes) -> None:
        self.bytes -= self._entries.pop(key).cost
