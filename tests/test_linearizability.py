"""The linearizability checker (chaos/linearizability/) on hand-made
histories of leader-mode keys: linearizable ones with concurrency and
unknown outcomes, and the violations it must catch, each with the operation
that cannot be linearized and the smallest window that shows it; its budget,
its errors, and the adapter from the chaos suite's records."""

from __future__ import annotations

import itertools
import math

import pytest

from chaos.history import FAIL, OK, UNKNOWN, Op
from chaos.linearizability import (LINEARIZABLE, NOT_LINEARIZABLE, MalformedHistory,
                                   RegisterOp, Report, check, register_ops)
from chaos.linearizability.register import ANYTHING, INITIAL, REGISTER
from chaos.linearizability.search import Item, Verdict, search
from chaos.linearizability.checker import as_item
from chaos.linearizability.unobserved import horizons

pytestmark = pytest.mark.timeout(60)


def put(value: str, invoke: float, complete: float, version: int | None = None, *,
        if_version: int | None = None, outcome: str = OK, client: int = 0,
        key: str = "k") -> RegisterOp:
    return RegisterOp(key, "put", invoke, complete, outcome, value, version,  # type: ignore[arg-type]
                      if_version, client)


def delete(invoke: float, complete: float, version: int | None = None, *,
           if_version: int | None = None, outcome: str = OK, client: int = 0,
           key: str = "k") -> RegisterOp:
    return RegisterOp(key, "delete", invoke, complete, outcome, None, version,  # type: ignore[arg-type]
                      if_version, client)


def get(value: str | None, invoke: float, complete: float, version: int | None = None, *,
        outcome: str = OK, client: int = 1, key: str = "k") -> RegisterOp:
    if value is None and outcome == OK and version is None:
        version = 0
    return RegisterOp(key, "get", invoke, complete, outcome, value, version,  # type: ignore[arg-type]
                      None, client)


def refused(value: str | None, invoke: float, complete: float, if_version: int, current: int,
            *, client: int = 0) -> RegisterOp:
    """A compare-and-set refused with VersionMismatch(current_version=current)."""
    kind = "put" if value is not None else "delete"
    return RegisterOp("k", kind, invoke, complete, FAIL, value, current, if_version, client)


def verdict(ops: list[RegisterOp]) -> str:
    return check(ops).verdict


def window_of(report: Report, key: str = "k") -> list[RegisterOp]:
    violation = report.of(key).violation
    assert violation is not None
    return [member.op for member in violation.window.members]


# Linearizable histories.

def test_sequential_writes_and_reads_with_growing_versions_are_linearizable() -> None:
    assert verdict([get(None, 0, 1), put("a", 2, 3, 4), get("a", 4, 5, 4), put("b", 6, 7, 9),
                    get("b", 8, 9, 9), delete(10, 11, 12), get(None, 12, 13)]) == LINEARIZABLE


def test_a_read_concurrent_with_a_write_may_see_the_old_or_the_new_value() -> None:
    write = put("b", 2, 6, 7)
    before = [put("a", 0, 1, 3), write]
    assert verdict([*before, get("a", 3, 4, 3)]) == LINEARIZABLE
    assert verdict([*before, get("b", 3, 4, 7)]) == LINEARIZABLE
    # Once one read saw the new value, a later one cannot see the old.
    assert verdict([*before, get("b", 3, 4, 7), get("a", 4.5, 5, 3)]) == NOT_LINEARIZABLE


def test_concurrent_writes_take_effect_in_the_order_their_versions_say() -> None:
    # "a" was called first but got the later version: "b" took effect first.
    writes = [put("a", 0, 10, 7), put("b", 1, 11, 5, client=2)]
    assert verdict([*writes, get("b", 2, 3, 5), get("a", 4, 5, 7)]) == LINEARIZABLE
    assert verdict([*writes, get("a", 2, 3, 7), get("b", 4, 5, 5)]) == NOT_LINEARIZABLE


def test_operations_that_touch_in_time_count_as_concurrent() -> None:
    history = [put("a", 0, 1, 3), put("b", 1, 2, 5)]
    assert verdict([*history, get("a", 2.5, 3, 3)]) == NOT_LINEARIZABLE
    # Called the instant the write returned: either order.
    assert verdict([*history, get("a", 2, 3, 3)]) == LINEARIZABLE


def test_versions_may_grow_by_gaps_as_other_keys_share_the_log() -> None:
    assert verdict([put("a", 0, 1, 2), put("b", 2, 3, 40), put("c", 4, 5, 41, if_version=40),
                    get("c", 6, 7, 41)]) == LINEARIZABLE


def test_a_write_of_unknown_outcome_may_take_effect_after_its_client_gave_up() -> None:
    assert verdict([put("x", 0, 1, outcome=UNKNOWN), get(None, 2, 3), get("x", 5, 6, 9),
                    put("y", 7, 8, 11, if_version=9)]) == LINEARIZABLE


def test_a_write_of_unknown_outcome_may_never_take_effect() -> None:
    assert verdict([put("a", 0, 1, 3), put("x", 2, 3, outcome=UNKNOWN), get("a", 4, 5, 3),
                    delete(6, 7, if_version=3, outcome=UNKNOWN), get("a", 8, 9, 3)]) == LINEARIZABLE


def test_a_compare_and_set_refused_names_the_version_that_won_the_race() -> None:
    assert verdict([put("a", 0, 1, 3), put("b", 2, 5, 8, if_version=3, client=1),
                    refused("c", 2.5, 4, 3, 8, client=2), get("b", 6, 7, 8)]) == LINEARIZABLE


def test_create_if_absent_applies_at_version_zero_also_after_a_delete() -> None:
    assert verdict([put("a", 0, 1, 2, if_version=0), refused("b", 2, 3, 0, 2),
                    delete(4, 5, 6, if_version=2), put("c", 6, 7, 9, if_version=0),
                    get("c", 8, 9, 9)]) == LINEARIZABLE


def test_a_delete_may_report_the_absent_version_zero() -> None:
    assert verdict([put("a", 0, 1, 2), delete(2, 3, 0), get(None, 4, 5),
                    put("b", 6, 7, 5)]) == LINEARIZABLE


def test_failed_writes_and_reads_that_did_not_answer_tell_nothing() -> None:
    assert verdict([put("a", 0, 1, 3), put("x", 2, 3, outcome=FAIL), get(None, 2, 9, outcome=FAIL),
                    get(None, 2, 9, outcome=UNKNOWN), get("a", 4, 5, 3)]) == LINEARIZABLE


def test_a_history_without_recorded_versions_is_checked_on_values() -> None:
    assert verdict([put("a", 0, 1), put("b", 2, 3), get("b", 4, 5, None)]) == LINEARIZABLE
    assert verdict([put("a", 0, 1), put("b", 2, 3), get("a", 4, 5, None)]) == NOT_LINEARIZABLE


# Violations: each caught at the right operation, with its window.

def test_a_stale_read_is_caught_with_the_write_it_missed() -> None:
    missed = put("b", 2, 3, 7, client=2)
    stale = get("a", 4, 5, 5)
    report = check([put("a", 0, 1, 5), missed, stale])
    assert report.verdict == NOT_LINEARIZABLE and not report.passed
    violation = report.of("k").violation
    assert violation is not None and violation.window.failing == stale
    # The smallest window: the first write is not needed to show it.
    assert window_of(report) == [missed, stale]
    assert violation.window.start == 2


def test_a_lost_update_two_compare_and_sets_from_one_version_both_succeed() -> None:
    first, second = put("b", 2, 4, 5, if_version=3), put("c", 2.5, 4.5, 6, if_version=3, client=1)
    report = check([put("a", 0, 1, 3), first, second])
    assert report.verdict == NOT_LINEARIZABLE
    assert set(window_of(report)) >= {first, second}
    # The same one after the other.
    sequential = check([put("a", 0, 1, 3), put("b", 2, 3, 5, if_version=3),
                        put("c", 4, 5, 6, if_version=3)])
    assert sequential.verdict == NOT_LINEARIZABLE


def test_a_compare_and_set_that_succeeded_on_a_wrong_version_is_caught() -> None:
    wrong = put("b", 2, 3, 5, if_version=2)
    report = check([put("a", 0, 1, 3), wrong])
    assert report.verdict == NOT_LINEARIZABLE
    assert report.of("k").violation.window.failing == wrong  # type: ignore[union-attr]
    assert verdict([delete(0, 1, 3, if_version=1)]) == NOT_LINEARIZABLE


def test_a_read_of_a_value_never_written_is_caught_from_the_initial_state() -> None:
    invented = get("z", 1, 2, 3)
    concurrent = put("a", 0, 10, 5)
    report = check([concurrent, invented])
    violation = report.of("k").violation
    assert violation is not None and violation.window.failing == invented
    # A key in any state might have held "z": only the key's history from
    # its start shows it. The put of "a" had not returned, nobody read it:
    # it cannot matter.
    assert violation.window.start is None
    assert window_of(report) == [invented]
    assert "from the key's initial state (absent)" in report.describe()
    # Once a write returned, a read must see it or a later one: the window
    # needs no more than those two.
    after_a_write = check([put("a", 0, 1, 2), get("z", 4, 5, 3)])
    assert after_a_write.of("k").violation.window.start == 0  # type: ignore[union-attr]


def test_a_failed_write_whose_effect_is_observed_is_caught() -> None:
    failed = put("x", 0, 1, outcome=FAIL)
    report = check([failed, get("x", 2, 3, 4)])
    assert report.verdict == NOT_LINEARIZABLE
    violation = report.of("k").violation
    assert violation is not None and [op for op, _ in violation.context] == [failed]


def test_an_unknown_write_cannot_explain_a_read_made_before_it_was_called() -> None:
    assert verdict([get("x", 0, 1, 4), put("x", 2, 3, outcome=UNKNOWN)]) == NOT_LINEARIZABLE


def test_a_version_that_goes_backwards_is_caught() -> None:
    assert verdict([put("a", 0, 1, 7), put("b", 2, 3, 5)]) == NOT_LINEARIZABLE
    assert verdict([put("a", 0, 1, 7), put("b", 2, 3, 7)]) == NOT_LINEARIZABLE
    assert verdict([put("a", 0, 1, 7), delete(2, 3, 6)]) == NOT_LINEARIZABLE


def test_a_read_that_sees_another_version_than_its_write_made_is_caught() -> None:
    assert verdict([put("a", 0, 1, 7), get("a", 2, 3, 8)]) == NOT_LINEARIZABLE


def test_a_refusal_naming_a_version_the_key_did_not_have_is_caught() -> None:
    assert verdict([put("a", 0, 1, 3), refused("b", 2, 3, 2, 9)]) == NOT_LINEARIZABLE
    # Refused although the version matched.
    assert verdict([put("a", 0, 1, 3), refused("b", 2, 3, 3, 3)]) == NOT_LINEARIZABLE


def test_an_acknowledged_write_read_as_absent_is_caught() -> None:
    assert verdict([put("a", 0, 1, 3), get(None, 2, 3)]) == NOT_LINEARIZABLE


def test_each_key_is_judged_on_its_own() -> None:
    report = check([put("a", 0, 1, 3, key="good"), get("a", 2, 3, 3, key="good"),
                    put("a", 0, 1, 3, key="bad"), get(None, 2, 3, key="bad")])
    assert [(key.key, key.verdict) for key in report.keys] == [
        ("bad", NOT_LINEARIZABLE), ("good", LINEARIZABLE)]


# The report.

def test_the_report_names_the_key_the_failing_operation_and_the_window_in_words() -> None:
    report = check([put("a", 0, 1, 5), put("b", 2, 3, 7, client=2), get("a", 4, 5, 5, client=3),
                    put("c", 0, 9, outcome=FAIL)])
    text = report.describe()
    print(text)
    assert text.splitlines()[0].startswith("linearizability: NOT LINEARIZABLE (1 key: ")
    assert "key 'k': not linearizable at client 3: get -> 'a' (version 5) [4.000, 5.000]" in text
    assert "from any state of the key" in text
    assert "    [2.000, 3.000] client 2: put 'b' -> version 7" in text
    assert "  ! [4.000, 5.000] client 3: get -> 'a' (version 5)" in text
    assert "  - [0.000, 9.000] client 0: put 'c' -> failed, not applied" in text
    assert "put 'a'" not in text  # outside the window


def test_a_window_marks_what_may_or_may_not_have_taken_effect() -> None:
    # The read of "a" at version 2 is stale: a read of version 8 returned
    # before it began. The write of "q" straddles the window's start, and
    # "x" is of unknown outcome.
    report = check([put("a", 0, 1, 2), put("q", 1.5, 4.5, 4, if_version=2, client=4),
                    put("b", 2, 3, 6, client=2), put("x", 2.5, 3, outcome=UNKNOWN, client=5),
                    get("x", 3.5, 3.8, 8, client=6), get("a", 4, 5, 2)])
    text = report.describe()
    print(text)
    assert "? [1.500, 4.500] client 4: put 'q' if version 2 -> version 4" in text
    assert "(may have taken effect before the window)" in text
    assert "? [2.500, gave up at 3.000] client 5: put 'x' -> outcome unknown" in text
    assert "(may take effect at any time after its call, or never)" in text


def test_a_search_that_runs_out_of_budget_is_unknown_never_a_pass() -> None:
    # 24 concurrent puts of unrecorded versions, then a read of a value none
    # wrote: showing that no order works means trying every subset of them.
    ops = [put(f"v{n}", 0, 10, client=n) for n in range(24)] + [get("z", 11, 12, None)]
    ticks = itertools.count()
    report = check(ops, seconds_per_key=5, clock=lambda: float(next(ticks)))
    result = report.of("k")
    assert result.verdict == "unknown" and report.verdict == "unknown"
    assert not report.passed
    assert "ran out of its 5 s budget" in result.note and "ran out" in report.describe()


def test_a_violation_outweighs_a_key_of_unknown_verdict_and_unknown_outweighs_a_pass() -> None:
    hard = [put(f"v{n}", 0, 10, client=n, key="hard") for n in range(24)]
    hard.append(get("z", 11, 12, None, key="hard"))
    good = [put("a", 0, 1, 3, key="good")]
    bad = [put("a", 0, 1, 3, key="bad"), get(None, 2, 3, key="bad")]

    def run(ops: list[RegisterOp]) -> str:
        ticks = itertools.count()
        return check(ops, seconds_per_key=5, clock=lambda: float(next(ticks))).verdict

    assert run(hard + good) == "unknown"
    assert run(hard + good + bad) == NOT_LINEARIZABLE


# Bad input.

@pytest.mark.parametrize("op, why", [
    (put("a", 2, 1, 3), "its return not before its call"),
    (put("a", 0, float("nan"), 3), "finite"),
    (put("a", 0, 1, -1), "version must be a non-negative int"),
    (put("a", 0, 1, 0), "a put makes a version above 0"),
    (put("a", 0, 1, outcome=UNKNOWN, version=3), "unknown outcome has no version"),
    (RegisterOp("k", "put", 0, 1, FAIL, "a", 3), "only a compare-and-set is refused"),
    (RegisterOp("k", "get", 0, 1, OK, None, 4), "an absent key's version is 0"),
    (RegisterOp("k", "get", 0, 1, OK, "a", 0), "a version above 0"),
    (RegisterOp("k", "get", 0, 1, OK, "a", 2, 1), "a get has no if_version"),
    (RegisterOp("k", "delete", 0, 1, OK, "a"), "a delete none"),
    (RegisterOp("k", "scan", 0, 1, OK), "the kind must be one of"),  # type: ignore[arg-type]
])
def test_an_operation_no_store_could_report_gets_a_clear_error(op: RegisterOp, why: str) -> None:
    with pytest.raises(MalformedHistory, match=why) as raised:
        check([op])
    assert "key 'k'" in str(raised.value)


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="seconds_per_key must be positive"):
        check([], seconds_per_key=0)


# The unknown writes left out of the search.

def test_an_unknown_write_matters_until_the_last_operation_that_could_observe_it() -> None:
    ops = [put("a", 0, 1, 3), put("unread", 2, 3, outcome=UNKNOWN),
           put("read", 2, 3, outcome=UNKNOWN), get("read", 4, 5, 9),
           delete(6, 7, outcome=UNKNOWN)]
    assert horizons(ops) == {1: -math.inf, 2: 5, 4: -math.inf}
    # A compare-and-set naming a version no acknowledged write made and no
    # read saw may be on top of any unknown put called before that version
    # was overtaken (the read of version 9 returned at 5).
    named = [*ops, put("c", 4.5, 4.8, 7, if_version=5)]
    assert horizons(named) == {1: 4.8, 2: 5, 4: -math.inf}
    may_apply_any_time = [*ops, put("c", 4.5, 4.8, if_version=5, outcome=UNKNOWN)]
    assert horizons(may_apply_any_time) == {1: 5, 2: 5, 4: -math.inf, 5: 5}
    # Called once version 9 was seen, it can never apply.
    assert horizons([*ops, put("c", 8, 9, if_version=5, outcome=UNKNOWN)])[5] == -math.inf
    # A read of absence returning after the unknown delete was called.
    assert horizons([*ops, get(None, 6.5, 9)]) == {1: -math.inf, 2: 5, 4: 9}
    # One that returned before it was called cannot see it.
    assert horizons([*ops, get(None, 5, 5.5)])[4] == -math.inf


# The search itself.

def test_the_search_gives_up_an_optional_operation_only_as_a_choice_it_can_undo() -> None:
    # In a window, the put of "b" may have taken effect before it began (and
    # be part of ANYTHING) or within it; the read needs it within.
    items = [Item(put("b", 0, 2, 5), 0, 2, False), Item(get("a", 1, 1.5, 3), 1, 1.5, True),
             Item(get("b", 3, 4, 5), 3, 4, True)]
    assert search(items, ANYTHING, REGISTER).verdict is Verdict.LINEARIZABLE
    assert search(items, INITIAL, REGISTER).verdict is Verdict.NOT_LINEARIZABLE


def test_a_write_that_changes_nothing_now_is_still_a_choice_it_may_change_something_later(
        ) -> None:
    # Found by the timing history: the unknown delete leaves the absent key
    # as it is when it is first a candidate, but only after the put does it
    # explain the second read.
    ops = [get(None, 0, 4), put("a", 1, 5, 44), delete(4.5, 9, outcome=UNKNOWN),
           get(None, 6, 9)]
    assert verdict(ops) == LINEARIZABLE
    items = [as_item(op) for op in ops]
    assert search(items, ANYTHING, REGISTER).verdict is Verdict.LINEARIZABLE


# The adapter from the chaos suite's records.

def chaos_op(kind: str, value: str | None = None, outcome: str = OK, **fields: object) -> Op:
    return Op(3, kind, "key-001", value, 1.0, 2.0, outcome, **fields)  # type: ignore[arg-type]


def test_chaos_ops_become_register_operations() -> None:
    ops = [chaos_op("get", siblings=("a",), version=4), chaos_op("get", siblings=()),
           chaos_op("get", outcome=UNKNOWN, error="DEADLINE_EXCEEDED: ..."),
           chaos_op("put", "b", version=9, if_version=4),
           chaos_op("delete", outcome=FAIL, version=9, if_version=4)]
    assert register_ops(ops) == [
        RegisterOp("key-001", "get", 1.0, 2.0, OK, "a", 4, None, 3),
        RegisterOp("key-001", "get", 1.0, 2.0, OK, None, None, None, 3),
        RegisterOp("key-001", "get", 1.0, 2.0, UNKNOWN, None, None, None, 3),
        RegisterOp("key-001", "put", 1.0, 2.0, OK, "b", 9, 4, 3),
        RegisterOp("key-001", "delete", 1.0, 2.0, FAIL, None, 9, 4, 3)]
    assert check(register_ops(ops[1:2])).passed


def test_a_read_with_siblings_is_refused_since_only_leader_mode_is_linearizable() -> None:
    with pytest.raises(MalformedHistory, match="returned 2 siblings: .* leader mode only"):
        register_ops([chaos_op("get", siblings=("a", "b"))])
