"""The history of a chaos run: every client operation and every fault action,
timed in seconds (monotonic) since the run began, kept in memory and written
as JSON lines.

Owns the record types, the rule that turns an operation's error into its
outcome (`outcome_of`), and the JSON form. It never judges a history (that is
`chaos.checkers`) and never talks to the cluster.

Outcomes:
- "ok": acknowledged (a read's siblings are kept);
- "fail": a definite error: the store refused the request and applied
  nothing (INVALID_ARGUMENT, FAILED_PRECONDITION, or any error whose
  outcome is "not_applied", such as a write refused because too few
  replicas were up) or, for a read, any error but a timeout;
- "unknown": a write that failed for any other reason, UNAVAILABLE and
  DEADLINE_EXCEEDED included (its origin replica may have applied it before
  the quorum failed: the error's outcome says "unknown", or nothing), and a
  read that timed out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

from kvclient import errors

OK: Final = "ok"
FAIL: Final = "fail"
UNKNOWN: Final = "unknown"
Outcome = Literal["ok", "fail", "unknown"]
OpKind = Literal["get", "put", "delete"]

# A write refused with one of these was not applied anywhere: the origin
# replica checks them before it adds the write (see kvstore.leaderless.coordinator).
_NOT_APPLIED = (errors.InvalidArgument, errors.FailedPrecondition)

FINAL_READER = -1  # the `client` of the checker's own reads at the end


@dataclass(frozen=True)
class Op:
    """One client operation, from invocation to completion."""

    client: int
    kind: OpKind
    key: str
    value: str | None  # puts only
    invoke: float
    complete: float
    outcome: Outcome
    siblings: tuple[str, ...] | None = None  # reads that succeeded
    error: str | None = None  # "CODE: message" when it failed
    # Writes: the causal context passed with it (hex of the client's opaque
    # bytes); empty for a blind write.
    context: str = ""
    # How many replicas it asked for (r of a get, w of a write; 0: the
    # default), and for a write whether it refused stand-ins (strict quorum).
    replicas: int = 0
    strict: bool = False
    # Leader mode (None elsewhere): a read's version; the version an
    # acknowledged write made; for a compare-and-set refused with
    # VersionMismatch, its current_version. And a compare-and-set's
    # if_version (0: only if absent). See chaos.linearizability.
    version: int | None = None
    if_version: int | None = None

    @property
    def is_write(self) -> bool:
        return self.kind != "get"

    @property
    def with_context(self) -> bool:
        return bool(self.context)


@dataclass(frozen=True)
class FaultEvent:
    """One action of the nemesis: kill, restart, pause, resume, healthy."""

    action: str
    fault: str  # the fault's kind: "kill", "pause", "kill-coordinator"
    target: str  # process id, e.g. "n3" or "c1"
    time: float
    detail: str = ""


def outcome_of(kind: OpKind, error: BaseException) -> Outcome:
    """What a failed operation tells about its effect (see the module docstring)."""
    if kind == "get":
        return UNKNOWN if isinstance(error, errors.DeadlineExceeded) else FAIL
    if isinstance(error, _NOT_APPLIED) or getattr(error, "outcome", None) == "not_applied":
        return FAIL
    return UNKNOWN


def describe_error(error: BaseException) -> str:
    if isinstance(error, errors.KVError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def text(data: bytes) -> str:
    """Values in the history are text; anything else shows escaped (and is
    then a value no put wrote)."""
    return data.decode("utf-8", "backslashreplace")


class History:
    """Records operations and faults; `now()` is the run's clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self.ops: list[Op] = []
        self.faults: list[FaultEvent] = []

    def now(self) -> float:
        return self._clock() - self._start

    def add(self, op: Op) -> None:
        self.ops.append(op)

    def fault(self, action: str, fault: str, target: str, detail: str = "") -> FaultEvent:
        event = FaultEvent(action, fault, target, self.now(), detail)
        self.faults.append(event)
        return event

    def write_jsonl(self, path: Path) -> None:
        """Every entry, in time order (operations by completion)."""
        entries = [(op.complete, _op_json(op)) for op in self.ops]
        entries += [(event.time, {"type": "fault", **asdict(event)}) for event in self.faults]
        entries.sort(key=lambda entry: entry[0])
        with open(path, "w") as out:
            for _, entry in entries:
                out.write(json.dumps(entry) + "\n")


def _op_json(op: Op) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "op", **asdict(op)}
    if op.siblings is not None:
        entry["siblings"] = list(op.siblings)
    return entry


def load_jsonl(path: Path) -> tuple[list[Op], list[FaultEvent]]:
    """Read back a history written by `History.write_jsonl`."""
    ops: list[Op] = []
    faults: list[FaultEvent] = []
    with open(path) as lines:
        for line in lines:
            entry = json.loads(line)
            kind = entry.pop("type")
            if kind == "op":
                if entry.get("siblings") is not None:
                    entry["siblings"] = tuple(entry["siblings"])
                ops.append(Op(**entry))
            else:
                faults.append(FaultEvent(**entry))
    return ops, faults
