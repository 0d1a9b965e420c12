"""The search for a linearization of one object's history: Wing & Gong's
algorithm with Lowe's memo, as porcupine (anishathalye/porcupine,
`checkSingle`) runs it, over any sequential specification given as a step
function.

The history is a list of calls and returns in time order (at equal times
calls first, so operations that touch count as concurrent: the lenient
reading, which never invents a violation). The operations that may take
effect next are the calls before the first return still in the list; the
search takes one whose step succeeds, removes its call and return, and
starts again from the head; at a return it has not reached it backtracks,
undoing the last choice.

Required operations must take effect once, between call and return.
Optional ones may take effect once or never: a write of unknown outcome
(no return: at any time after its call), or, at the start of a window cut
out of a history, one that may have taken effect before the window (with a
return: reaching it, the search may give the operation up, as a choice it
can undo). The search succeeds as soon as every required one took effect.

Which candidate first, at each configuration: a read whose step leaves
the state exactly as it is goes first, without a choice (`_PRESERVING`):
some order takes it first if any order works, so concurrent reads are not
tried in every order. Then the other required ones; then the optional
ones, so that an unknown write is tried only where the required ones are
stuck (otherwise every pending one would be taken, and undone, at every
step). A step after which a pending required operation can never take
effect (`Model.viable`) is not taken: the dead end shows at once, not at
that operation's return after everything in between was tried in every
order.

The memo (Lowe): a configuration is the set of operations taken or given
up, and the state; what remains to search depends on nothing else, so a
configuration met before is not entered again. That bounds the work by the
number of configurations, not of orders. And a configuration in which an
optional operation was done is not entered when the same one without it
failed (`_Memo`): each unknown write taken and then overwritten would
otherwise double the configurations of an exhaustive search.

Pure: no I/O; time only through the `out_of_time` callback it is given.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Op = TypeVar("Op")
State = TypeVar("State", bound=Hashable)

# How many steps between two looks at the budget: a look is cheap, but not free.
CHECK_EVERY = 256


class Verdict(enum.Enum):
    LINEARIZABLE = "linearizable"
    NOT_LINEARIZABLE = "not linearizable"
    OUT_OF_BUDGET = "out of budget"


@dataclass(frozen=True, slots=True)
class Item(Generic[Op]):
    """One operation as the search sees it; `complete` is math.inf for an
    optional operation that may take effect at any time after its call."""

    op: Op
    invoke: float
    complete: float
    required: bool


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    steps: int  # loop iterations: a measure of the work, independent of the machine


# How a frame's operation was done: taken as a choice, given up at its
# return, or taken without a choice (it left the state as it was).
_TAKEN, _GIVEN_UP, _FORCED = 0, 1, 2
# What the scan of a configuration's candidates looks for, in turn.
_PRESERVING, _REQUIRED, _OPTIONAL = 0, 1, 2


@dataclass(frozen=True)
class Model(Generic[State, Op]):
    """A sequential specification, as the search uses it.

    `step(state, op)`: the state after `op` takes effect in `state`, or None
    when it cannot.
    `viable(state, op)`, if given: False only when `op` can take effect
    neither in `state` nor in any state reachable from it; a step that
    leaves a pending required operation not viable is not taken.
    `read_only(op)`: whether `op` never changes the state, but at most
    settles what the state left open and it sees (a read), in a model where
    a state that leaves more open allows whatever a more settled one does.
    One whose step leaves the state exactly as it is is taken without a
    choice."""

    step: Callable[[State, Op], State | None]
    viable: Callable[[State, Op], bool] | None = None
    read_only: Callable[[Op], bool] = lambda op: False


def search(items: Sequence[Item[Op]], start: State, model: Model[State, Op],
           out_of_time: Callable[[], bool] = lambda: False) -> Result:
    """Whether some order of `items`, consistent with their times, takes every
    required one (and any optional ones) through `model.step` from `start`."""
    links = _Links(items)
    required = [item.required for item in items]
    ops = [item.op for item in items]
    step, viable = model.step, model.viable
    observes = [model.read_only(op) for op in ops]
    bits = [1 << index for index in range(len(items))]
    required_left = sum(required)
    if not required_left:
        return Result(Verdict.LINEARIZABLE, 0)
    nxt, entry_op, is_return = links.nxt, links.entry_op, links.is_return
    memo = _Memo(start, bits)
    frames: list[tuple[int, State, int]] = []  # (operation, the state before it, how)
    state, done = start, 0
    phase, entry, backtrack = _PRESERVING, nxt[0], False
    steps = 0
    while True:
        steps += 1
        if steps % CHECK_EVERY == 0 and out_of_time():
            return Result(Verdict.OUT_OF_BUDGET, steps)
        if backtrack:
            if not frames:
                return Result(Verdict.NOT_LINEARIZABLE, steps)
            index, state, how = frames.pop()
            memo.leave(index)
            done ^= bits[index]
            links.unlift(index)
            if required[index]:
                required_left += 1
            if how == _TAKEN:  # try the next candidate after it
                backtrack = False
                phase = _REQUIRED if required[index] else _OPTIONAL
                entry = nxt[links.call_entry[index]]
            continue  # given up or forced: that configuration had no other choice
        if is_return[entry]:
            if phase != _OPTIONAL:
                phase, entry = phase + 1, nxt[0]
                continue
            index = entry_op[entry]
            if index >= 0 and not required[index] and memo.enter(done | bits[index], state,
                                                                 index):
                # Give it up: it took effect before the window, or never.
                frames.append((index, state, _GIVEN_UP))
                done |= bits[index]
                links.lift(index)
                phase, entry = _PRESERVING, nxt[0]
                continue
            backtrack = True
            continue
        index = entry_op[entry]
        if phase == _PRESERVING:
            # A read that leaves the state as it is can go first in any order
            # that takes it later (nothing it must follow is pending, and where
            # it was, it at most settled what the state left open: the others
            # there do as well without that). So taking it now is no choice,
            # and orders of concurrent reads are not tried. Not so a write that
            # changes nothing now: later it may.
            if observes[index] and step(state, ops[index]) == state:
                if not memo.enter(done | bits[index], state, -1 if required[index] else index):
                    backtrack = True  # every order from here goes through one that failed
                    continue
                frames.append((index, state, _FORCED))
                done |= bits[index]
                links.lift(index)
                if required[index]:
                    required_left -= 1
                    if not required_left:
                        return Result(Verdict.LINEARIZABLE, steps)
                entry = nxt[0]
                continue
        elif required[index] == (phase == _REQUIRED):
            after = step(state, ops[index])
            if after is not None and viable is not None:
                # A dead end found now rather than at that operation's return,
                # after everything taken in between was tried in every order.
                pending = nxt[0]
                while not is_return[pending]:
                    other = entry_op[pending]
                    if other != index and required[other] and not viable(after, ops[other]):
                        after = None
                        break
                    pending = nxt[pending]
            if after is not None and memo.enter(done | bits[index], after,
                                                 -1 if required[index] else index):
                frames.append((index, state, _TAKEN))
                state, done = after, done | bits[index]
                links.lift(index)
                if required[index]:
                    required_left -= 1
                    if not required_left:
                        return Result(Verdict.LINEARIZABLE, steps)
                phase, entry = _PRESERVING, nxt[0]
                continue
        entry = nxt[entry]


class _Memo(Generic[State]):
    """The configurations met: those on the current path, and those whose
    every continuation failed (any other met).

    Lowe's memo, and one more rule: a configuration is dominated by the one
    with an optional operation of it not done, and the same state. From
    there the search could give that operation up and continue the same
    way, so when that one failed (it is met and not on the path) this one
    fails too."""

    def __init__(self, start: State, bits: Sequence[int]) -> None:
        root = (0, start)
        self._bits = bits
        self._met = {root}
        self._path = [root]
        self._on_path = {root}
        self._optional_done: list[int] = []  # the optional operations in `done`, in order

    def enter(self, done: int, state: State, optional: int) -> bool:
        """Whether the configuration (`done`, `state`), reached by doing
        `optional` (-1 when the operation done is required), is new and not
        dominated by one that failed; if so it is now on the path."""
        key = (done, state)
        if key in self._met:
            return False
        self._met.add(key)
        if optional >= 0:
            self._optional_done.append(optional)
        for other in self._optional_done:
            smaller = (done ^ self._bits[other], state)
            if smaller in self._met and smaller not in self._on_path:
                if optional >= 0:
                    self._optional_done.pop()
                return False
        self._path.append(key)
        self._on_path.add(key)
        return True

    def leave(self, index: int) -> None:
        """Back from the configuration the last `enter` put on the path."""
        self._on_path.discard(self._path.pop())
        if self._optional_done and self._optional_done[-1] == index:
            self._optional_done.pop()


class _Links(Generic[Op]):
    """The calls and returns as a doubly linked list over arrays (entry 0 is
    the head, the last entry a tail that acts as a return), from which an
    operation's two entries are lifted and put back in reverse order, as in
    dancing links."""

    def __init__(self, items: Sequence[Item[Op]]) -> None:
        events = [(item.invoke, 0, index) for index, item in enumerate(items)]
        events += [(item.complete, 1, index) for index, item in enumerate(items)
                   if item.complete != math.inf]
        events.sort()
        count = len(events) + 2
        self.nxt = list(range(1, count + 1))
        self.prv = list(range(-1, count - 1))
        self.entry_op = [-1] + [index for _, _, index in events] + [-1]
        self.is_return = [False] + [kind == 1 for _, kind, _ in events] + [True]
        self.call_entry = [0] * len(items)
        self.return_entry = [-1] * len(items)
        for entry, (_, kind, index) in enumerate(events, start=1):
            (self.return_entry if kind else self.call_entry)[index] = entry

    def lift(self, index: int) -> None:
        self._unlink(self.call_entry[index])
        if self.return_entry[index] >= 0:
            self._unlink(self.return_entry[index])

    def unlift(self, index: int) -> None:
        if self.return_entry[index] >= 0:
            self._relink(self.return_entry[index])
        self._relink(self.call_entry[index])

    def _unlink(self, entry: int) -> None:
        before, after = self.prv[entry], self.nxt[entry]
        self.nxt[before] = after
        self.prv[after] = before

    def _relink(self, entry: int) -> None:
        self.nxt[self.prv[entry]] = entry
        self.prv[self.nxt[entry]] = entry
