"""Per-client rate limits: a token bucket per caller identity (a token's
name or a certificate's), refilled at `rate` per second up to `burst`.

Pure: the caller passes the time. Keeps at most `max_callers` buckets (the
least recently used goes first), so callers that come and go cannot grow
it without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: float, max_callers: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._max = max_callers
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, caller: str, now: float) -> float | None:
        """Spend one unit of `caller`'s bucket: None when it had one, else
        the seconds until it will have one (nothing is spent)."""
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(self.burst, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
            refill = max(0.0, now - bucket.updated) * self.rate
            bucket.tokens = min(self.burst, bucket.tokens + refill)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate
