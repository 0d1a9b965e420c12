"""Admission control: how many KV requests, and how many bytes of them, a
process (and each KV.Session stream) has in flight, and the refusal of one
more beyond either bound.

A request is admitted or refused at once, before any work is done for it:
a refusal is `Overloaded` (RESOURCE_EXHAUSTED, reason OVERLOADED, outcome
not_applied, with a retry delay), which the client retries with backoff.
Queueing instead would let latency grow with the load without bound; a
refusal costs one small answer, and the requests admitted keep their
latency (Little's law: at most `max_requests` in flight, each served at
the rate the process manages).

A request larger than a bytes bound is still admitted when nothing else
holds bytes under that bound, so a value at the size limit always goes
through, as a message of one item does.

While a gate is at least half full, a request whose deadline is nearer
than what requests take now is refused too: admitted, it would most likely
end DEADLINE_EXCEEDED, an outcome the client cannot tell from a write that
applied, after holding a place others could have used. Refused, its client
learns at once that the process is overloaded. What requests take is
estimated as TCP estimates a retransmission timeout (RFC 6298): a moving
average of the latest answered requests' latencies plus four times their
moving mean deviation, so a tail well above the average is allowed for.

Pure: no I/O, no clock; the caller counts the refusals (`on_refused`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from kvclient.latency import LatencyEstimate
from kvstore.errors import Overloaded

# The names of the bounds, as in the refusal's `bound` field and the
# kvstore_requests_refused_total metric.
PROCESS_REQUESTS = "max_requests_in_flight"
PROCESS_BYTES = "max_request_bytes_in_flight"
SESSION_REQUESTS = "session_max_in_flight"
SESSION_BYTES = "session_max_bytes_in_flight"
EXPECTED_LATENCY = "expected_latency"


@dataclass(frozen=True)
class AdmissionLimits:
    max_requests: int = 512  # requests in flight in the process
    max_bytes: int = 64 * 1024 * 1024  # bytes of their requests
    session_max_requests: int = 256  # operations in flight on one KV.Session stream
    session_max_bytes: int = 64 * 1024 * 1024  # bytes of them
    retry_after: float = 0.05  # seconds, the refusal's RetryInfo

    def __post_init__(self) -> None:
        for name in ("max_requests", "max_bytes", "session_max_requests", "session_max_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 <= self.retry_after <= 60:
            raise ValueError(f"retry_after must be 0..60 seconds, got {self.retry_after}")


class Gate:
    """One pair of bounds (requests and bytes in flight) and what holds them."""

    __slots__ = ("max_requests", "max_bytes", "requests_bound", "bytes_bound", "requests",
                 "bytes")

    def __init__(self, max_requests: int, max_bytes: int, requests_bound: str,
                 bytes_bound: str) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests_bound = requests_bound  # the bounds' names, for refusals
        self.bytes_bound = bytes_bound
        self.requests = 0
        self.bytes = 0

    def exceeded(self, cost: int) -> str | None:
        """The name of the bound one more request of `cost` bytes would pass, if any."""
        if self.requests >= self.max_requests:
            return self.requests_bound
        if self.bytes and self.bytes + cost > self.max_bytes:
            return self.bytes_bound
        return None

    def describe(self, bound: str) -> str:
        if bound == self.requests_bound:
            return f"{self.requests} requests in flight, {bound}={self.max_requests}"
        return f"{self.bytes} bytes of requests in flight, {bound}={self.max_bytes}"


class Ticket:
    """An admitted request's hold on its gates: `release()` once it is
    answered. Work that outlives the answer (a write's replication past W)
    takes a `hold()` of its own and calls it when done: the gates let go
    when the request and every hold are done, so what a process keeps in
    memory for its requests is what the bounds count."""

    __slots__ = ("_gates", "_cost", "_holds")

    def __init__(self, gates: tuple[Gate, ...], cost: int) -> None:
        self._gates = gates
        self._cost = cost
        self._holds = 1  # the request itself
        for gate in gates:
            gate.requests += 1
            gate.bytes += cost

    def hold(self) -> Callable[[], None]:
        """One more piece of work on the request; call the result when it is done."""
        self._holds += 1
        done = False

        def let_go() -> None:
            nonlocal done
            if not done:
                done = True
                self._let_go()

        return let_go

    def release(self) -> None:
        """The request is answered (call once)."""
        self._let_go()

    def _let_go(self) -> None:
        self._holds -= 1
        if self._holds == 0:
            for gate in self._gates:
                gate.requests -= 1
                gate.bytes -= self._cost
            self._gates = ()


class Admission:
    """The process's gate, and one per KV.Session stream (`session_gate()`)."""

    def __init__(self, limits: AdmissionLimits = AdmissionLimits(),
                 on_refused: Callable[[str], None] = lambda bound: None) -> None:
        self.limits = limits
        self.process = Gate(limits.max_requests, limits.max_bytes, PROCESS_REQUESTS,
                            PROCESS_BYTES)
        self._on_refused = on_refused
        # What answered requests took (weights smoother than RFC 6298's 1/8
        # and 1/4, so a burst moves it little).
        self.answered = LatencyEstimate(latency_weight=0.05, deviation_weight=0.1)
        self.observe_latency = self.answered.observe  # a request was answered after `seconds`

    @property
    def expected_latency(self) -> float:
        """Seconds a request admitted now should be given to be answered."""
        return self.answered.expected

    def session_gate(self) -> Gate:
        return Gate(self.limits.session_max_requests, self.limits.session_max_bytes,
                    SESSION_REQUESTS, SESSION_BYTES)

    def admit(self, cost: int, session: Gate | None = None,
              deadline: float | None = None) -> Ticket:
        """A ticket for a request of `cost` bytes with `deadline` seconds left
        (None: no deadline), or `Overloaded` naming the bound it would pass
        (the stream's own first, then the process's, then its deadline)."""
        gates = (self.process,) if session is None else (session, self.process)
        for gate in gates:
            bound = gate.exceeded(cost)
            if bound is not None:
                self._refuse(f"{gate.describe(bound)}", bound)
        if (deadline is not None and deadline < self.expected_latency
                and any(2 * gate.requests >= gate.max_requests for gate in gates)):
            self._refuse(f"requests may take {self.expected_latency * 1000:.0f} ms now and this "
                         f"one's deadline is {deadline * 1000:.0f} ms away", EXPECTED_LATENCY)
        return Ticket(gates, cost)

    def _refuse(self, why: str, bound: str) -> NoReturn:
        self._on_refused(bound)
        raise Overloaded(
            f"overloaded: {why}; retry after a backoff (the client does), send to another "
            "address, or raise the bound if the process has the memory and CPU for it",
            bound=bound, retry_after=self.limits.retry_after,
            expected_latency=self.expected_latency)
