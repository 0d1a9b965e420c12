"""What a chaos run reports: the summary's figures, whether the run passed,
and its two forms (lines for people, JSON in DIR/summary.json).

Owns the pass rule: no acknowledged write lost, no value read that was never
written, every key readable at the end, every replica of every key
converged, and no process crashed on its own. It computes nothing from the
cluster; `chaos.run` fills it in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos.checkers import (DuplicateSibling, LostWritesReport, NeverWrittenReport,
                            duplicate_dots)
from chaos.convergence import Convergence
from chaos.history import FAIL, FINAL_READER, OK, UNKNOWN, Op

EXAMPLES = 10  # violations listed in full; the counts are always complete


@dataclass(frozen=True)
class Summary:
    seed: int
    duration: float
    faults_until: float
    nodes: int
    coordinators: int
    replicas: int
    r: str
    w: str
    clients: int
    keys: int  # contended keys
    write_once_keys: int
    keys_read: int  # keys whose final state was read (contended and write-once)
    crashed: list[str]  # processes that exited on their own during the run
    operations: int
    ok: int
    failed: int
    unknown: int
    acknowledged: int  # writes (puts and deletes) acknowledged
    acknowledged_puts: int
    reads_ok: int
    slowest_op_seconds: float
    errors: dict[str, int]  # "put UNAVAILABLE" -> count
    faults: dict[str, int]  # kind -> count
    lost: int
    checked_puts: int
    checked_keys: int
    unread_keys: list[str]
    never_written: int
    values_read: int
    duplicate_siblings: int  # reads that returned one put's value twice
    duplicates_at_end: int  # keys whose agreed final state holds a value twice
    converged: bool
    converge_seconds: float
    convergence_via: str
    divergent_at_start: int
    divergent_at_end: list[str]
    repair_rounds: int
    final_read_mismatches: list[str]  # keys whose r=all read differs from the agreed state
    unknown_horizon: float
    lost_examples: list[dict[str, Any]] = field(default_factory=list)
    never_written_examples: list[dict[str, Any]] = field(default_factory=list)
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    data_dir: str = ""

    @property
    def passed(self) -> bool:
        return (self.lost == 0 and self.never_written == 0 and self.converged
                and not self.unread_keys and not self.crashed)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def lines(self) -> list[str]:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
        if self.converged:
            converged = (f"in {self.converge_seconds:.2f} s after the workload stopped, "
                         f"via {self.convergence_via} ({self.divergent_at_start} key(s) differed "
                         f"when it stopped: repaired by the final r=all reads, then "
                         f"{self.repair_rounds} more round(s) of them)")
        else:
            converged = (f"NO: {len(self.divergent_at_end)} key(s) still differ after "
                         f"{self.converge_seconds:.0f} s: {', '.join(self.divergent_at_end[:10])}")
        errors = ", ".join(f"{what} {n}" for what, n in
                           sorted(self.errors.items(), key=lambda e: -e[1])) or "none"
        lines = [
            f"chaos run: seed {self.seed}, {self.duration:g} s (faults until "
            f"{self.faults_until:g} s), {self.nodes} nodes + {self.coordinators} coordinator(s), "
            f"N={self.replicas} R={self.r} W={self.w}, {self.clients} clients on "
            f"{self.keys} keys (+{self.write_once_keys} written once)",
            f"operations     {self.operations} (ok {self.ok}, failed {self.failed}, "
            f"unknown {self.unknown}); slowest {self.slowest_op_seconds:.2f} s",
            f"acknowledged   {self.acknowledged} writes ({self.acknowledged_puts} puts); "
            f"reads ok {self.reads_ok}",
            f"errors         {errors}",
            f"faults         {sum(self.faults.values())}: {faults}",
            f"lost           {self.lost} (checked {self.checked_puts} of "
            f"{self.acknowledged_puts} acknowledged puts, on {self.checked_keys} of "
            f"{self.keys_read} keys read at the end; unknown writes count until "
            f"{self.unknown_horizon:g} s after they ended)",
            f"never written  {self.never_written} (of {self.values_read} values read)",
            f"duplicates     {self.duplicate_siblings} read(s) returned one put's value twice; "
            f"{self.duplicates_at_end} key(s) still hold one twice at the end",
            f"converged      {converged}",
        ]
        if self.crashed:
            lines.append(f"CRASHED        {', '.join(self.crashed)}")
        if self.unread_keys:
            lines.append(f"unreadable     {len(self.unread_keys)} key(s) could not be read at "
                         f"r=all: {', '.join(self.unread_keys[:10])}")
        if self.final_read_mismatches:
            lines.append(f"note           the r=all read of {len(self.final_read_mismatches)} "
                         "key(s) differs from the state the replicas agreed on: "
                         + ", ".join(self.final_read_mismatches[:10]))
        for example in self.lost_examples:
            lines.append(f"LOST           {example}")
        for example in self.never_written_examples:
            lines.append(f"NEVER WRITTEN  {example}")
        for example in self.duplicate_examples:
            lines.append(f"DUPLICATE      {example}")
        lines.append(f"result         {'PASS' if self.passed else 'FAIL'}")
        return lines


@dataclass(frozen=True)
class OpCounts:
    operations: int
    ok: int
    failed: int
    unknown: int
    acknowledged: int
    acknowledged_puts: int
    reads_ok: int
    slowest: float
    errors: dict[str, int]


def count_ops(ops: Iterable[Op]) -> OpCounts:
    """Figures of the workload's operations (the checker's own reads left out)."""
    mine = [op for op in ops if op.client != FINAL_READER]
    outcomes = Counter(op.outcome for op in mine)
    errors = Counter(f"{op.kind} {_code(op.error)}" for op in mine if op.error)
    return OpCounts(
        operations=len(mine), ok=outcomes[OK], failed=outcomes[FAIL], unknown=outcomes[UNKNOWN],
        acknowledged=sum(op.is_write and op.outcome == OK for op in mine),
        acknowledged_puts=sum(op.kind == "put" and op.outcome == OK for op in mine),
        reads_ok=sum(op.kind == "get" and op.outcome == OK for op in mine),
        slowest=max((op.complete - op.invoke for op in mine), default=0.0),
        errors=dict(errors),
    )


def _code(error: str) -> str:
    return error.split(":", 1)[0]


def mismatches(final: Mapping[str, list[str] | None], agreed: Mapping[str, list[str]]) -> list[str]:
    return sorted(key for key, values in agreed.items()
                  if final.get(key) is not None and sorted(final[key] or []) != sorted(values))


def examples(items: Iterable[object]) -> list[dict[str, Any]]:
    return [asdict(item) for item in list(items)[:EXAMPLES]]  # type: ignore[call-overload]


def from_reports(head: Mapping[str, Any], counts: OpCounts, faults: Mapping[str, int],
                 lost: LostWritesReport, never: NeverWrittenReport,
                 duplicates: list[DuplicateSibling], convergence: Convergence,
                 final: Mapping[str, list[str] | None], unknown_horizon: float) -> Summary:
    """`head`: the run's settings (seed, duration, faults_until, nodes, ...)."""
    at_end = duplicate_dots(convergence.agreed)
    return Summary(
        **head,
        operations=counts.operations, ok=counts.ok, failed=counts.failed,
        unknown=counts.unknown, acknowledged=counts.acknowledged,
        acknowledged_puts=counts.acknowledged_puts, reads_ok=counts.reads_ok,
        slowest_op_seconds=round(counts.slowest, 3), errors=counts.errors, faults=dict(faults),
        lost=len(lost.lost), checked_puts=lost.checked_puts, checked_keys=lost.checked_keys,
        keys_read=sum(siblings is not None for siblings in final.values()),
        unread_keys=sorted(key for key, siblings in final.items() if siblings is None),
        never_written=len(never.never_written), values_read=never.values_read,
        duplicate_siblings=len(duplicates),
        duplicates_at_end=len(at_end),
        duplicate_examples=examples(duplicates) + examples(at_end),
        converged=convergence.converged, converge_seconds=round(convergence.seconds, 3),
        convergence_via="read repair",
        divergent_at_start=len(convergence.divergent_at_start),
        divergent_at_end=convergence.divergent_at_end, repair_rounds=convergence.repair_rounds,
        final_read_mismatches=mismatches(final, convergence.final_values),
        unknown_horizon=unknown_horizon,
        lost_examples=examples(lost.lost), never_written_examples=examples(never.never_written),
    )
