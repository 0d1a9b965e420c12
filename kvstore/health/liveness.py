"""Which peers are up: heartbeats over the replica links, judged by a phi
accrual failure detector (`kvstore.health.failure_detector`).

Every `interval` seconds each peer gets a ping on the same stream the
replica operations use (`kvstore.rpc.peer_link`), with a short deadline,
from a loop of its own (so a hung peer delays no one else's heartbeats); an
answer is a heartbeat. A peer that stops reading its stream (stuck, or
beyond its bound of operations in flight) stops answering pings too, and is
convicted like one that is gone. The
coordinator asks `is_up` to route around peers the detector has convicted,
and a peer that answers again is up at once. Transitions are logged and
counted; every peer's state and phi are metrics. The loop is owned by this
object's task group and stops on exit.
"""

import logging
from collections.abc import Awaitable, Callable, Mapping

from kvstore.background import Background
from kvstore.clock import SYSTEM_CLOCK, Clock
from kvstore.errors import KVStoreError
from kvstore.health.failure_detector import FailureDetector, NodeStatus, PhiSettings
from kvstore.server.metrics import RequestMetrics
from kvstore.rpc.peers import Peers
from kvstore.schedule import pause

log = logging.getLogger(__name__)

# Heartbeats every 0.5 s; a peer silent for about 4 s is convicted. The 3 s
# acceptable pause (Akka's default) keeps a busy peer from being convicted.
HEARTBEAT_INTERVAL_SECONDS = 0.5
DETECTOR_SETTINGS = PhiSettings(threshold=8.0, min_std_seconds=0.1, acceptable_pause_seconds=3.0,
                                first_interval_seconds=HEARTBEAT_INTERVAL_SECONDS)


class Liveness(Background):
    def __init__(self, peers: Mapping[str, Callable[[], Awaitable[None]]],
                 *, clock: Clock, interval: float = HEARTBEAT_INTERVAL_SECONDS,
                 on_change: Callable[[str, bool], None] = lambda node_id, up: None,
                 on_answer: Callable[[str], None] = lambda node_id: None) -> None:
        """`peers`: node id -> an async function that pings it (raising a
        KVStoreError when it cannot). `on_answer` hears of every answered ping."""
        super().__init__()
        self._pings = dict(peers)
        self._interval = interval
        self._clock = clock
        self._on_change = on_change
        self._on_answer = on_answer
        self._detector = FailureDetector(DETECTOR_SETTINGS)
        now = clock.monotonic()
        for node_id in self._pings:
            self._detector.watch(node_id, now)

    def _start(self) -> None:
        # One loop per peer: a peer that hangs delays only its own heartbeats.
        for node_id in self._pings:
            self._tasks.create_task(self._beat(node_id))

    def is_up(self, node_id: str) -> bool:
        """Unknown ids (this node itself) count as up."""
        if node_id not in self._pings:
            return True
        return self._detector.is_up(node_id, self._clock.monotonic())

    def status(self) -> dict[str, NodeStatus]:
        return self._detector.status(self._clock.monotonic())

    async def _beat(self, node_id: str) -> None:
        while not self._stopping.is_set():
            try:
                await self._pings[node_id]()
            except KVStoreError:
                pass
            else:
                self._detector.heartbeat(node_id, self._clock.monotonic())
                self._on_answer(node_id)
            self._report_changes()
            await pause(self._interval, self._stopping)

    def _report_changes(self) -> None:
        for node_id, up in self._detector.changes(self._clock.monotonic()):
            log.warning("peer %s is %s", node_id, "up again" if up else "down",
                        extra={"peer": node_id, "up": up})
            self._on_change(node_id, up)


def peer_liveness(peers: Peers, metrics: RequestMetrics, timeout: float,
                  clock: Clock = SYSTEM_CLOCK) -> Liveness:
    """Liveness of every peer but this node, pinged over `peers`' links with
    `timeout`, exposed in `metrics`."""
    pingers = peers.pingers(timeout)
    liveness = Liveness(pingers, clock=clock, on_change=metrics.observe_peer_transition,
                        on_answer=metrics.observe_peer_answer)
    metrics.watch_peers(sorted(pingers), liveness.status)
    return liveness
