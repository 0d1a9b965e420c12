"""Hinted handoff, the replaying half: hand the hints this node keeps for
peers that were down back to them once they are up again.

Every `interval` seconds the stored hints are walked in arrival order, a
batch at a time (at most `REPLAY_CHUNK` hints and `batch_bytes` of them,
one larger hint alone: so hints of large values are never all in memory at
once); each whose target the failure detector holds up is merged into the
target (at most `rate_per_second` hints a second, so a returning node is
not flooded), and deleted here only after the target acknowledged it
durably. A hint whose
target is still down, or does not answer, stays for the next round. The
storing half is `LocalReplica.store_hint`, reached through the coordinator's
sloppy quorum.
"""

import asyncio
import logging
from collections.abc import Callable

from kvstore.background import Background
from kvstore.clock import Clock
from kvstore.errors import KVStoreError
from kvstore.leaderless.hints import ReplayLimiter
from kvstore.leaderless.peer_ops import PeerOps
from kvstore.leaderless.replica import LocalReplica, record_state
from kvstore.schedule import pause
from kvstore.storage.engine import Hint

log = logging.getLogger(__name__)

REPLAY_CHUNK = 32  # hints handed over concurrently at most
DEFAULT_BATCH_BYTES = 1024 * 1024  # and their bytes, unless one alone is more


class HintReplayer(Background):
    def __init__(self, replica: LocalReplica, ops: PeerOps, is_up: Callable[[str], bool], *,
                 clock: Clock, rate_per_second: float, interval: float = 1.0,
                 batch_bytes: int = DEFAULT_BATCH_BYTES,
                 on_replayed: Callable[[int], None] = lambda count: None) -> None:
        super().__init__()
        self._replica = replica
        self._ops = ops
        self._is_up = is_up
        self._interval = interval
        self._batch_bytes = batch_bytes
        self._clock = clock
        self._on_replayed = on_replayed
        self._limiter = ReplayLimiter(rate_per_second, max(1.0, min(rate_per_second, 500.0)))

    def _start(self) -> None:
        self._tasks.create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping.is_set():
            if self._replica.hint_book.all_pending():
                await self.replay_once()
            await pause(self._interval, self._stopping)

    async def replay_once(self) -> int:
        """One walk over the stored hints; how many were handed over."""
        replayed, after = 0, -1
        while not self._stopping.is_set() and (
                hints := self._replica.hints(after, REPLAY_CHUNK, self._batch_bytes)):
            after = hints[-1].seq
            ready = [hint for hint in hints if self._is_up(hint.target)]
            if not ready:
                continue
            wait = self._limiter.wait_time(self._clock.monotonic(), len(ready))
            await pause(wait, self._stopping)
            if self._stopping.is_set():
                break
            self._limiter.take(self._clock.monotonic(), len(ready))
            done = await asyncio.gather(*(self._hand_over(hint) for hint in ready))
            replayed += sum(done)
        if replayed:
            log.info("handed %d hints over", replayed)
            self._on_replayed(replayed)
        return replayed

    async def _hand_over(self, hint: Hint) -> bool:
        try:
            await self._ops.merge(hint.target, hint.key, record_state(hint.record))  # type: ignore[arg-type]
        except KVStoreError as exc:
            log.debug("hint %d for %s not handed over yet: %s", hint.seq, hint.target, exc)
            return False
        await self._replica.remove_hint(hint)
        return True
