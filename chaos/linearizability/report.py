"""What the linearizability check says: a verdict per key, the overall one,
and for a key that is not linearizable the window that shows it, in lines a
person reads.

The overall verdict is "not linearizable" when any key is (that is a proof,
whatever the others say), else "unknown" when any key's search ran out of
budget, else "linearizable": a check that did not finish never passes.

Pure: formatting only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from chaos.linearizability.register import RegisterOp, describe
from chaos.linearizability.window import Window

LINEARIZABLE: Final = "linearizable"
NOT_LINEARIZABLE: Final = "not linearizable"
UNKNOWN: Final = "unknown"
KeyVerdict = Literal["linearizable", "not linearizable", "unknown"]

# Lines of a window printed in full; a longer one (it needs the key's whole
# history) shows its first and last operations.
WINDOW_LINES = 40


@dataclass(frozen=True)
class Violation:
    window: Window
    # Operations left out of the search that fall within the window's time:
    # writes that failed (never applied) and unknown writes nothing could
    # observe. Shown so that a reader does not wonder about them.
    context: tuple[tuple[RegisterOp, str], ...] = ()


@dataclass(frozen=True)
class KeyResult:
    key: str
    verdict: KeyVerdict
    operations: int  # on this key, as recorded
    searched: int  # of them, those the search ordered
    steps: int  # the search's work, machine-independent
    seconds: float
    violation: Violation | None = None
    note: str = ""  # why the verdict is unknown, or why the window may not be the smallest


@dataclass(frozen=True)
class Report:
    keys: tuple[KeyResult, ...]

    @property
    def verdict(self) -> KeyVerdict:
        verdicts = {key.verdict for key in self.keys}
        for verdict in (NOT_LINEARIZABLE, UNKNOWN):
            if verdict in verdicts:
                return verdict
        return LINEARIZABLE

    @property
    def passed(self) -> bool:
        return self.verdict == LINEARIZABLE

    def of(self, key: str) -> KeyResult:
        for result in self.keys:
            if result.key == key:
                return result
        raise KeyError(f"the history has no operation on key {key!r}")

    @property
    def violations(self) -> list[KeyResult]:
        return [key for key in self.keys if key.verdict == NOT_LINEARIZABLE]

    def describe(self) -> str:
        counts = {verdict: sum(key.verdict == verdict for key in self.keys)
                  for verdict in (LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN)}
        operations = sum(key.operations for key in self.keys)
        lines = [f"linearizability: {self.verdict.upper()} ({_count(len(self.keys), 'key')}: "
                 + ", ".join(f"{count} {verdict}" for verdict, count in counts.items())
                 + f"; {_count(operations, 'operation')})"]
        for key in self.keys:
            if key.verdict == UNKNOWN:
                lines.append(f"key {key.key!r}: unknown: {key.note}")
            elif key.violation is not None:
                lines += describe_violation(key.key, key.violation)
                if key.note:
                    lines.append(f"  ({key.note})")
        return "\n".join(lines)


def describe_violation(key: str, violation: Violation) -> list[str]:
    window = violation.window
    failing = window.failing
    origin = "from any state of the key" if window.start is not None \
        else "from the key's initial state (absent)"
    lines = [f"key {key!r}: not linearizable at {describe(failing)} {_times(failing)}",
             f"  no order of these {_count(len(window.members), 'operation')}, {origin}, "
             "explains them",
             "  (! cannot be linearized, ? may or may not take effect, - left out of the search):"]
    rows = [(member.searched.invoke, _row(member.op, _mark(member.op, member.searched.required,
                                                           failing),
                                          _role(member.op, member.searched.required, window)))
            for member in window.members]
    rows += [(op.invoke, _row(op, "-", role)) for op, role in violation.context]
    rows.sort(key=lambda row: row[0])
    shown = [row for _, row in rows]
    if len(shown) > WINDOW_LINES:
        half = WINDOW_LINES // 2
        shown = shown[:half] + [f"    ... {len(shown) - 2 * half} more ..."] + shown[-half:]
    return lines + shown


def _mark(op: RegisterOp, required: bool, failing: RegisterOp) -> str:
    if op is failing:
        return "!"
    return " " if required else "?"


def _role(op: RegisterOp, required: bool, window: Window) -> str:
    if required:
        return ""
    if op.outcome == "unknown":
        return "may take effect at any time after its call, or never"
    if window.start is not None and op.invoke < window.start:
        return "may have taken effect before the window"
    return "had not returned yet: may take effect, its result unseen"


def _row(op: RegisterOp, mark: str, role: str) -> str:
    return f"  {mark} {_times(op)} {describe(op)}" + (f"   ({role})" if role else "")


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def _times(op: RegisterOp) -> str:
    gave_up = "gave up at " if op.outcome == "unknown" else ""
    return f"[{op.invoke:.3f}, {gave_up}{op.complete:.3f}]"
