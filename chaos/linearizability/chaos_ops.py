"""The chaos suite's history (`chaos.history.Op`, which the real runs and
the simulation both record) as the linearizability check's operations.

A leader-mode read has one value or none; a read with siblings belongs to
the leaderless mode, where linearizability is not promised, and is refused
with an error that says so. The checker's own final reads (client
`FINAL_READER`) are reads like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

from chaos.history import OK, Op
from chaos.linearizability.register import MalformedHistory, RegisterOp


def register_ops(ops: Iterable[Op]) -> list[RegisterOp]:
    return [register_op(op) for op in ops]


def register_op(op: Op) -> RegisterOp:
    value = op.value
    if op.kind == "get":
        siblings = op.siblings or ()
        if len(siblings) > 1:
            raise MalformedHistory(
                f"key {op.key!r}, client {op.client}'s get at {op.invoke:.3f} s returned "
                f"{len(siblings)} siblings: linearizability is checked in leader mode only, "
                "where a read returns one value or none")
        value = siblings[0] if siblings and op.outcome == OK else None
    return RegisterOp(op.key, op.kind, op.invoke, op.complete, op.outcome, value,
                      op.version, op.if_version, op.client)
