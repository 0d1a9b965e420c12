"""How long a request takes, estimated as TCP estimates a retransmission
timeout (RFC 6298): a moving average of answered requests' latencies plus
four times their moving mean deviation, so a tail well above the average is
allowed for. One estimator for both sides: the client's view of its attempts
(retry.py) and a server's admission control (kvstore/rpc/admission.py).
Pure: the caller measures and passes the seconds."""


class LatencyEstimate:
    def __init__(self, latency_weight: float, deviation_weight: float) -> None:
        self._latency_weight = latency_weight
        self._deviation_weight = deviation_weight
        self.latency = 0.0  # seconds: the moving average
        self.deviation = 0.0  # seconds: the moving mean distance from it
        self._seen = False

    @property
    def expected(self) -> float:
        """Seconds a request started now should be given to be answered
        (0 before any was answered: nothing is held against it)."""
        return self.latency + 4 * self.deviation

    def observe(self, seconds: float) -> None:
        """A request was answered `seconds` after it was sent."""
        if not self._seen:  # the first sample (RFC 6298 2.2)
            self._seen = True
            self.latency, self.deviation = seconds, seconds / 2
            return
        self.deviation += self._deviation_weight * (abs(seconds - self.latency) - self.deviation)
        self.latency += self._latency_weight * (seconds - self.latency)
