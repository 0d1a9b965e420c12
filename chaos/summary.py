"""What a chaos run reports: the summary's figures, whether the run passed,
and its two forms (lines for people, JSON in DIR/summary.json).

Owns the pass rule: no acknowledged write lost, no value read that was never
written, nothing an acknowledged write's context covered back among the
final siblings, every key readable at the end, the Merkle roots of every
partition's replicas equal within the timeout without any read, every
replica of every key holding the same state after the final reads, and no
process crashed on its own. It computes nothing from the
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
                            SupersededReport, duplicate_dots)
from chaos.convergence import Convergence, RootConvergence
from chaos.counters import RunCounters
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
    resurrected: int  # final siblings an acknowledged write's context had covered
    context_writes: int  # acknowledged writes that passed a context
    superseded_checked_keys: int
    duplicate_siblings: int  # reads that returned one put's value twice
    duplicates_at_end: int  # keys whose agreed final state holds a value twice
    roots_converged: bool  # every partition's replicas reported one Merkle root in time
    roots_converge_seconds: float  # from every process healthy to equal roots (or giving up)
    partitions: int
    partitions_with_keys: int  # roots not the empty tree's: where equality proves something
    partitions_differing_at_start: list[int]  # at the first look at the roots
    partitions_differing_at_end: list[int]  # when the wait gave up
    root_polls: int
    keys_agree: bool  # every replica of every key holds one state after the final reads
    keys_agree_seconds: float  # from the start of the final reads
    divergent_at_start: int  # keys whose replicas differed when the workload stopped
    divergent_at_end: list[str]
    repair_rounds: int  # rounds of r=all reads after the final reads
    final_read_mismatches: list[str]  # keys whose r=all read differs from the agreed state
    unknown_horizon: float
    # The processes' counters, summed over every process and lifetime until
    # the roots agreed (chaos.counters: what a kill may leave uncounted).
    hints_written: int
    hints_replayed: int
    anti_entropy_exchanges: int
    anti_entropy_keys_repaired: int
    read_repairs: int  # replicas brought up to date by read repair
    tombstones_purged: int
    counted_lifetimes: int
    uncounted_lifetimes: list[str]  # counters not read (before a kill, or at the end)
    counters_by_process: dict[str, dict[str, int]]
    lost_examples: list[dict[str, Any]] = field(default_factory=list)
    never_written_examples: list[dict[str, Any]] = field(default_factory=list)
    resurrected_examples: list[dict[str, Any]] = field(default_factory=list)
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)
    data_dir: str = ""

    @property
    def converged(self) -> bool:
        return self.roots_converged and self.keys_agree

    @property
    def passed(self) -> bool:
        return (self.lost == 0 and self.never_written == 0 and self.resurrected == 0
                and self.converged
                and not self.unread_keys and not self.crashed)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "converged": self.converged, "passed": self.passed}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def lines(self) -> list[str]:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
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
            f"came back      {self.resurrected} (final siblings that {self.context_writes} "
            f"acknowledged writes with a context had replaced, on "
            f"{self.superseded_checked_keys} keys)",
            f"duplicates     {self.duplicate_siblings} read(s) returned one put's value twice; "
            f"{self.duplicates_at_end} key(s) still hold one twice at the end",
            f"converged      {self._roots_line()}",
            f"keys agree     {self._keys_line()}",
            f"hints          written {self.hints_written}, replayed {self.hints_replayed}",
            f"anti-entropy   {self.anti_entropy_keys_repaired} key(s) repaired in "
            f"{self.anti_entropy_exchanges} exchange(s); {self.tombstones_purged} "
            f"tombstone(s) purged",
            f"read repair    {self.read_repairs} replica(s) brought up to date by the "
            f"workload's reads",
            f"counted        {self.counted_lifetimes} process lifetime(s), until the roots "
            f"agreed" + (f"; NOT counted: {', '.join(self.uncounted_lifetimes)}"
                         if self.uncounted_lifetimes else ""),
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
        for example in self.resurrected_examples:
            lines.append(f"CAME BACK      {example}")
        for example in self.duplicate_examples:
            lines.append(f"DUPLICATE      {example}")
        lines.append(f"result         {'PASS' if self.passed else 'FAIL'}")
        return lines

    def _roots_line(self) -> str:
        at_start = len(self.partitions_differing_at_start)
        if self.roots_converged:
            return (f"Merkle roots equal on every replica of all {self.partitions} partitions "
                    f"({self.partitions_with_keys} holding keys) "
                    f"{self.roots_converge_seconds:.2f} s after every process was healthy, with "
                    f"no reads ({at_start} partition(s) differed at the first look)")
        differing = self.partitions_differing_at_end
        return (f"NO: the Merkle roots of {len(differing)} of {self.partitions} partition(s) "
                f"still differ {self.roots_converge_seconds:.0f} s after every process was "
                f"healthy ({at_start} differed at the first look): "
                + ", ".join(str(p) for p in differing[:10]))

    def _keys_line(self) -> str:
        if self.keys_agree:
            return (f"every replica of every key holds the same state after the final r=all "
                    f"reads ({self.divergent_at_start} key(s) differed when the workload "
                    f"stopped; {self.repair_rounds} more round(s) of r=all reads)")
        return (f"NO: {len(self.divergent_at_end)} key(s) still differ "
                f"{self.keys_agree_seconds:.0f} s after the final reads began: "
                + ", ".join(self.divergent_at_end[:10]))


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
                 superseded: SupersededReport,
                 duplicates: list[DuplicateSibling], roots: RootConvergence,
                 convergence: Convergence, counters: RunCounters,
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
        resurrected=len(superseded.resurrected), context_writes=superseded.context_writes,
        superseded_checked_keys=superseded.checked_keys,
        resurrected_examples=examples(superseded.resurrected),
        duplicate_siblings=len(duplicates),
        duplicates_at_end=len(at_end),
        duplicate_examples=examples(duplicates) + examples(at_end),
        roots_converged=roots.converged, roots_converge_seconds=round(roots.seconds, 3),
        partitions=roots.partitions, partitions_with_keys=roots.with_keys,
        partitions_differing_at_start=roots.differing_at_start,
        partitions_differing_at_end=roots.differing_at_end, root_polls=roots.polls,
        keys_agree=convergence.converged, keys_agree_seconds=round(convergence.seconds, 3),
        divergent_at_start=len(convergence.divergent_at_start),
        divergent_at_end=convergence.divergent_at_end, repair_rounds=convergence.repair_rounds,
        final_read_mismatches=mismatches(final, convergence.final_values),
        unknown_horizon=unknown_horizon,
        **counters.totals(),  # type: ignore[arg-type]  # its keys are int fields (COUNTERS)
        counted_lifetimes=counters.lifetimes,
        uncounted_lifetimes=list(counters.unread),
        counters_by_process={process: dict(totals)
                             for process, totals in sorted(counters.by_process.items())},
        lost_examples=examples(lost.lost), never_written_examples=examples(never.never_written),
    )
