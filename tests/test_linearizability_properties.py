"""Properties of the linearizability checker: histories a sequential model
produces under random concurrency are linearizable, a planted violation is
caught at the operation where it was planted, the search agrees with brute
force, the windows a report shows are proofs, bounding unknown writes
never changes a verdict; and the checker's speed on 10,000 operations."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
from collections.abc import Sequence

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from chaos.linearizability import LINEARIZABLE, NOT_LINEARIZABLE, RegisterOp, Report, check
from chaos.linearizability.checker import as_item
from chaos.linearizability.register import (ANYTHING, INITIAL, REGISTER, RegisterState,
                                            read_only, step, validate, viable)
from chaos.linearizability.search import Item, Model, Verdict, search
from chaos.linearizability.unobserved import horizons
from chaos.linearizability.window import prefix_until, window_from
from tests.properties import properties
from tests.register_histories import build, random_specs, specs

pytestmark = pytest.mark.timeout(300)


@properties(300)
@given(specs())
def test_histories_of_a_sequential_model_under_concurrency_are_linearizable(
        chosen: list) -> None:
    report = check(build(chosen).ops)
    assert report.verdict == LINEARIZABLE, report.describe()


def _planted(ops: list[RegisterOp], index: int, mutated: RegisterOp) -> None:
    """The history with ops[index] replaced is caught, at that operation, by
    a window that on its own has no linearization."""
    ops = [*ops[:index], mutated, *ops[index + 1:]]
    report = check(ops)
    assert report.verdict == NOT_LINEARIZABLE
    violation = report.of(mutated.key).violation
    assert violation is not None
    window = violation.window
    assert window.failing == mutated, report.describe()
    start = INITIAL if window.start is None else ANYTHING
    verdict = search([member.searched for member in window.members], start, REGISTER).verdict
    assert verdict is Verdict.NOT_LINEARIZABLE


@properties(300)
@given(specs(keys=2, min_size=12), st.data())
def test_a_stale_read_planted_in_such_a_history_is_caught_at_that_read(
        chosen: list, data: st.DataObject) -> None:
    """A read made after a write returned, changed to see the state before
    that write (a version it had overwritten), cannot be linearized."""
    generated = build(chosen)
    ops = generated.ops
    candidates = [(read_index, before)
                  for write_index, before in generated.acknowledged_writes if before[1] > 0
                  for read_index, read in enumerate(ops)
                  if read.kind == "get" and read.outcome == "ok"
                  and read.key == ops[write_index].key
                  and read.invoke > ops[write_index].complete]
    assume(candidates)
    read_index, (value, version) = data.draw(st.sampled_from(candidates))
    _planted(ops, read_index, dataclasses.replace(ops[read_index], value=value, version=version))


@properties(300)
@given(specs(keys=2, min_size=12), st.data())
def test_a_version_reused_by_a_later_write_is_caught_at_that_write(
        chosen: list, data: st.DataObject) -> None:
    """An acknowledged write called after another returned, changed to
    report that one's version: versions of a key never repeat."""
    generated = build(chosen)
    ops = generated.ops
    acknowledged = [index for index, _ in generated.acknowledged_writes]
    candidates = [(later, ops[earlier].version)
                  for earlier in acknowledged for later in acknowledged
                  if ops[later].key == ops[earlier].key
                  and ops[later].invoke > ops[earlier].complete]
    assume(candidates)
    later, version = data.draw(st.sampled_from(candidates))
    _planted(ops, later, dataclasses.replace(ops[later], version=version))


# Small arbitrary histories: any operations a store could report, most of
# them impossible together.

VALUES = ("a", "b", "c")


@st.composite
def register_ops(draw: st.DrawFn) -> RegisterOp:
    kind = draw(st.sampled_from(("get", "get", "put", "put", "delete")))
    invoke = draw(st.integers(0, 6))
    complete = invoke + draw(st.integers(0, 4))
    client = draw(st.integers(0, 3))
    if kind == "get":
        value = draw(st.sampled_from((None, *VALUES)))
        version = 0 if value is None else draw(st.sampled_from((None, 1, 2, 3, 4)))
        return RegisterOp("k", "get", invoke, complete, "ok", value, version, None, client)
    value = draw(st.sampled_from(VALUES)) if kind == "put" else None
    if_version = draw(st.sampled_from((None, None, 0, 1, 2, 3)))
    outcome = draw(st.sampled_from(("ok", "ok", "fail", "unknown")))
    version = None
    if outcome == "ok":
        low = 1 if kind == "put" else 0
        version = draw(st.sampled_from((None, *range(low, 6))))
    elif outcome == "fail" and if_version is not None:
        version = draw(st.sampled_from((None, 0, 1, 2, 3, 4)))
    op = RegisterOp("k", kind, invoke, complete, outcome, value, version,  # type: ignore[arg-type]
                    if_version, client)
    validate(op)
    return op


def brute_force(items: Sequence[Item[RegisterOp]], start: RegisterState) -> bool:
    """Every choice of optional operations, every order of those and the
    required ones that real time allows (one never goes before another that
    returned before it was called)."""
    required = [item for item in items if item.required]
    optional = [item for item in items if not item.required]

    def orders(left: list[Item[RegisterOp]], state: RegisterState) -> bool:
        for position, item in enumerate(left):
            rest = left[:position] + left[position + 1:]
            if any(other.complete < item.invoke for other in rest):
                continue
            after = step(state, item.op)
            if after is not None and (not rest or orders(rest, after)):
                return True
        return not left

    return any(orders(required + list(chosen), start)
               for size in range(len(optional) + 1)
               for chosen in itertools.combinations(optional, size))


@properties(500)
@given(st.lists(register_ops(), max_size=6), st.lists(st.booleans(), min_size=6, max_size=6),
       st.booleans())
def test_the_search_agrees_with_brute_force_on_small_histories(
        ops: list[RegisterOp], optional: list[bool], from_anything: bool) -> None:
    """Also with operations made optional as a window makes them (they keep
    their return), from ANYTHING as a window starts; with and without the
    viability cut-off."""
    items = [as_item(op) for op in ops if op.takes_part]
    items = [dataclasses.replace(item, required=False) if make_optional else item
             for item, make_optional in zip(items, optional)]
    start = ANYTHING if from_anything else INITIAL
    expected = brute_force(items, start)
    for model in (REGISTER, Model(step), Model(step, viable), Model(step, None, read_only)):
        found = search(items, start, model).verdict
        assert found is (Verdict.LINEARIZABLE if expected else Verdict.NOT_LINEARIZABLE)


@properties(300)
@given(st.lists(register_ops(), max_size=6))
def test_every_prefix_and_window_of_a_linearizable_history_is_linearizable(
        ops: list[RegisterOp]) -> None:
    """What makes a window a proof: one cut out of a linearizable history
    (as the report cuts them, unknown writes bounded anew) never fails."""
    taking_part = [op for op in ops if op.takes_part]
    assume(brute_force([as_item(op) for op in taking_part], INITIAL))
    horizon = horizons(taking_part)
    items = [as_item(op, horizon.get(index, math.inf)) for index, op in enumerate(taking_part)
             if horizon.get(index) != -math.inf]
    for index, item in enumerate(items):
        if not item.required:
            continue
        prefix = prefix_until(items, (item.complete, 1, index))
        assert brute_force([member.searched for member in prefix], INITIAL)
        for start in {member.searched.invoke for member in prefix}:
            window = window_from(prefix, start)
            assert brute_force([member.searched for member in window], ANYTHING)


@properties(500)
@given(st.lists(register_ops(), max_size=8))
def test_bounding_unknown_writes_by_their_last_observer_never_changes_the_verdict(
        ops: list[RegisterOp]) -> None:
    taking_part = [op for op in ops if op.takes_part]
    horizon = horizons(taking_part)
    unbounded = search([as_item(op) for op in taking_part], INITIAL, REGISTER).verdict
    bounded = search([as_item(op, horizon.get(index, math.inf))
                      for index, op in enumerate(taking_part)
                      if horizon.get(index) != -math.inf], INITIAL, REGISTER).verdict
    assert bounded is unbounded


# Speed.

def _timed_check(ops: list[RegisterOp], label: str) -> tuple[float, Report]:
    started = time.perf_counter()
    report = check(ops)
    seconds = time.perf_counter() - started
    steps = sum(key.steps for key in report.keys)
    print(f"\n{label}: {len(ops):,} operations on {len(report.keys)} key(s), "
          f"{sum(op.outcome == 'unknown' for op in ops)} of unknown outcome: {report.verdict} "
          f"in {seconds:.2f} s ({steps:,} search steps)")
    return seconds, report


def test_ten_thousand_operations_over_twenty_keys_check_within_seconds() -> None:
    generated = build(random_specs(random.Random(10_000), 10_000, clients=10, keys=20,
                                   unknown_share=0.05))
    ops = generated.ops
    assert 450 <= max(sum(op.key == key for op in ops) for key in {op.key for op in ops}) <= 600
    seconds, report = _timed_check(ops, "10 clients over 20 keys")
    assert report.verdict == LINEARIZABLE, report.describe()
    # A fraction of a second on the 2-core VM; the bounds leave room for a loaded machine.
    assert seconds < 20
    # The same with a stale read planted in the middle: found, and its window.
    write_index, before = next((index, before) for index, before in
                               generated.acknowledged_writes[len(ops) // 4:] if before[1] > 0)
    write = ops[write_index]
    read_index = next(index for index in range(write_index, len(ops))
                      if ops[index].kind == "get" and ops[index].outcome == "ok"
                      and ops[index].key == write.key and ops[index].invoke > write.complete)
    stale = dataclasses.replace(ops[read_index], value=before[0], version=before[1])
    seconds, report = _timed_check([*ops[:read_index], stale, *ops[read_index + 1:]],
                                   "the same with a stale read")
    print(report.describe())
    assert report.verdict == NOT_LINEARIZABLE
    assert [key.key for key in report.violations] == [write.key]
    assert report.violations[0].violation.window.failing == stale  # type: ignore[union-attr]
    assert seconds < 40


def test_five_hundred_operations_of_32_clients_on_one_key_check_within_seconds() -> None:
    ops = build(random_specs(random.Random(500), 500, clients=32, keys=1)).ops
    seconds, report = _timed_check(ops, "32 clients on one key")
    assert report.verdict == LINEARIZABLE, report.describe()
    assert seconds < 20
