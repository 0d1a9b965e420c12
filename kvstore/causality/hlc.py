"""Hybrid logical clock (Kulkarni et al., 2014): timestamps that follow
physical time but never go backwards and order causally related events.

A timestamp is one 64-bit integer: milliseconds since the epoch in the high 48
bits and a logical counter in the low 16, so comparing two timestamps is
comparing two ints. Pure: the physical clock is injected.
"""

from collections.abc import Callable

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1


def pack(physical_ms: int, logical: int) -> int:
    return (physical_ms << LOGICAL_BITS) | logical


def physical_ms(timestamp: int) -> int:
    return timestamp >> LOGICAL_BITS


class HybridLogicalClock:
    """Issues strictly increasing timestamps, merged with those seen from peers."""

    def __init__(self, physical_clock_ms: Callable[[], int]) -> None:
        self._physical_clock_ms = physical_clock_ms
        self._last = 0

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A timestamp greater than every one issued or observed before."""
        wall = pack(self._physical_clock_ms(), 0)
        self._last = max(wall, self._last + 1)
        return self._last

    def observe(self, remote: int) -> int:
        """Merge a timestamp received from elsewhere; returns a later one."""
        wall = pack(self._physical_clock_ms(), 0)
        self._last = max(wall, self._last + 1, remote + 1)
        return self._last
