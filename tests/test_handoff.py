"""Hint replay, the handing over half of hinted handoff: hints go to their
target a batch at a time, bounded in count and in bytes (a hint larger
than the bound alone), each deleted once its target took it."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from kvstore.causality import versions
from kvstore.causality.hlc import HybridLogicalClock
from kvstore.clock import SYSTEM_CLOCK
from kvstore.causality.versions import DVVSet
from kvstore.leaderless.handoff import REPLAY_CHUNK, HintReplayer
from kvstore.leaderless.replica import LocalReplica
from kvstore.storage.memory_engine import MemoryEngine
from kvstore.storage.store import Store

pytestmark = pytest.mark.timeout(20)

NOW_MS = 1_800_000_000_000


class TargetReplica:
    """The target's side of `PeerOps.merge`: takes each hint, and records how
    many, and how many bytes of them, were on their way at once."""

    def __init__(self) -> None:
        self.received: dict[bytes, DVVSet] = {}
        self._in_flight: list[int] = []
        self.moments: list[tuple[int, int]] = []  # (hints, bytes) on their way, at each send

    async def merge(self, node_id: str, key: bytes, state: DVVSet, request_id: bytes = b"",
                    hint_for: str = "") -> None:
        size = len(key) + len(versions.encode(state))
        self._in_flight.append(size)
        self.moments.append((len(self._in_flight), sum(self._in_flight)))
        await asyncio.sleep(0)  # the answer comes later, after the others were sent
        self._in_flight.remove(size)
        self.received[key] = state


@pytest.fixture
async def replica() -> AsyncIterator[LocalReplica]:
    async with Store(MemoryEngine(clock_ms=lambda: NOW_MS)) as store:
        yield LocalReplica("n1", store, HybridLogicalClock(lambda: NOW_MS), 8)


def _state(value: bytes) -> DVVSet:
    return versions.update(None, versions.VersionVector(), "n9", value, False, NOW_MS)


async def test_hints_are_handed_over_in_batches_bounded_in_count_and_bytes(
        replica: LocalReplica) -> None:
    sizes = [300_000] * 6 + [2_000_000] + [100] * 80  # one over the bound, and many small
    for index, size in enumerate(sizes):
        await replica.store_hint("n2", b"k%d" % index, _state(b"v" * size))
    target = TargetReplica()
    bound = 1_000_000
    replayer = HintReplayer(replica, target, lambda node_id: True,  # type: ignore[arg-type]
                            clock=SYSTEM_CLOCK, rate_per_second=1_000_000, batch_bytes=bound)
    assert await replayer.replay_once() == len(sizes)
    assert set(target.received) == {b"k%d" % i for i in range(len(sizes))}
    assert replica.hints() == []  # each deleted once its target had it
    assert max(count for count, _ in target.moments) == REPLAY_CHUNK  # the small ones
    # Never more than the bound at once, but for the large hint, which went alone.
    assert all(size <= bound for count, size in target.moments if count > 1)
    assert (1, len(b"k6") + len(versions.encode(_state(b"v" * 2_000_000)))) in target.moments
