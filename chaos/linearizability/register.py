"""A key in leader mode as a sequential specification: the operations on it
(`RegisterOp`), its states (`RegisterState`), and `step`, which says whether
an operation can take effect in a state and which state it leaves.

A key holds a value and a version: the index, in its partition's log, of
the write that made it (0: absent). A key's versions grow with every write,
but not one by one, since other keys share the log; so the model asks only
that a write's version be above every version the key had (`floor`), and
that a read or a compare-and-set see the version of the write it follows.

What a history leaves unsaid stays open in the state until an operation
observes it, and that operation settles it (one that sees something else
cannot take effect there, so settling loses no order):
- a write of unknown outcome, or one whose version was not recorded, made
  *some* version above `floor`: `version` is None;
- at the start of a window cut out of a history (`ANYTHING`), the key may
  hold anything, absent included.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from chaos.linearizability.search import Model

Kind = Literal["get", "put", "delete"]
Outcome = Literal["ok", "fail", "unknown"]
KINDS: Final = ("get", "put", "delete")
OUTCOMES: Final = ("ok", "fail", "unknown")


class MalformedHistory(ValueError):
    """An operation no store could have reported; says which and why."""


@dataclass(frozen=True, slots=True)
class RegisterOp:
    """One operation on one key, from call to return.

    `value`: a put's value; an acknowledged get's result (None: absent).
    `version`: an acknowledged get's version; an acknowledged write's
    version (a delete's may be 0, the key's version after it); for a
    compare-and-set refused with VersionMismatch, the current version it
    named. None where it was not recorded (never for a refusal, whose only
    information it is).
    `outcome`: "ok"; "fail" (not applied); "unknown" (may take effect at any
    time after `invoke`, even after `complete`, when the client gave up).
    """

    key: str
    kind: Kind
    invoke: float
    complete: float
    outcome: Outcome
    value: str | None = None
    version: int | None = None
    if_version: int | None = None
    client: int = 0

    @property
    def is_refusal(self) -> bool:
        """A compare-and-set refused with the key's current version."""
        return self.outcome == "fail" and self.version is not None

    @property
    def takes_part(self) -> bool:
        """Whether it constrains the order: reads that answered, writes that
        applied or may have, and refusals (they saw a version). A failed or
        timed-out read, and a write refused before it applied, tell nothing."""
        if self.kind == "get":
            return self.outcome == "ok"
        return self.outcome != "fail" or self.is_refusal


def validate(op: RegisterOp) -> None:
    """Raise MalformedHistory when `op` is not something a store could report."""
    why = _problem(op)
    if why is not None:
        raise MalformedHistory(f"key {op.key!r}, {describe(op)} at {op.invoke!r}: {why}")


def _problem(op: RegisterOp) -> str | None:
    if op.kind not in KINDS or op.outcome not in OUTCOMES:
        return f"the kind must be one of {KINDS} and the outcome one of {OUTCOMES}"
    if not (math.isfinite(op.invoke) and math.isfinite(op.complete)) \
            or op.complete < op.invoke:
        return "its times must be finite, and its return not before its call"
    for name in ("version", "if_version"):
        number = getattr(op, name)
        if number is not None and (type(number) is not int or number < 0):
            return f"{name} must be a non-negative int, not {number!r}"
    return _get_problem(op) if op.kind == "get" else _write_problem(op)


def _get_problem(op: RegisterOp) -> str | None:
    if op.if_version is not None:
        return "a get has no if_version"
    if op.outcome != "ok" and (op.value is not None or op.version is not None):
        return "a get that did not answer has no result"
    if op.value is None and op.version not in (None, 0):
        return "an absent key's version is 0"
    if op.value is not None and op.version == 0:
        return "a key that holds a value has a version above 0"
    return None


def _write_problem(op: RegisterOp) -> str | None:
    if (op.kind == "put") != isinstance(op.value, str):
        return "a put has a value (a str) and a delete none"
    if op.outcome == "unknown" and op.version is not None:
        return "a write of unknown outcome has no version"
    if op.outcome == "fail" and op.version is not None and op.if_version is None:
        return "only a compare-and-set is refused with a current version"
    if op.kind == "put" and op.outcome == "ok" and op.version == 0:
        return "a put makes a version above 0"
    return None


class _Anything:
    """The value of a key nothing has been seen of yet."""

    def __repr__(self) -> str:
        return "ANY"


ANY: Final = _Anything()


class RegisterState(NamedTuple):
    value: str | None | _Anything  # None: absent
    version: int | None  # 0 iff absent; None: not known yet (above floor, or any if ANY)
    floor: int  # every later write makes a version above this


INITIAL: Final = RegisterState(None, 0, 0)
ANYTHING: Final = RegisterState(ANY, None, 0)


def step(state: RegisterState, op: RegisterOp) -> RegisterState | None:
    """The state after `op` takes effect in `state` (for a write of unknown
    outcome: after it applies), or None when it cannot take effect there.
    Only for operations that take part (`RegisterOp.takes_part`)."""
    if op.kind == "get":
        return _read(state, op.value, op.version)
    if op.outcome == "fail":  # refused: it saw another version, and changed nothing
        assert op.version is not None
        return None if op.version == op.if_version else _holding_version(state, op.version)
    if op.if_version is not None:
        settled = _holding_version(state, op.if_version)
        if settled is None:
            return None
        state = settled
    made = op.version if op.outcome == "ok" else None
    if op.kind == "put":
        assert op.value is not None
        if made is None:
            return RegisterState(op.value, None, state.floor)
        return RegisterState(op.value, made, made) if made > state.floor else None
    if not made:  # a delete whose own index was not recorded (or reported as 0, absent)
        return RegisterState(None, 0, state.floor)
    return RegisterState(None, 0, made) if made > state.floor else None


def read_only(op: RegisterOp) -> bool:
    """A read or a refusal: it changes no state, only settles what it sees."""
    return op.kind == "get" or op.is_refusal


def viable(state: RegisterState, op: RegisterOp) -> bool:
    """False when `op` can take effect in no state reachable from `state`
    (see `search.search`): the floor never goes down, and once a version is
    overwritten no state holds it again, so a write whose version is not
    above the floor, or an operation that needs a version below it (or at
    it, no longer held), is a dead end. Absence (version 0) can come back."""
    if op.kind != "get" and op.outcome == "ok" and op.version:
        if op.version <= state.floor:
            return False
    needed = op.version if op.kind == "get" or op.is_refusal else op.if_version
    return not needed or needed > state.floor or needed == state.version


def _holding_version(state: RegisterState, version: int) -> RegisterState | None:
    """`state` as seen holding `version` (0: absent), or None if it cannot."""
    if version == 0:
        if state.version == 0:
            return state
        if state.value is ANY and state.version is None:
            return RegisterState(None, 0, state.floor)
        return None
    if state.version is None:
        return RegisterState(state.value, version, version) if version > state.floor else None
    return state if state.version == version else None


def _read(state: RegisterState, value: str | None, version: int | None) -> RegisterState | None:
    if value is None:
        return _holding_version(state, 0)
    if version is not None:
        settled = _holding_version(state, version)
        if settled is None:
            return None
        state = settled
    elif state.version == 0:
        return None
    if state.value is ANY:
        return state._replace(value=value)
    return state if state.value == value else None


# The specification as the search takes it.
REGISTER: Final = Model[RegisterState, RegisterOp](step, viable, read_only)


def describe(op: RegisterOp) -> str:
    """One line a person reads: who, what, and what came back."""
    what = op.kind if op.kind != "put" else f"put {op.value!r}"
    if op.if_version is not None:
        what += f" if version {op.if_version}"
    if op.outcome == "unknown":
        result = "outcome unknown"
    elif op.is_refusal:
        result = f"refused: version is {op.version}"
    elif op.outcome == "fail":
        result = "failed, not applied" if op.kind != "get" else "failed"
    elif op.kind == "get":
        result = "absent" if op.value is None else repr(op.value)
        if op.value is not None and op.version is not None:
            result += f" (version {op.version})"
    else:
        result = "ok" if op.version is None else f"version {op.version}"
    return f"client {op.client}: {what} -> {result}"

