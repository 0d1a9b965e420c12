"""The judge of a leader-mode run's history: each linearizable read
against the order Raft applied the writes (the oracle's record), each
acknowledged put against the log, and the whole history against
`chaos.linearizability`, with a budget counted in search steps.

Pure: the oracle's record and the history in, problems (lines a person
reads) out.
"""

import itertools
from collections.abc import Callable

from chaos.history import FINAL_READER, OK, Op
from chaos.linearizability import NOT_LINEARIZABLE, UNKNOWN, check, register_ops
from chaos.linearizability.register import MalformedHistory
from chaos.linearizability.report import describe_violation
from chaos.sim.leader.oracle import RaftOracle
from kvstore.leader import commands
from kvstore.leader.commands import Put

# The linearizability search's budget per key, in looks at the budget
# (one per 256 search steps): machine-independent, so a seed's verdict is too.
SEARCH_LOOKS_PER_KEY = 4_000


def read_problems(oracle: RaftOracle, group: int, op: Op) -> list[str]:
    value = op.siblings[0].encode() if op.siblings else None
    low, high, states = oracle.states_between(group, op.key.encode(), op.invoke, op.complete)
    if (op.version, value) in states:
        return []
    allowed = ", ".join(dict.fromkeys(
        "absent" if v is None else f"{v.decode()!r} (version {n})" for n, v in states))
    got = "absent" if value is None else f"{value.decode()!r} (version {op.version})"
    return [f"stale read: client {op.client}'s get {op.key} at {op.invoke:.3f}s returned {got}; "
            f"in the order Raft applied the writes (index {low} applied before the call, "
            f"{high} by the answer) it could be {allowed}"]


def put_problems(oracle: RaftOracle, group: int, op: Op) -> list[str]:
    assert op.version is not None
    applied = oracle.applied_entry(group, op.version)
    if applied is not None and applied[1]:
        command = commands.decode(applied[1])
        if (isinstance(command, Put) and command.key.decode() == op.key
                and command.value.decode() == op.value):
            return []
    return [f"acknowledged put not in the log: client {op.client}'s put {op.key}={op.value} "
            f"was acknowledged with version {op.version}, but no node applied it at "
            f"{op.version} of partition {group}"]


def linearizability_problems(history: list[Op],
                              looks_per_key: float = SEARCH_LOOKS_PER_KEY) -> list[str]:
    # The checker's clock counts its looks at the budget: a deterministic budget.
    looks = itertools.count()
    clock: Callable[[], float] = lambda: float(next(looks))  # noqa: E731
    try:
        report = check(register_ops(history), seconds_per_key=looks_per_key, clock=clock)
    except MalformedHistory as exc:
        return [f"the history is malformed: {exc}"]
    problems = []
    for key in report.keys:
        if key.verdict == NOT_LINEARIZABLE:
            assert key.violation is not None
            first, *rest = describe_violation(key.key, key.violation)
            first = first.replace(f"key {key.key!r}: not linearizable at ",
                                  f"not linearizable: key {key.key}, at ")
            problems.append("\n".join([first] + [f"    {line}" for line in rest]))
        elif key.verdict == UNKNOWN:
            problems.append(f"linearizability unknown (counted as a failure): key {key.key}: "
                            f"{key.note}")
    return problems


def op_line(op: Op) -> str:
    what = {"get": f"get {op.key}", "put": f"put {op.key}={op.value}",
            "delete": f"delete {op.key}"}[op.kind]
    if op.if_version is not None:
        what += f" if version {op.if_version}"
    result: str = op.outcome
    if op.kind == "get" and op.outcome == OK:
        result += f" {list(op.siblings or ())} version {op.version}"
    elif op.version is not None:
        result += f" version {op.version}"
    if op.error:
        result += f" ({op.error})"
    who = "final" if op.client == FINAL_READER else f"client{op.client}"
    return f"OP {who} {what} (invoked {op.invoke:.3f}) -> {result}"
