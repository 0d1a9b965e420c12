"""Where a key's history stops being linearizable, and the smallest window
of it that shows why: what a report of a violation prints.

The failing point: the first return (of a required operation) by which the
history so far has no linearization. The history so far is the operations
called by then; those that have not returned yet are pending: optional,
their result unseen (a write may have applied, at some version; a read or a
refusal changes nothing and is left out). Every such prefix of a
linearizable history is linearizable, so the first failing one is found by
bisection, and the operation whose return it ends at is the one that cannot
be linearized.

The window from a time s: the operations of that prefix called at or after
s, and, optional, those called before s that had not returned by s (they
may have taken effect before the window, or in it), from `ANYTHING`. Cut a
linearization of the history where the first operation called at or after
s takes effect: before is some state, after is a linearization of the
window; so a window that has none proves the history has none. A later s
proves less with fewer operations, so the latest s whose window has none is
found by bisection too. When even the whole prefix has a linearization from
`ANYTHING` (a read of a value never written needs the key's initial state),
the window is the prefix, from `INITIAL`.

Pure: no I/O; a search that runs out of budget counts as "not shown", so
the window stays one that was shown to have no linearization, only perhaps
not the smallest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from chaos.linearizability.register import ANYTHING, INITIAL, RegisterOp, RegisterState
from chaos.linearizability.search import Item, Verdict
from chaos.linearizability.unobserved import horizons

# Searches one window: items, start state -> verdict (within some budget).
Searcher = Callable[[Sequence[Item[RegisterOp]], RegisterState], Verdict]
# A position in the history's time order: (time, 0 for a call or 1 for a return,
# the operation's index), calls first at equal times, as the search orders them.
Position = tuple[float, int, int]


@dataclass(frozen=True)
class Member:
    """An operation of a window: as recorded, and as searched."""

    op: RegisterOp
    searched: Item[RegisterOp]


@dataclass(frozen=True)
class Window:
    failing: RegisterOp
    members: tuple[Member, ...]  # by call time
    start: float | None  # the window's first call time; None: from the key's initial state
    smallest: bool  # False: a search ran out of budget, a smaller window may exist


def smallest_window(items: Sequence[Item[RegisterOp]], searcher: Searcher) -> Window:
    """For `items` (one key's history, which has no linearization from
    INITIAL), the failing point and the smallest window that shows it."""
    shown = _Shown(searcher)
    cuts = sorted((item.complete, 1, index) for index, item in enumerate(items) if item.required)
    assert cuts, "a history with no required operation is linearizable"
    first, last = 0, len(cuts) - 1  # the whole history is known to fail
    while first < last:
        middle = (first + last) // 2
        if shown(prefix_until(items, cuts[middle]), INITIAL):
            last = middle
        else:
            first = middle + 1
    cut = cuts[last]
    prefix = prefix_until(items, cut)
    failing = items[cut[2]]
    starts = sorted({member.searched.invoke for member in prefix
                     if member.searched.invoke <= failing.invoke})
    # The first start whose window is not shown to fail; the one before it is the latest that is.
    low, high = 0, len(starts)
    while low < high:
        middle = (low + high) // 2
        if shown(window_from(prefix, starts[middle]), ANYTHING):
            low = middle + 1
        else:
            high = middle
    if low == 0:
        return Window(failing.op, _by_call(prefix), None, not shown.ran_out)
    return Window(failing.op, _by_call(window_from(prefix, starts[low - 1])), starts[low - 1],
                  not shown.ran_out)


class _Shown:
    """Whether a window was shown to have no linearization; remembers
    whether any search ran out of budget."""

    def __init__(self, searcher: Searcher) -> None:
        self._searcher = searcher
        self.ran_out = False

    def __call__(self, members: Sequence[Member], start: RegisterState) -> bool:
        verdict = self._searcher([member.searched for member in members], start)
        self.ran_out |= verdict is Verdict.OUT_OF_BUDGET
        return verdict is Verdict.NOT_LINEARIZABLE


def prefix_until(items: Sequence[Item[RegisterOp]], cut: Position) -> list[Member]:
    """The history up to the return at `cut`: what was called by then, with
    what had not returned yet pending."""
    members = []
    for index, item in enumerate(items):
        if (item.invoke, 0, index) > cut:
            continue
        if item.complete != math.inf and (item.complete, 1, index) <= cut:
            members.append(Member(item.op, item))
        elif (pending := _pending(item.op)) is not None:
            members.append(Member(item.op, Item(pending, item.invoke, math.inf, False)))
    return _bounded(members)


def _pending(op: RegisterOp) -> RegisterOp | None:
    """`op` before its return: a write that may apply, at a version not yet
    seen; a read or a refusal, which change nothing, not at all."""
    if op.kind == "get" or op.is_refusal:
        return None
    return replace(op, outcome="unknown", version=None) if op.outcome == "ok" else op


def window_from(prefix: Sequence[Member], start: float) -> list[Member]:
    """The window from `start`. A read (or refusal) that may have been
    before it is left out: one that may be left out never helps an order
    (it changes nothing, and only settles what it sees)."""
    members = []
    for member in prefix:
        if member.searched.invoke >= start:
            members.append(member)
        elif member.searched.complete >= start and member.op.kind != "get" \
                and not member.op.is_refusal:
            members.append(Member(member.op, replace(member.searched, required=False)))
    return _bounded(members)


def _bounded(members: Sequence[Member]) -> list[Member]:
    """Each write of unknown outcome (a pending one included) bounded anew
    by the last of these operations that could observe it, as the whole
    history bounds them (`unobserved.horizons`; among fewer operations, a
    pending write's bound is no longer its return), and left out when
    none could."""
    horizon = horizons([member.searched.op for member in members])
    bounded = []
    for index, member in enumerate(members):
        last = min(horizon.get(index, math.inf), member.searched.complete)
        if last == -math.inf:
            continue
        bounded.append(member if last == member.searched.complete
                       else Member(member.op, replace(member.searched, complete=last)))
    return bounded


def _by_call(members: Sequence[Member]) -> tuple[Member, ...]:
    return tuple(sorted(members, key=lambda member: member.searched.invoke))
