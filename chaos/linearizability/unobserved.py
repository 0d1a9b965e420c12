"""Until when a write of unknown outcome can matter to a key's history: the
last return of an operation that could observe it. The search treats it as
pending until then (and may give it up there), not for ever; one that
nothing could observe it leaves out.

A write of unknown outcome may take effect or not, so giving it up never
invents an order. It hides none: take an order that takes the write after
the last operation that could observe it (any order that takes it after
that operation returned does). What follows it, until the next write, sees
its effect; nothing there observes it, so nothing is there, and the next
write does not depend on it (a blind write needs only a version above the
floor, which an unknown write leaves alone). Dropping it from that order
leaves an order that works. What could observe it:
- a put of value X, unknown, made X at its own (unrecorded) version: a read
  of X, or a compare-and-set or refusal naming a version that no
  acknowledged write made and no read saw, and that is above every version
  acknowledged before the put was called; only until an operation returns
  with a version above that one. One naming another version cannot be
  about this put: versions are log indexes, two writes never share one,
  the model holds the versions it settles to that by making them grow
  strictly, and the put's is above those acknowledged before it was called
  (or before it took effect).
- a delete, unknown, left the key absent: a read of absence, or a
  compare-and-set or refusal naming version 0.
In each case only an operation that returns after the write was called can
come after it. A compare-and-set of unknown outcome that does not apply
changes nothing, and an order takes it only where it applies.

This matters for speed: each unknown write pending may double the
configurations of a search that has to be exhaustive (a history that is not
linearizable), and in a chaos run most unknown writes are never read.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence

from chaos.linearizability.register import RegisterOp


def horizons(ops: Sequence[RegisterOp]) -> dict[int, float]:
    """For each write of unknown outcome among `ops` (one key's operations
    that take part), by index: the last return of an operation that could
    observe it; -math.inf when none could, math.inf when one of unknown
    outcome could (it may take effect at any time)."""
    versions = _Versions(ops)
    last_read: dict[str | None, float] = defaultdict(lambda: -math.inf)
    last_absence_seen = -math.inf
    unseen_named: list[tuple[int, float]] = []  # (version, until when it could be seen)
    for op in ops:
        until = math.inf if op.outcome == "unknown" else op.complete
        if op.kind == "get":
            last_read[op.value] = max(last_read[op.value], until)
            continue
        named = op.version if op.is_refusal else op.if_version
        if named == 0:
            last_absence_seen = max(last_absence_seen, until)
        elif named is not None and named not in versions.seen:
            unseen_named.append((named, min(until, versions.overtaken(named))))
    last_absence_seen = max(last_absence_seen, last_read[None])
    found = {}
    for index, op in enumerate(ops):
        if op.outcome != "unknown":
            continue
        if op.kind == "delete":
            last = last_absence_seen
        else:
            floor = versions.floor_at(op.invoke)
            last = max([last_read[op.value]]
                       + [until for version, until in unseen_named if version > floor])
        found[index] = last if last >= op.invoke else -math.inf
    return found


class _Versions:
    """The versions acknowledged operations made or saw, and when."""

    def __init__(self, ops: Sequence[RegisterOp]) -> None:
        acknowledged = [(op.complete, op.version) for op in ops
                        if op.outcome == "ok" and op.version]
        self.seen = {version for _, version in acknowledged}
        by_time = sorted(acknowledged)
        self._times = [complete for complete, _ in by_time]
        self._highest = list(itertools.accumulate((version for _, version in by_time), max,
                                                  initial=0))
        by_version = sorted(acknowledged, key=lambda pair: pair[1])
        self._versions = [version for _, version in by_version]
        self._earliest_from = list(itertools.accumulate(
            (complete for complete, _ in reversed(by_version)), min,
            initial=math.inf))[::-1]

    def floor_at(self, time: float) -> int:
        """The highest version acknowledged before `time`: a write called
        then makes one above it."""
        return self._highest[bisect.bisect_left(self._times, time)]

    def overtaken(self, version: int) -> float:
        """When an acknowledged operation first returned with a version above
        `version`: a write taking effect after that makes one above it too."""
        return self._earliest_from[bisect.bisect_right(self._versions, version)]
