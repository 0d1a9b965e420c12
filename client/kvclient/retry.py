"""When and where a failed call is tried again: the retry policy, the backoff,
and the rotation of a client's addresses.

Owns which status codes are retried, the exponential backoff with full jitter,
round robin across addresses and failover, and the rule that no attempt starts
after the call's overall deadline. Pure: it never sleeps, reads a clock or
touches a socket; callers pass the time (`now`, monotonic seconds) and a random
source, so every schedule is a plain unit test.

Reads are safe to retry. Writes are retried on the same codes only because each
carries a client request id that stays the same on every attempt (see
`requests.new_request_id`): the server applies a retried write once.

RESOURCE_EXHAUSTED is retried only when the server's admission control
refused the call at once (reason OVERLOADED, nothing applied) and says
when to try again (a `RetryInfo`); never otherwise: not a full store
(STORE_FULL), nor a rate limit (RATE_LIMITED), whatever delay they carry.
Such a refusal is not a failed attempt: it is retried until the call's
deadline, not `max_attempts` times, each time after at least the server's
delay plus an exponential backoff with full jitter, at the next address
(another process may have room), as long as what is left of the deadline
then is at least what a request needs now: the longer of what the server
said (`expected_latency_ms`, its own view, from reading a request to
answering it) and what this client's answered attempts took
(`AttemptLatency`: its view, which also holds its own queueing and the
network): a later attempt would end DEADLINE_EXCEEDED, an outcome a write
cannot be sure of.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import grpc

from kvclient import errors
from kvclient.latency import LatencyEstimate

# UNAVAILABLE: the server was unreachable, starting or stopping, or too few
# replicas answered. ABORTED: the server gave up on a conflict. Nothing else
# is retried (besides the overload refusals of `is_overload`):
# INVALID_ARGUMENT, RESOURCE_EXHAUSTED without a retry delay (a full store),
# DATA_LOSS and the rest would fail the same way again.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})

NOT_APPLIED, UNKNOWN = "not_applied", "unknown"  # a failed write's outcome (errors.KVError)
OVERLOADED = "OVERLOADED"  # the reason of an admission control refusal: retried

# Beyond this exponent base * 2**attempt is past any sane cap; clamping it
# keeps the float arithmetic from overflowing on absurd attempt counts.
_MAX_EXPONENT = 62


def is_overload(error: errors.KVError) -> bool:
    """A refusal by admission control: RESOURCE_EXHAUSTED, reason OVERLOADED,
    with a retry delay. Not a full store (STORE_FULL), nor a rate limit
    (RATE_LIMITED: the caller is to slow down, which a retry would not do),
    whatever delay they carry."""
    return (error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after is not None
            and error.reason == OVERLOADED)


def _expected_latency(refusal: errors.KVError) -> float:
    """Seconds the refusing server expects an admitted request to need now
    (0 when it did not say, or said something else than a number)."""
    try:
        return max(0.0, float(refusal.metadata.get("expected_latency_ms", 0)) / 1000)
    except ValueError:
        return 0.0


class Uniform(Protocol):
    """The slice of `random.Random` the backoff needs."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a call may make, and how long to wait between them."""

    max_attempts: int = 5
    backoff_base: float = 0.02
    backoff_cap: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if self.max_attempts < 1:
            raise errors.InvalidArgument(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not self.backoff_base >= 0 or not self.backoff_cap >= 0:
            raise errors.InvalidArgument(
                f"backoff_base and backoff_cap must be >= 0, "
                f"got {self.backoff_base} and {self.backoff_cap}"
            )

    def backoff_ceiling(self, retry: int) -> float:
        """The longest wait before retry number `retry` (0 for the first retry)."""
        return min(self.backoff_cap, self.backoff_base * 2.0 ** min(retry, _MAX_EXPONENT))

    def backoff(self, retry: int, rng: Uniform) -> float:
        """Full jitter: uniform between 0 and the ceiling, so clients that failed
        together do not retry together."""
        return rng.uniform(0.0, self.backoff_ceiling(retry))


class AddressRotation:
    """Round robin over a client's addresses: successive calls start at
    successive addresses; a call that finds one unavailable moves to the next.

    Safe to share between threads: `itertools.count` advances atomically.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise errors.InvalidArgument("a client needs at least one address")
        self.size = size
        self._calls = itertools.count()

    def first(self) -> int:
        """The address index a new call starts at."""
        return next(self._calls) % self.size

    def after(self, index: int) -> int:
        """The address index to fail over to from `index`."""
        return (index + 1) % self.size


class AttemptLatency(LatencyEstimate):
    """How long an attempt takes to be answered, as the client sees it (its
    own queueing and the network included), shared by a client's calls."""

    def __init__(self) -> None:
        super().__init__(latency_weight=1 / 8, deviation_weight=1 / 4)  # RFC 6298's


class Attempts:
    """The retry state of one logical call.

    The shell loops: send to `address` with `time_left(now)` as the attempt's
    timeout; on a failure (an RpcError of a unary call, or the typed error of
    a stream's operation), sleep `after_failure(error, now)` seconds and go
    again. Both methods raise the typed exception when the call is over.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        rotation: AddressRotation,
        *,
        now: float,
        timeout: float,
        rng: Uniform,
        latency: AttemptLatency | None = None,
    ) -> None:
        self._policy = policy
        self._latency = latency
        self._rotation = rotation
        self._rng = rng
        self._timeout = timeout
        self._deadline = now + timeout
        self._failures = 0
        self._overloads = 0  # refusals by admission control, retried until the deadline
        self._last: errors.KVError | None = None
        # An attempt failed without saying it applied nothing (a write's
        # outcome "not_applied"), so it may have applied it.
        self._maybe_applied = False
        self.address = rotation.first()

    @property
    def number(self) -> int:
        """The number of the attempt to make next (1 for the first)."""
        return self._failures + self._overloads + 1

    def time_left(self, now: float) -> float:
        """The timeout for the next attempt: all that is left of the call's."""
        left = self._deadline - now
        if left <= 0:
            raise self._deadline_error()
        return left

    def after_failure(self, error: grpc.RpcError | errors.KVError, now: float) -> float:
        """The seconds to wait before the next attempt; raises when there is none."""
        typed = error if isinstance(error, errors.KVError) else errors.from_rpc_error(error)
        if typed.outcome == NOT_APPLIED and self._maybe_applied:
            # This attempt applied nothing, but an earlier one may have (its
            # write may still be running): the call's outcome is unknown.
            typed.metadata["outcome"] = UNKNOWN
            typed.details += "; an earlier attempt may have applied the write"
        elif typed.outcome != NOT_APPLIED:
            self._maybe_applied = True
        self._last = typed
        delay: float | None
        if is_overload(typed):
            delay = self._after_overload(typed)
        else:
            delay = self._after_failed_attempt(typed)
        if delay is None:
            if typed is error:
                raise typed
            raise typed from error
        if is_overload(typed):
            needed = _expected_latency(typed)
            if self._latency is not None:
                needed = max(needed, self._latency.expected)
            if now + delay + needed >= self._deadline:
                # Too late for another attempt to make it: the refusal says
                # what happened better than a timeout would.
                raise typed from (None if typed is error else error)
        elif now + delay >= self._deadline:
            raise self._deadline_error() from error
        return delay

    def _after_failed_attempt(self, typed: errors.KVError) -> float | None:
        self._failures += 1
        if typed.code not in RETRYABLE_CODES or self._failures >= self._policy.max_attempts:
            return None
        if typed.code == grpc.StatusCode.UNAVAILABLE:
            self.address = self._rotation.after(self.address)
        return self._policy.backoff(self._failures - 1, self._rng)

    def _after_overload(self, typed: errors.KVError) -> float:
        # Not a failed attempt: retried until the deadline, elsewhere, after
        # the server's delay and a backoff that grows with each refusal.
        self._overloads += 1
        assert typed.retry_after is not None
        self.address = self._rotation.after(self.address)
        return typed.retry_after + self._policy.backoff(self._overloads - 1, self._rng)

    def _deadline_error(self) -> errors.DeadlineExceeded:
        # Also raised just before the deadline, when the backoff would end past it.
        message = (f"the call's {self._timeout:g} s timeout ran out after "
                   f"{self._failures + self._overloads} attempt(s)")
        if self._last is not None:
            message += f"; last error: {self._last}"
        return errors.DeadlineExceeded(message)
