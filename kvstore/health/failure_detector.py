"""Failure detection: how suspicious each peer's silence is, as a number.

Phi accrual (Hayashibara et al., 2004) as Akka implements it: a peer's
heartbeat inter-arrival times are kept in a bounded window, a normal
distribution is fitted to them, and after `elapsed` seconds of silence

    phi = -log10(P(the next heartbeat comes later than `elapsed`))

so phi = 1 means a 10 % chance that convicting the peer now is a mistake,
phi = 8 one in 10^8. A peer is available while phi < threshold. The normal
CDF is approximated by a logistic function, as in Akka. Jittery links widen
the fitted distribution and so the tolerance; `min_std_seconds` keeps a very
regular link from being convicted by the first late heartbeat, and
`acceptable_pause_seconds` is added to the mean to absorb known pauses (GC,
an event loop busy with a batch).

Pure: no I/O, no asyncio, no clock. Every time is a float in seconds from one
monotonic clock the caller owns, passed in. The caller decides what counts
as a heartbeat (a gossip message, a health reply) and what a conviction does.
"""

import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

# Akka's logistic approximation of the standard normal CDF:
# P(X > y) ~= 1 / (1 + exp(y * (_A + _B * y * y))).
_A = 1.5976
_B = 0.070566
_LN10 = math.log(10.0)


def phi_of(elapsed: float, mean: float, std: float) -> float:
    """phi after `elapsed` seconds of silence, intervals ~ N(mean, std**2).

    -log10(1 / (1 + exp(z))) = log10(1 + exp(z)), written as a stable
    softplus: Akka's two-branch form overflows `exp` for long silences or
    large pauses, and can round a tiny negative; this one is >= 0,
    non-decreasing in `elapsed` and never NaN.
    """
    y = (elapsed - mean) / std
    z = y * (_A + _B * y * y)
    return (max(z, 0.0) + math.log1p(math.exp(-abs(z)))) / _LN10


def elapsed_for_phi(phi: float, mean: float, std: float) -> float:
    """The silence after which phi reaches `phi`: the inverse of `phi_of`."""
    z = phi * _LN10 + math.log1p(-(10.0**-phi))  # ln(10**phi - 1)
    # y**3 + p*y + q = 0 with p > 0 has one real root (Cardano).
    p, q = _A / _B, -z / _B
    root = math.sqrt(q * q / 4 + p * p * p / 27)
    y = math.cbrt(-q / 2 + root) + math.cbrt(-q / 2 - root)
    return mean + y * std


@dataclass(frozen=True)
class PhiSettings:
    """How suspicious a detector is: what both `PhiAccrualDetector` and
    `FailureDetector` are built from."""

    threshold: float = 8.0
    window: int = 100  # intervals kept; older ones are forgotten
    min_std_seconds: float = 0.05
    acceptable_pause_seconds: float = 0.0
    first_interval_seconds: float = 1.0  # expected interval before any is seen

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an integer >= 1, got {self.window!r}")
        for name, lowest, inclusive in (
            ("threshold", 0.0, False),
            ("min_std_seconds", 0.0, False),
            ("acceptable_pause_seconds", 0.0, True),
            ("first_interval_seconds", 0.0, False),
        ):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            if not ok or value < lowest or (value == lowest and not inclusive):
                bound = ">=" if inclusive else ">"
                raise ValueError(f"{name} must be a finite number {bound} {lowest}, got {value!r}")


def _check_time(now: float) -> None:
    if not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ValueError(f"a time is a finite number of seconds, got {now!r}")


class PhiAccrualDetector:
    """Phi accrual failure detection for one peer.

    Before any interval is known the window holds two synthetic intervals,
    first_interval -/+ a quarter of it (as Akka does), so the first
    heartbeats are judged against a mean of first_interval and a standard
    deviation of first_interval / 4; real intervals push them out.
    Before `heartbeat` or `expect`, phi is 0: nothing is known to be late.
    """

    def __init__(self, settings: PhiSettings = PhiSettings(), /) -> None:
        self.settings = settings
        self._intervals: deque[float] = deque(maxlen=settings.window)
        self._last: float | None = None  # the last heartbeat, or when expect() started the clock
        self._heard = False
        self._mean = 0.0
        self._std = 0.0
        self._bootstrap()

    @property
    def last_heartbeat(self) -> float | None:
        return self._last if self._heard else None

    def expect(self, now: float) -> None:
        """Start the clock for a peer not heard from yet: until its first
        heartbeat it is judged as if it had sent one at `now`, so a peer that
        never answers is convicted after about first_interval plus the
        tolerance. No effect once the clock has started."""
        _check_time(now)
        if self._last is None:
            self._last = now

    def heartbeat(self, now: float) -> None:
        """Record a heartbeat received at `now`.

        The gap before it joins the window only if the peer was still
        available: the gap that ends an outage would widen the tolerance for
        the next one (Akka's rule). A heartbeat older than the last one is
        ignored (it was reordered; it says nothing new).
        """
        _check_time(now)
        if not self._heard:
            self._last, self._heard = now, True
            return
        assert self._last is not None
        if now < self._last:
            return
        if self.is_available(now):
            self._record(now - self._last)
        self._last = now

    def phi(self, now: float) -> float:
        _check_time(now)
        if self._last is None:
            return 0.0
        elapsed = max(0.0, now - self._last)
        return phi_of(elapsed, self._mean + self.settings.acceptable_pause_seconds, self._std)

    def is_available(self, now: float) -> bool:
        return self.phi(now) < self.settings.threshold

    def conviction_time(self) -> float | None:
        """When phi reaches the threshold if no heartbeat comes first (to
        within rounding), so a caller can schedule its next look instead of
        polling; None before the clock has started."""
        if self._last is None:
            return None
        mean = self._mean + self.settings.acceptable_pause_seconds
        return self._last + elapsed_for_phi(self.settings.threshold, mean, self._std)

    def _bootstrap(self) -> None:
        first = self.settings.first_interval_seconds
        self._intervals.append(first - first / 4)
        self._record(first + first / 4)

    def _record(self, interval: float) -> None:
        self._intervals.append(interval)
        # Recomputed (two-pass) at each heartbeat instead of running sums:
        # no drift over a long life, and the variance can never go negative.
        count = len(self._intervals)
        mean = math.fsum(self._intervals) / count
        variance = math.fsum((x - mean) ** 2 for x in self._intervals) / count
        self._mean = mean
        self._std = max(math.sqrt(variance), self.settings.min_std_seconds)


class NodeStatus(NamedTuple):
    up: bool
    phi: float


class FailureDetector:
    """Phi accrual detection for every peer a process watches.

    A watched node is up until convicted: `watch(node, now)` starts its clock
    as if it had sent a heartbeat at `now`, so a fresh cluster is usable at
    once and a node that never answers is convicted about
    first_interval_seconds plus the tolerance later (as Cassandra treats
    nodes up until convicted). A heartbeat from a node not watched yet
    watches it. Asking about a node never watched is a KeyError.

    `changes(now)` reports transitions since its last call. Up/down is a
    function of time, so it is sampled there, except that a heartbeat from a
    node that had already passed the threshold is a down-and-up in itself:
    both are reported even if no call saw the node down. For each node the
    reported events therefore alternate, starting with a (node, False).
    """

    def __init__(self, settings: PhiSettings = PhiSettings(), /) -> None:
        self.settings = settings
        self._peers: dict[str, PhiAccrualDetector] = {}
        self._reported_up: dict[str, bool] = {}  # as of the last changes() call
        self._unreported: list[tuple[str, bool]] = []  # outages that ended between calls

    def watched(self) -> tuple[str, ...]:
        return tuple(sorted(self._peers))

    def watch(self, node_id: str, now: float) -> None:
        """Start watching `node_id` (up until convicted); no effect if watched."""
        if node_id not in self._peers:
            self._add(node_id).expect(now)

    def forget(self, node_id: str) -> None:
        """Stop watching `node_id` (it left the cluster); no effect if not watched."""
        self._peers.pop(node_id, None)
        self._reported_up.pop(node_id, None)
        self._unreported = [event for event in self._unreported if event[0] != node_id]

    def heartbeat(self, node_id: str, now: float) -> None:
        detector = self._peers[node_id] if node_id in self._peers else self._add(node_id)
        if self._reported_up[node_id] and not detector.is_available(now):
            self._unreported += [(node_id, False), (node_id, True)]
        detector.heartbeat(now)

    def phi(self, node_id: str, now: float) -> float:
        return self._detector(node_id).phi(now)

    def is_up(self, node_id: str, now: float) -> bool:
        return self._detector(node_id).is_available(now)

    def up_nodes(self, now: float) -> set[str]:
        return {node for node, detector in self._peers.items() if detector.is_available(now)}

    def down_nodes(self, now: float) -> set[str]:
        return {node for node, detector in self._peers.items() if not detector.is_available(now)}

    def status(self, now: float) -> dict[str, NodeStatus]:
        """Every watched node, sorted by id, with its state and phi."""
        result = {}
        for node in sorted(self._peers):
            phi = self._peers[node].phi(now)
            result[node] = NodeStatus(phi < self.settings.threshold, phi)
        return result

    def changes(self, now: float) -> list[tuple[str, bool]]:
        """(node, up) for each node that went down or came back since the
        last call: outages already over first, in the order they ended, then
        the nodes whose state differs now, sorted by id."""
        events, self._unreported = self._unreported, []
        for node in sorted(self._peers):
            up = self._peers[node].is_available(now)
            if up != self._reported_up[node]:
                events.append((node, up))
                self._reported_up[node] = up
        return events

    def _add(self, node_id: str) -> PhiAccrualDetector:
        detector = self._peers[node_id] = PhiAccrualDetector(self.settings)
        self._reported_up[node_id] = True
        return detector

    def _detector(self, node_id: str) -> PhiAccrualDetector:
        try:
            return self._peers[node_id]
        except KeyError:
            raise KeyError(f"node {node_id!r} is not watched; call watch() first") from None
