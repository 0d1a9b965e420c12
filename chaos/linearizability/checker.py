"""The linearizability check of a history of leader-mode operations: one
search per key, within a time budget per key, and a report.

Per key because linearizability is local (Herlihy & Wing): a history is
linearizable when the history of each object in it is, so a history of
10,000 operations over 20 keys is 20 searches of 500, not one of 10,000.

For each key: validate its operations, keep those that take part
(`RegisterOp.takes_part`), bound each unknown write by the last
operation that could observe it, leaving out those nothing could
(`unobserved`), search from the initial state (absent). When the
search finds no linearization, find the failing point and the smallest
window that shows it (`window`), within a second budget of the same length.
A search that runs out of budget makes the key "unknown", never
"linearizable".

Pure but for the clock it is given, which only measures the budget.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from chaos.linearizability.register import (INITIAL, REGISTER, RegisterOp, RegisterState,
                                            validate)
from chaos.linearizability.report import (LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, KeyResult,
                                          KeyVerdict, Report, Violation)
from chaos.linearizability.search import Item, Verdict, search
from chaos.linearizability.unobserved import horizons
from chaos.linearizability.window import Searcher, Window, smallest_window

Clock = Callable[[], float]

DEFAULT_SECONDS_PER_KEY = 10.0


def check(ops: Iterable[RegisterOp], *, seconds_per_key: float = DEFAULT_SECONDS_PER_KEY,
          clock: Clock = time.monotonic) -> Report:
    """Check every key's history; raises MalformedHistory (a ValueError) for
    an operation no store could have reported, before searching anything."""
    if not seconds_per_key > 0:
        raise ValueError(f"seconds_per_key must be positive, not {seconds_per_key!r}")
    by_key: dict[str, list[RegisterOp]] = defaultdict(list)
    for op in ops:
        validate(op)
        by_key[op.key].append(op)
    return Report(tuple(check_key(key, by_key[key], seconds_per_key, clock)
                        for key in sorted(by_key)))


def check_key(key: str, ops: Sequence[RegisterOp], seconds: float, clock: Clock) -> KeyResult:
    """One key's verdict; `ops` are all of that key's operations, valid."""
    started = clock()
    taking_part = [op for op in ops if op.takes_part]
    horizon = horizons(taking_part)
    dropped = [op for index, op in enumerate(taking_part) if horizon.get(index) == -math.inf]
    items = [as_item(op, horizon.get(index, math.inf)) for index, op in enumerate(taking_part)
             if horizon.get(index) != -math.inf]
    result = search(items, INITIAL, REGISTER, _out_of_time(clock, started + seconds))
    violation, note = None, ""
    if result.verdict is Verdict.OUT_OF_BUDGET:
        note = f"the search ran out of its {seconds:g} s budget after {result.steps:,} steps"
    elif result.verdict is Verdict.NOT_LINEARIZABLE:
        window = smallest_window(items, _searcher(clock, clock() + seconds))
        if not window.smallest:
            note = (f"finding the smallest window ran out of its {seconds:g} s budget: "
                    "this one may be larger")
        left_out = [op for op in ops if not op.takes_part and op.kind != "get"] + dropped
        violation = Violation(window, _context(window, left_out))
    return KeyResult(key, _VERDICTS[result.verdict], len(ops), len(items), result.steps,
                     clock() - started, violation, note)


_VERDICTS: dict[Verdict, KeyVerdict] = {Verdict.LINEARIZABLE: LINEARIZABLE,
                                        Verdict.NOT_LINEARIZABLE: NOT_LINEARIZABLE,
                                        Verdict.OUT_OF_BUDGET: UNKNOWN}


def as_item(op: RegisterOp, horizon: float = math.inf) -> Item[RegisterOp]:
    """An operation as the search takes it: one of unknown outcome is
    optional, and may take effect at any time after its call, until its
    `horizon` (see `unobserved`)."""
    if op.outcome == "unknown":
        return Item(op, op.invoke, horizon, False)
    return Item(op, op.invoke, op.complete, True)


def _out_of_time(clock: Clock, deadline: float) -> Callable[[], bool]:
    return lambda: clock() > deadline


def _searcher(clock: Clock, deadline: float) -> Searcher:
    def searcher(items: Sequence[Item[RegisterOp]], start: RegisterState) -> Verdict:
        return search(items, start, REGISTER, _out_of_time(clock, deadline)).verdict
    return searcher


def _context(window: Window, left_out: Sequence[RegisterOp]) -> tuple[tuple[RegisterOp, str], ...]:
    """The left-out writes whose recorded times overlap the window's."""
    start = -math.inf if window.start is None else window.start
    end = window.failing.complete
    return tuple((op, "" if op.outcome == "fail" else "nothing could observe it")
                 for op in left_out if op.complete >= start and op.invoke <= end)
