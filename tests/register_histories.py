"""Histories of leader-mode keys that are linearizable by construction, for
the linearizability checker's tests.

Each client runs its operations one after another; each operation takes
effect at one point inside its interval, on a sequential model of the keys
applied in the order of those points (a write of unknown outcome may also
take effect after its client gave up, or never). Versions come from one log
per partition that several keys share, so a key's versions grow with gaps,
as in leader mode. Compare-and-sets name the key's current version (they
apply) or a stale one (refused with VersionMismatch and the current
version), or the version their client last read of the key, as a client
does (it may be stale by then). Every put writes a value of its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from hypothesis import strategies as st

from chaos.linearizability.register import RegisterOp

Fate = Literal["ok", "fail", "unknown", "unknown-late", "unknown-lost"]
FATES: tuple[Fate, ...] = ("ok", "fail", "unknown", "unknown-late", "unknown-lost")


@dataclass(frozen=True)
class Spec:
    """One operation to run: whose, on which key, what, and how it ends.
    `fate`: "ok" (answered; a stale compare-and-set is refused), "fail"
    (refused before it applied), "unknown" (took effect, the client timed
    out), "unknown-late" (took effect after the client gave up),
    "unknown-lost" (never took effect)."""

    client: int
    key: int
    kind: Literal["get", "put", "delete"]
    cas: Literal["blind", "current", "last-read", "stale"]
    fate: Fate
    think: float  # after the client's previous return, until this call
    to_effect: float  # from the call until it takes effect
    to_return: float  # from taking effect until the return


@dataclass
class Generated:
    ops: list[RegisterOp] = field(default_factory=list)
    # For each write that took effect and was acknowledged with a version:
    # its index in `ops`, and the key's (value, version) just before it.
    acknowledged_writes: list[tuple[int, tuple[str | None, int]]] = field(default_factory=list)


def key_name(key: int) -> str:
    return f"key-{key:02d}"


def build(specs: list[Spec], partitions: int = 4) -> Generated:
    timed = _timed(specs)
    state: dict[int, tuple[str | None, int]] = {}
    past_versions: dict[int, list[int]] = {}
    log_index = [0] * partitions
    last_read: dict[tuple[int, int], int] = {}  # (client, key) -> the version it last read
    recorded: dict[int, RegisterOp] = {}
    before_of: dict[int, tuple[str | None, int]] = {}
    for number in sorted(timed, key=lambda number: (timed[number][2], number)):
        spec = specs[number]
        invoke, complete, _ = timed[number]
        current = state.get(spec.key, (None, 0))
        if spec.kind == "get":
            outcome = {"ok": "ok", "fail": "fail"}.get(spec.fate, "unknown")
            result = current if outcome == "ok" else (None, None)
            if outcome == "ok":
                last_read[spec.client, spec.key] = current[1]
            recorded[number] = _op(spec, invoke, complete, outcome, *result)
            continue
        value = f"v{number}" if spec.kind == "put" else None
        if_version = None
        if spec.cas == "current":
            if_version = current[1]
        elif spec.cas == "last-read":
            if_version = last_read.get((spec.client, spec.key), 0)
        elif spec.cas == "stale":
            older = [v for v in past_versions.get(spec.key, []) if v != current[1]]
            if_version = older[-1] if older else current[1] + 1
        applies = if_version in (None, current[1]) and spec.fate in ("ok", "unknown",
                                                                       "unknown-late")
        if spec.fate == "ok" and not applies:  # refused with VersionMismatch
            recorded[number] = _op(spec, invoke, complete, "fail", value, current[1], if_version)
            continue
        if not applies:
            outcome = "fail" if spec.fate == "fail" else "unknown"
            recorded[number] = _op(spec, invoke, complete, outcome, value, None, if_version)
            continue
        partition = spec.key % partitions
        log_index[partition] += 1
        version = log_index[partition]
        state[spec.key] = (value, version) if value is not None else (None, 0)
        past_versions.setdefault(spec.key, []).append(version)
        if spec.fate == "ok":
            recorded[number] = _op(spec, invoke, complete, "ok", value, version, if_version)
            before_of[number] = current
        else:
            recorded[number] = _op(spec, invoke, complete, "unknown", value, None, if_version)
    order = sorted(recorded)
    position = {number: index for index, number in enumerate(order)}
    return Generated([recorded[number] for number in order],
                     [(position[number], before) for number, before in sorted(before_of.items())])


def _op(spec: Spec, invoke: float, complete: float, outcome: str, value: str | None,
        version: int | None, if_version: int | None = None) -> RegisterOp:
    return RegisterOp(key_name(spec.key), spec.kind, invoke, complete, outcome,  # type: ignore[arg-type]
                      value, version, if_version, spec.client)


def _timed(specs: list[Spec]) -> dict[int, tuple[float, float, float]]:
    """Each operation's (call, return, effect) times, its client's operations
    one after another; a lost write takes effect never (math.inf)."""
    free: dict[int, float] = {}
    timed = {}
    for number, spec in enumerate(specs):
        invoke = free.get(spec.client, 0.0) + spec.think
        effect = invoke + spec.to_effect
        complete = effect + spec.to_return
        if spec.fate == "unknown-late":
            effect = complete + spec.to_effect
        elif spec.fate in ("fail", "unknown-lost") and spec.kind != "get":
            effect = float("inf")
        free[spec.client] = complete
        timed[number] = (invoke, complete, effect)
    return timed


def specs(clients: int = 4, keys: int = 3, min_size: int = 0,
          max_size: int = 40) -> st.SearchStrategy[list[Spec]]:
    """Hypothesis: operation lists with times in tenths, so that calls,
    returns and effects often coincide (ties are where off-by-one orders
    hide)."""
    tenths = st.integers(0, 20).map(lambda n: n / 10)
    fates = st.sampled_from(("ok",) * 6 + FATES[1:])
    return st.lists(st.builds(
        Spec, st.integers(0, clients - 1), st.integers(0, keys - 1),
        st.sampled_from(("get", "get", "put", "put", "delete")),
        st.sampled_from(("blind", "blind", "current", "last-read", "stale")), fates,
        tenths, tenths, tenths), min_size=min_size, max_size=max_size)


def random_specs(rng: random.Random, count: int, clients: int, keys: int,
                 unknown_share: float = 0.02) -> list[Spec]:
    """A large history for timing: every client always busy, latencies of
    a few milliseconds, a few writes of unknown outcome, and half the writes
    compare-and-sets on the version the client last read."""
    result = []
    for _ in range(count):
        kind = rng.choices(("get", "put", "delete"), weights=(45, 45, 10))[0]
        cas = rng.choices(("blind", "last-read"), weights=(50, 50))[0]
        roll = rng.random()
        fate: Fate = "ok"
        if roll < unknown_share:
            fate = rng.choice(("unknown", "unknown-late", "unknown-lost"))
        elif roll < unknown_share + 0.01:
            fate = "fail"
        result.append(Spec(rng.randrange(clients), rng.randrange(keys), kind, cas, fate,
                           rng.uniform(0, 0.001), rng.uniform(0, 0.004), rng.uniform(0, 0.004)))
    return result
