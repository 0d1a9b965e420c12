"""A linearizability checker for leader mode: every key a register with a
value and a version, read with get, written with put and delete, compared
and set with if_version; operations acknowledged, failed, or of unknown
outcome.

    report = check(register_ops(history.ops))   # chaos.history.Op records
    report.verdict            # "linearizable", "not linearizable" or "unknown"
    print(report.describe())  # per failing key: the operation that cannot be
                              # linearized and the smallest window that shows it

Modules, one job each: `register` (the sequential specification: states,
operations, step), `search` (Wing & Gong's search with Lowe's memo, as
porcupine runs it, for any step function), `unobserved` (the unknown
writes the search may leave out), `window` (the failing point and the
smallest window that shows it), `checker` (per key, within a time budget),
`report` (verdicts and their text), `chaos_ops` (from the chaos suite's
`Op`).
"""

from chaos.linearizability.chaos_ops import register_op, register_ops
from chaos.linearizability.checker import DEFAULT_SECONDS_PER_KEY, check
from chaos.linearizability.register import MalformedHistory, RegisterOp
from chaos.linearizability.report import (LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, KeyResult,
                                          Report, Violation)

__all__ = [
    "DEFAULT_SECONDS_PER_KEY", "LINEARIZABLE", "NOT_LINEARIZABLE", "UNKNOWN", "KeyResult",
    "MalformedHistory", "RegisterOp", "Report", "Violation", "check", "register_op",
    "register_ops",
]
