"""The coordinator's cache: least recently used goes first, the byte bound
always holds, nothing is served after its TTL, and the counters add up."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.server.cache import ENTRY_OVERHEAD, LruCache

PROPERTIES = properties(300)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def cost(key: bytes, size: int) -> int:
    return len(key) + size + ENTRY_OVERHEAD


def cache_for(entries: int, size: int = 100, ttl: float = 60.0, clock=None) -> LruCache:
    """A cache with room for exactly `entries` one-byte keys of `size` bytes."""
    return LruCache(entries * cost(b"k", size), ttl, clock or FakeClock())


def test_a_put_value_is_served_back():
    cache = cache_for(3)
    value = object()
    cache.put(b"a", value, 100)
    assert cache.get(b"a") is value
    assert (cache.hits, cache.misses, cache.entries, cache.bytes) == (1, 0, 1, cost(b"a", 100))


def test_an_unknown_key_misses():
    cache = cache_for(3)
    assert cache.get(b"nope") is None
    assert (cache.hits, cache.misses) == (0, 1)


def test_the_least_recently_used_entry_is_evicted_first():
    cache = cache_for(3)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key, 100)
    assert cache.get(b"a") == b"a"  # now b is the least recently used
    cache.put(b"d", b"d", 100)
    assert cache.get(b"b") is None
    assert [cache.get(k) for k in (b"a", b"c", b"d")] == [b"a", b"c", b"d"]
    assert cache.evictions == 1 and cache.entries == 3


def test_replacing_a_value_makes_it_most_recent_without_evicting():
    cache = cache_for(2)
    cache.put(b"a", 1, 100)
    cache.put(b"b", 2, 100)
    cache.put(b"a", 3, 100)
    assert cache.evictions == 0 and cache.entries == 2
    cache.put(b"c", 4, 100)
    assert cache.get(b"b") is None and cache.get(b"a") == 3


def test_replacing_a_value_recounts_its_bytes():
    cache = cache_for(3)
    cache.put(b"a", 1, 100)
    cache.put(b"a", 2, 10)
    assert cache.bytes == cost(b"a", 10) and cache.entries == 1


def test_eviction_removes_as_many_entries_as_the_new_one_needs():
    cache = cache_for(4)
    for key in (b"a", b"b", b"c", b"d"):
        cache.put(key, key, 100)
    big = 2 * cost(b"k", 100) + 50 - cost(b"e", 0)  # needs the room of three entries
    cache.put(b"e", b"e", big)
    assert cache.evictions == 3
    assert cache.get(b"d") == b"d" and cache.get(b"e") == b"e"
    assert cache.bytes <= cache.max_bytes


def test_an_entry_that_exactly_fills_the_cache_is_kept():
    cache = LruCache(cost(b"a", 500), 60, FakeClock())
    cache.put(b"a", 1, 500)
    assert cache.get(b"a") == 1 and cache.bytes == cache.max_bytes


def test_an_entry_larger_than_the_cache_is_not_cached_and_evicts_nothing():
    cache = cache_for(2)
    cache.put(b"a", 1, 100)
    cache.put(b"b", 2, 100)
    cache.put(b"huge", 3, cache.max_bytes)
    assert cache.get(b"huge") is None
    assert (cache.evictions, cache.entries) == (0, 2)
    assert cache.get(b"a") == 1 and cache.get(b"b") == 2


def test_an_oversized_new_value_still_drops_the_old_one():
    cache = cache_for(2)
    cache.put(b"a", "old", 100)
    cache.put(b"a", "new", cache.max_bytes)
    assert cache.get(b"a") is None  # never the superseded value
    assert cache.entries == 0 and cache.bytes == 0 and cache.evictions == 0


def test_the_key_and_a_fixed_overhead_count_towards_the_bound():
    cache = LruCache(ENTRY_OVERHEAD + 10, 60, FakeClock())
    cache.put(b"12345", 1, 5)
    assert cache.bytes == ENTRY_OVERHEAD + 10
    cache.put(b"123456", 1, 5)  # one byte over
    assert cache.get(b"123456") is None


def test_an_entry_expires_ttl_seconds_after_it_was_put():
    clock = FakeClock()
    cache = LruCache(10_000, 5.0, clock)
    cache.put(b"a", 1, 10)
    clock.now += 4.999
    assert cache.get(b"a") == 1
    clock.now += 0.001
    assert cache.get(b"a") is None
    assert (cache.hits, cache.misses, cache.expirations) == (1, 1, 1)
    assert (cache.entries, cache.bytes, cache.evictions) == (0, 0, 0)
    assert cache.get(b"a") is None
    assert cache.expirations == 1  # already gone, a plain miss


def test_a_hit_does_not_extend_the_ttl_but_a_new_put_does():
    clock = FakeClock()
    cache = LruCache(10_000, 5.0, clock)
    cache.put(b"a", 1, 10)
    cache.put(b"b", 1, 10)
    clock.now += 3
    assert cache.get(b"a") == 1
    cache.put(b"b", 2, 10)
    clock.now += 3
    assert cache.get(b"a") is None
    assert cache.get(b"b") == 2


def test_an_infinite_ttl_never_expires():
    clock = FakeClock()
    cache = LruCache(10_000, math.inf, clock)
    cache.put(b"a", 1, 10)
    clock.now += 1e12
    assert cache.get(b"a") == 1


def test_a_cache_of_zero_bytes_is_disabled():
    cache = LruCache(0, 60, FakeClock())
    cache.put(b"a", 1, 0)
    assert cache.get(b"a") is None
    assert (cache.entries, cache.bytes, cache.misses, cache.evictions) == (0, 0, 1, 0)


def test_invalidate_forgets_one_key():
    cache = cache_for(3)
    cache.put(b"a", 1, 100)
    cache.put(b"b", 2, 100)
    cache.invalidate(b"a")
    cache.invalidate(b"unknown")
    assert cache.get(b"a") is None and cache.get(b"b") == 2
    assert cache.entries == 1 and cache.bytes == cost(b"b", 100) and cache.evictions == 0


def test_clear_forgets_every_entry_but_keeps_the_counters():
    cache = cache_for(3)
    cache.put(b"a", 1, 100)
    cache.get(b"a")
    cache.get(b"b")
    cache.clear()
    assert (cache.entries, cache.bytes) == (0, 0)
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.get(b"a") is None


@pytest.mark.parametrize(
    "max_bytes, ttl, message",
    [
        (-1, 60, "max_bytes must be >= 0"),
        (100, 0, "ttl must be > 0"),
        (100, -1, "ttl must be > 0"),
        (100, math.nan, "ttl must be > 0"),
    ],
)
def test_bad_limits_are_refused(max_bytes, ttl, message):
    with pytest.raises(ValueError, match=message):
        LruCache(max_bytes, ttl, FakeClock())


def test_a_negative_size_is_refused():
    with pytest.raises(ValueError, match="size must be >= 0"):
        cache_for(1).put(b"a", 1, -1)


# --- against a model ------------------------------------------------------------


class Model:
    """The obvious slow version: a list from least to most recently used."""

    def __init__(self, max_bytes: int, ttl: float) -> None:
        self.max_bytes, self.ttl = max_bytes, ttl
        self.items: list[tuple[bytes, object, int, float]] = []  # key, value, cost, put at
        self.hits = self.misses = self.evictions = self.expirations = 0

    def find(self, key):
        return next((i for i, item in enumerate(self.items) if item[0] == key), None)

    def get(self, key, now):
        i = self.find(key)
        if i is not None and now - self.items[i][3] >= self.ttl:
            del self.items[i]
            self.expirations += 1
            i = None
        if i is None:
            self.misses += 1
            return None
        self.items.append(self.items.pop(i))
        self.hits += 1
        return self.items[-1][1]

    def put(self, key, value, size, now):
        self.invalidate(key)
        c = cost(key, size)
        if c > self.max_bytes:
            return
        while sum(item[2] for item in self.items) + c > self.max_bytes:
            self.items.pop(0)
            self.evictions += 1
        self.items.append((key, value, c, now))

    def invalidate(self, key):
        self.items = [item for item in self.items if item[0] != key]


keys = st.sampled_from([b"a", b"bb", b"ccc", b"dddd", b"e" * 40])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), keys, st.integers(0, 600)),
        st.tuples(st.just("get"), keys, st.none()),
        st.tuples(st.just("invalidate"), keys, st.none()),
        st.tuples(st.just("tick"), st.none(), st.sampled_from([0.5, 1.0, 2.5, 10.0])),
        st.tuples(st.just("clear"), st.none(), st.none()),
    ),
    max_size=60,
)


@PROPERTIES
@given(st.integers(0, 2000), st.sampled_from([1.0, 3.0, 30.0]), operations)
def test_cache_matches_the_model_and_never_exceeds_its_bound(max_bytes, ttl, ops):
    clock = FakeClock()
    cache, model = LruCache(max_bytes, ttl, clock), Model(max_bytes, ttl)
    for n, (op, key, arg) in enumerate(ops):
        if op == "put":
            cache.put(key, n, arg)
            model.put(key, n, arg, clock.now)
        elif op == "get":
            assert cache.get(key) == model.get(key, clock.now)
        elif op == "invalidate":
            cache.invalidate(key)
            model.invalidate(key)
        elif op == "tick":
            clock.now += arg
        else:
            cache.clear()
            model.items.clear()
        assert cache.bytes == sum(item[2] for item in model.items) <= max_bytes
        assert cache.entries == len(model.items)
        assert (cache.hits, cache.misses, cache.evictions, cache.expirations) == (
            model.hits, model.misses, model.evictions, model.expirations
        )
    for key, value, _, stored_at in reversed(model.items):  # most recent first: no evictions
        if clock.now - stored_at < ttl:
            assert cache.get(key) == value
