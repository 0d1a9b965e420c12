"""Reading the time: the seam through which every background loop and
timestamp of a process learns what time it is.

`Clock` has the two readings the code needs: monotonic seconds (schedules,
rate limits, failure detection) and wall-clock milliseconds since the epoch
(hybrid-logical-clock timestamps, tombstone ages, request-id expiry).
`SYSTEM_CLOCK` reads the machine's clocks; a deterministic simulation
passes a virtual clock instead, so code that takes a Clock never reads
`time` itself. Waiting is not reading: asyncio timeouts go through the
running loop, which a simulation runs on virtual time.
"""

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def wall_clock_ms(self) -> int:
        """Milliseconds since the Unix epoch; may jump (NTP, an operator)."""
        ...


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_clock_ms(self) -> int:
        return time.time_ns() // 1_000_000


SYSTEM_CLOCK = SystemClock()
