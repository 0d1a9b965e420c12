"""The chaos suite: its checkers on hand-made histories (fast), and one real
run of `python -m chaos` against a local cluster under faults (slow)."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.checkers import (check_duplicate_siblings, check_lost_writes, check_never_written,
                            check_quorum_reads,
                            check_superseded, differing_partitions, divergent_keys,
                            partitions_with_keys)
from chaos.convergence import Convergence, RootConvergence
from chaos.counters import RunCounters
from chaos.history import FAIL, OK, UNKNOWN, History, Op, load_jsonl
from chaos.nemesis import schedule
from chaos.summary import Summary, count_ops, from_reports
from kvclient.pb import replica_pb2
from kvstore import causal_context
from kvstore.leaderless.merkle import MerkleTree, PartitionTrees
from kvstore.server.metrics import RequestMetrics
from kvstore.rpc.servicers import ReplicaService
from kvstore.rpc.validation import Limits
from kvstore.causality.versions import DVVSet, Dot, Sibling, VersionVector

REPO = Path(__file__).resolve().parent.parent
HORIZON = 15.0


def put(value: str, invoke: float, complete: float, outcome: str = OK, key: str = "k") -> Op:
    return Op(0, "put", key, value, invoke, complete, outcome)  # type: ignore[arg-type]


def delete(invoke: float, complete: float, outcome: str = OK, key: str = "k") -> Op:
    return Op(0, "delete", key, None, invoke, complete, outcome)  # type: ignore[arg-type]


def get(siblings: list[str], invoke: float, complete: float, key: str = "k") -> Op:
    return Op(1, "get", key, None, invoke, complete, OK, siblings=tuple(siblings))


def lost_values(ops: list[Op], final: dict[str, list[str] | None]) -> list[str]:
    return [w.value for w in check_lost_writes(ops, final, HORIZON).lost]


def test_an_acknowledged_put_missing_from_the_final_state_is_lost() -> None:
    ops = [put("a", 1, 2)]
    report = check_lost_writes(ops, {"k": []}, HORIZON)
    assert [w.value for w in report.lost] == ["a"]
    assert (report.acknowledged_puts, report.checked_puts, report.checked_keys) == (1, 1, 1)


def test_a_put_present_among_the_siblings_is_not_lost() -> None:
    assert lost_values([put("a", 1, 2), put("b", 1.5, 2.5)], {"k": ["b", "a"]}) == []


def test_an_overwritten_put_is_not_lost_and_not_counted_as_checked() -> None:
    ops = [put("a", 1, 2), put("b", 3, 4)]
    report = check_lost_writes(ops, {"k": ["b"]}, HORIZON)
    assert report.lost == []
    assert report.checked_puts == 1  # only "b": "a" may rightly be gone


def test_a_put_overlapping_the_acknowledged_one_may_have_replaced_it() -> None:
    # "b" was invoked before "a" completed, and completed after "a" was invoked.
    assert lost_values([put("a", 1, 3), put("b", 2, 4)], {"k": ["b"]}) == []


def test_a_later_acknowledged_delete_excuses_the_put() -> None:
    assert lost_values([put("a", 1, 2), delete(3, 4)], {"k": []}) == []


def test_a_later_write_of_unknown_outcome_excuses_the_put() -> None:
    assert lost_values([put("a", 1, 2), put("b", 3, 7, UNKNOWN)], {"k": []}) == []


def test_a_definitely_failed_write_excuses_nothing() -> None:
    assert lost_values([put("a", 1, 2), put("b", 3, 4, FAIL)], {"k": []}) == ["a"]


def test_an_unknown_write_long_before_the_put_excuses_nothing() -> None:
    ops = [put("old", 0, 1, UNKNOWN), put("a", 1 + HORIZON + 1, 1 + HORIZON + 2)]
    assert lost_values(ops, {"k": []}) == ["a"]


def test_writes_to_other_keys_do_not_excuse_a_loss() -> None:
    ops = [put("a", 1, 2, key="k"), put("b", 3, 4, key="other")]
    assert lost_values(ops, {"k": [], "other": ["b"]}) == ["a"]


def test_a_key_that_could_not_be_read_is_reported_not_judged() -> None:
    report = check_lost_writes([put("a", 1, 2)], {"k": None}, HORIZON)
    assert report.lost == [] and report.unread_keys == ["k"] and report.checked_puts == 0


def test_a_read_value_no_put_wrote_is_flagged() -> None:
    report = check_never_written([put("a", 1, 2), get(["a", "ghost"], 3, 4)])
    assert [(bad.value, bad.why) for bad in report.never_written] == [("ghost", "no put wrote it")]
    assert report.values_read == 2


def test_a_value_of_a_put_of_unknown_outcome_may_be_read() -> None:
    ops = [put("a", 1, 5, UNKNOWN), get(["a"], 2, 3)]
    assert check_never_written(ops).never_written == []


def test_a_value_read_before_its_put_was_invoked_is_flagged() -> None:
    report = check_never_written([get(["a"], 1, 2), put("a", 3, 4)])
    assert [bad.value for bad in report.never_written] == ["a"]


def test_a_value_written_to_another_key_is_flagged() -> None:
    report = check_never_written([put("a", 1, 2, key="other"), get(["a"], 3, 4)])
    assert [bad.value for bad in report.never_written] == ["a"]


def test_a_value_read_twice_in_one_answer_is_a_duplicate() -> None:
    assert [d.value for d in check_duplicate_siblings([get(["a", "b", "a"], 1, 2)])] == ["a"]
    assert check_duplicate_siblings([get(["a", "b"], 1, 2)]) == []


def strict_put(value: str, invoke: float, complete: float, w: int = 2,
               outcome: str = OK) -> Op:
    return Op(0, "put", "k", value, invoke, complete, outcome,  # type: ignore[arg-type]
              replicas=w, strict=True)


def quorum_get(siblings: list[str], invoke: float, complete: float, r: int = 2) -> Op:
    return Op(1, "get", "k", None, invoke, complete, OK, siblings=tuple(siblings), replicas=r)


def stale_values(ops: list[Op], disk_losses: tuple[float, ...] = ()) -> list[str]:
    return [s.value for s in check_quorum_reads(ops, 3, HORIZON, disk_losses).stale]


def test_a_quorum_read_after_a_strict_acknowledged_put_must_see_it() -> None:
    ops = [strict_put("a", 1, 2), quorum_get([], 3, 4)]
    report = check_quorum_reads(ops, 3, HORIZON)
    assert [s.value for s in report.stale] == ["a"] and report.checked == 1
    assert stale_values([strict_put("a", 1, 2), quorum_get(["a"], 3, 4)]) == []


def test_quorums_that_need_not_intersect_promise_nothing() -> None:
    assert stale_values([strict_put("a", 1, 2, w=2), quorum_get([], 3, 4, r=1)]) == []
    sloppy = dataclasses.replace(strict_put("a", 1, 2), strict=False)
    assert stale_values([sloppy, quorum_get([], 3, 4)]) == []


def test_a_read_begun_before_the_acknowledgement_promises_nothing() -> None:
    assert stale_values([strict_put("a", 1, 3), quorum_get([], 2, 4)]) == []


def test_a_write_that_may_have_replaced_the_put_excuses_the_read() -> None:
    assert stale_values([strict_put("a", 1, 2), delete(2.5, 2.8), quorum_get([], 3, 4)]) == []
    # One that certainly failed replaced nothing.
    failed = delete(2.5, 2.8, outcome=FAIL)
    assert stale_values([strict_put("a", 1, 2), failed, quorum_get([], 3, 4)]) == ["a"]


def test_a_disk_lost_in_between_voids_the_promise() -> None:
    ops = [strict_put("a", 1, 2), quorum_get([], 3, 4)]
    assert stale_values(ops, disk_losses=(2.5,)) == []
    assert stale_values(ops, disk_losses=(0.5,)) == ["a"]


def test_keys_whose_replicas_hold_different_states_diverge() -> None:
    one = DVVSet(VersionVector({"n1": 1}), (Sibling(Dot("n1", 1), b"a", False, 1),))
    two = DVVSet(VersionVector({"n1": 2}), (Sibling(Dot("n1", 2), b"b", False, 2),))
    states = {"same": {"n1": one, "n2": one}, "stale": {"n1": one, "n2": two},
              "missing": {"n1": None, "n2": one}, "absent": {"n1": None, "n2": None}}
    assert divergent_keys(states) == ["missing", "stale"]


EMPTY_ROOT = MerkleTree().root()
SOME_ROOT = MerkleTree.build([(b"k", b"digest")]).root()


def test_partitions_whose_replicas_report_different_roots_differ() -> None:
    replicas_of = {0: ["n1", "n2"], 1: ["n2", "n3"], 2: ["n1", "n3"], 3: ["n3"]}
    roots = {"n1": {0: SOME_ROOT, 2: EMPTY_ROOT},
             "n2": {0: SOME_ROOT, 1: EMPTY_ROOT},
             "n3": {1: EMPTY_ROOT, 2: SOME_ROOT, 3: SOME_ROOT}}
    # 1: no keys on either replica agrees; 2: no keys against some keys does not.
    assert differing_partitions(roots, replicas_of) == [2]
    assert partitions_with_keys(roots, replicas_of, EMPTY_ROOT) == 3  # all but 1


def test_a_replica_that_reported_no_root_counts_as_differing() -> None:
    replicas_of = {0: ["n1", "n2"], 1: ["n1", "n2"]}
    assert differing_partitions({"n1": {0: EMPTY_ROOT, 1: EMPTY_ROOT}}, replicas_of) == [0, 1]
    assert differing_partitions({"n1": {0: EMPTY_ROOT}, "n2": {0: EMPTY_ROOT, 1: EMPTY_ROOT}},
                                replicas_of) == [1]


class _NoContext:
    def time_remaining(self) -> None:
        return None


async def _reported_root(trees: PartitionTrees, partition: int) -> bytes:
    """The root a node answers to the chaos check's question (the roots op)."""
    # The tree questions never touch the replica.
    service = ReplicaService(None, Limits(1024, 1024, 10), RequestMetrics(),  # type: ignore[arg-type]
                             trees, partitions=8)
    ask = replica_pb2.ReplicaOp(roots=replica_pb2.ReplicaRoots(partitions=[partition]))
    response = await service.Batch(replica_pb2.ReplicaBatchRequest(ops=[ask]), _NoContext())
    (result,) = response.results
    assert result.status.code == 0 and len(result.hashes) == 1
    return bytes(result.hashes[0])


async def test_a_node_reports_the_empty_root_for_a_partition_it_holds_no_keys_of() -> None:
    untouched, emptied, holding = PartitionTrees(), PartitionTrees(), PartitionTrees()
    emptied.update(5, b"k", None, b"1")
    emptied.update(5, b"k", b"1", None)
    holding.update(5, b"k", None, b"1")
    assert await _reported_root(untouched, 5) == EMPTY_ROOT
    assert await _reported_root(emptied, 5) == EMPTY_ROOT
    assert await _reported_root(holding, 5) != EMPTY_ROOT


def test_the_fault_schedule_is_a_function_of_the_seed() -> None:
    import random

    def first(seed: int) -> list[object]:
        faults = schedule(random.Random(seed), ["n1", "n2", "n3"], ["c1"])
        return [next(faults) for _ in range(20)]

    assert first(7) == first(7)
    assert first(7) != first(8)
    assert {f.kind for f in first(7)} == {"kill", "pause", "kill-coordinator"}
    assert all(f.target == "c1" for f in first(7) if f.kind == "kill-coordinator")


def _state(*siblings: tuple[str, int, str]) -> DVVSet:
    """A final state of (node, counter, value) siblings, its history just covering them."""
    history: dict[str, int] = {}
    for node, counter, _ in siblings:
        history[node] = max(history.get(node, 0), counter)
    return DVVSet(VersionVector(history), tuple(
        Sibling(Dot(node, counter), value.encode(), False, 1) for node, counter, value in siblings))


def _with_context(op: Op, counters: dict[str, int]) -> Op:
    return dataclasses.replace(op, context=causal_context.encode(VersionVector(counters)).hex())


def test_a_sibling_an_acknowledged_context_covered_came_back() -> None:
    # The delete read {n1:5} (the put of "a" was n1:5); "a" must not survive it.
    ops = [put("a", 1, 2), _with_context(delete(3, 4), {"n1": 5})]
    report = check_superseded(ops, {"k": _state(("n1", 5, "a"))})
    assert (report.context_writes, report.checked_keys) == (1, 1)
    [back] = report.resurrected
    assert (back.key, back.value, back.dot) == ("k", "a", "n1:5")
    assert back.superseded_by.startswith("delete")


def test_siblings_the_context_did_not_cover_may_stay() -> None:
    # A later write (n1:9), a concurrent one (n2:1), and the same value
    # applied twice (n3:4, a retry at another replica) were not seen.
    ops = [put("a", 1, 2), _with_context(put("b", 3, 4), {"n1": 5})]
    final = _state(("n1", 9, "c"), ("n2", 1, "d"), ("n3", 4, "a"))
    assert check_superseded(ops, {"k": final}).resurrected == []


def test_only_acknowledged_writes_with_a_context_supersede() -> None:
    final = {"k": _state(("n1", 5, "a"))}
    unknown = _with_context(delete(3, 4, UNKNOWN), {"n1": 5})  # may never have been applied
    blind = delete(3, 4)
    report = check_superseded([put("a", 1, 2), unknown, blind], final)
    assert report.resurrected == [] and report.context_writes == 0
    # A key whose replicas never agreed is not judged here.
    assert check_superseded([_with_context(delete(3, 4), {"n1": 5})], {}).checked_keys == 0


def test_a_value_that_came_back_fails_the_run() -> None:
    ops = [put("a", 1, 2), _with_context(delete(3, 4), {"n1": 5})]
    agreed = Convergence(True, 0.5, [], [], 0, {"k": _state(("n1", 5, "a"))})
    summary = summarise(ops, {"k": ["a"]}, convergence=agreed)
    assert summary.resurrected == 1 and not summary.passed
    assert any(line.startswith("CAME BACK") and "'a'" in line for line in summary.lines())


def test_the_history_survives_its_json_lines(tmp_path: Path) -> None:
    history = History(clock=iter([0.0, 0.5]).__next__)
    history.add(put("a", 0.1, 0.2))
    history.add(get(["a"], 0.3, 0.4))
    history.fault("kill", "kill", "n1", "SIGKILL pid 1")
    history.write_jsonl(tmp_path / "history.jsonl")
    ops, faults = load_jsonl(tmp_path / "history.jsonl")
    assert ops == history.ops and faults == history.faults


def test_leader_mode_versions_survive_the_json_lines_and_older_files_still_load(
        tmp_path: Path) -> None:
    history = History(clock=lambda: 0.0)
    history.add(Op(0, "put", "k", "b", 0.1, 0.2, OK, version=9, if_version=4))
    history.add(Op(1, "get", "k", None, 0.3, 0.4, OK, siblings=("b",), version=9))
    history.add(Op(2, "put", "k", "c", 0.3, 0.4, FAIL, version=9, if_version=4))
    history.write_jsonl(tmp_path / "history.jsonl")
    ops, _ = load_jsonl(tmp_path / "history.jsonl")
    assert ops == history.ops
    older = tmp_path / "older.jsonl"
    older.write_text('{"type": "op", "client": 0, "kind": "put", "key": "k", "value": "a", '
                     '"invoke": 0.5, "complete": 0.7, "outcome": "ok"}\n')
    (op,), _ = load_jsonl(older)
    assert (op.version, op.if_version) == (None, None)


ROOTS_EQUAL = RootConvergence(True, 12.5, 64, 60, [3, 9], [], 50)
KEYS_AGREE = Convergence(True, 0.5, ["k"], [], 0, {"k": None})


def summarise(ops: list[Op], final: dict[str, list[str] | None],
              roots: RootConvergence = ROOTS_EQUAL, convergence: Convergence = KEYS_AGREE,
              counters: RunCounters | None = None) -> Summary:
    head = dict(seed=1, duration=10.0, faults_until=8.0, nodes=5, coordinators=1, replicas=3,
                r="2", w="2", clients=1, keys=1, crashed=[], write_once_keys=0, data_dir="")
    return from_reports(head, count_ops(ops), {"kill": 2},
                        check_lost_writes(ops, final, 1.0), check_never_written(ops),
                        check_superseded(ops, convergence.agreed),
                        check_duplicate_siblings(ops), roots, convergence,
                        counters or RunCounters(), final, 1.0)


def test_a_summary_with_a_lost_write_fails_and_says_which(tmp_path: Path) -> None:
    ops = [put("a", 1, 2), get(["a"], 3, 4), put("b", 5, 6, FAIL), delete(5, 9, UNKNOWN, "z")]
    summary = summarise(ops, {"k": [], "z": []})
    assert (summary.operations, summary.acknowledged, summary.failed,
            summary.unknown) == (4, 1, 1, 1)
    assert summary.lost == 1 and not summary.passed
    assert any(line.startswith("LOST") and "'a'" in line for line in summary.lines())
    summary.write(tmp_path / "summary.json")
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["lost"] == 1 and written["passed"] is False


def test_a_summary_reports_when_the_merkle_roots_agreed() -> None:
    summary = summarise([put("a", 1, 2)], {"k": ["a"]})
    assert summary.passed and summary.converged
    (line,) = [line for line in summary.lines() if line.startswith("converged")]
    assert "all 64 partitions (60 holding keys) 12.50 s after every process was healthy" in line
    assert "2 partition(s) differed at the first look" in line
    written = summary.to_json()
    assert (written["roots_converged"], written["roots_converge_seconds"],
            written["converged"]) == (True, 12.5, True)
    assert written["partitions_differing_at_start"] == [3, 9]


def test_roots_that_never_agree_fail_the_run_even_if_the_keys_do() -> None:
    stuck = RootConvergence(False, 90.3, 64, 60, [3, 9, 11], [9, 11], 360)
    summary = summarise([put("a", 1, 2)], {"k": ["a"]}, roots=stuck)
    assert summary.keys_agree and not summary.converged and not summary.passed
    (line,) = [line for line in summary.lines() if line.startswith("converged")]
    assert "NO: the Merkle roots of 2 of 64 partition(s) still differ 90 s" in line
    assert line.endswith(": 9, 11")


def test_keys_that_still_differ_after_the_final_reads_fail_the_run() -> None:
    split = Convergence(False, 30.2, ["k"], ["k"], 30)
    summary = summarise([put("a", 1, 2)], {"k": ["a"]}, convergence=split)
    assert summary.roots_converged and not summary.passed
    assert any(line.startswith("keys agree     NO: 1 key(s) still differ")
               for line in summary.lines())


def node_sample(written: float, replayed: float, exchanges: float, repaired: float,
                read_repairs: float) -> dict[str, float]:
    return {"kvstore_hints_written_total": written, "kvstore_hints_replayed_total": replayed,
            "kvstore_anti_entropy_exchanges_total": exchanges,
            "kvstore_anti_entropy_keys_repaired_total": repaired,
            "kvstore_read_repairs_total": read_repairs, "kvstore_tombstones_purged_total": 1.0}


def test_a_process_counters_add_up_over_its_lifetimes() -> None:
    counters = RunCounters()
    counters.end_lifetime("n1", node_sample(5, 0, 10, 1, 2))  # read just before its kill
    counters.end_lifetime("n1", node_sample(1, 3, 4, 0, 0))  # the restarted n1, at the end
    counters.end_lifetime("n2", node_sample(0, 2, 7, 3, 1))
    counters.end_lifetime("c1", {"kvstore_read_repairs_total": 4.0})  # a coordinator
    assert counters.totals() == {"hints_written": 6, "hints_replayed": 5,
                                 "anti_entropy_exchanges": 21, "anti_entropy_keys_repaired": 4,
                                 "read_repairs": 7, "tombstones_purged": 3}
    assert counters.by_process["n1"]["hints_written"] == 6
    assert dict(counters.by_process["c1"]) == {"read_repairs": 4}
    assert counters.lifetimes == 4 and counters.unread == []


def test_a_lifetime_whose_counters_could_not_be_read_is_named_not_guessed() -> None:
    counters = RunCounters()
    counters.end_lifetime("n3", None, "n3 (pid 42)")
    assert counters.unread == ["n3 (pid 42)"] and counters.lifetimes == 0
    assert set(counters.totals().values()) == {0}


def test_the_summary_gives_the_healing_counters() -> None:
    counters = RunCounters()
    counters.end_lifetime("n1", node_sample(5, 4, 30, 2, 6))
    counters.end_lifetime("n2", None, "n2 (pid 7)")
    summary = summarise([put("a", 1, 2)], {"k": ["a"]}, counters=counters)
    lines = summary.lines()
    assert "hints          written 5, replayed 4" in lines
    assert "anti-entropy   2 key(s) repaired in 30 exchange(s); 1 tombstone(s) purged" in lines
    assert any(line.startswith("read repair    6 replica(s)") for line in lines)
    assert any(line.startswith("counted        1 process lifetime(s)")
               and line.endswith("NOT counted: n2 (pid 7)") for line in lines)
    written = summary.to_json()
    assert (written["hints_written"], written["hints_replayed"], written["read_repairs"],
            written["anti_entropy_keys_repaired"], written["anti_entropy_exchanges"]) == \
        (5, 4, 6, 2, 30)
    assert written["counters_by_process"]["n1"]["hints_written"] == 5


# 60 s of workload, then up to 90 s for the Merkle roots to agree (the
# --converge-timeout default), the final reads and the key check, plus the
# cluster's start and stop: room for a failing run to print its report.
@pytest.mark.process
@pytest.mark.timeout(330)
def test_a_chaos_run_loses_no_acknowledged_write(tmp_path: Path) -> None:
    data_dir = tmp_path / "chaos"
    run = subprocess.run([sys.executable, "-m", "chaos", "--duration", "60", "--seed", "1",
                          "--data-dir", str(data_dir)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, report
    summary = json.loads((data_dir / "summary.json").read_text())
    assert summary["lost"] == 0, report
    assert summary["never_written"] == 0, report
    # Nothing deleted or replaced came back, with tombstones collected during the run.
    assert summary["resurrected"] == 0 and summary["context_writes"] > 0, report
    assert summary["tombstones_purged"] > 0, report
    # Converged by hinted handoff and anti-entropy alone, before any final read.
    assert summary["roots_converged"], report
    assert summary["partitions"] == 64 and summary["partitions_differing_at_end"] == [], report
    assert summary["partitions_with_keys"] > 0, report  # equal roots of empty trees prove nothing
    assert summary["converged"] and summary["keys_agree"], report
    for counter in ("hints_written", "hints_replayed", "anti_entropy_exchanges",
                    "anti_entropy_keys_repaired", "read_repairs", "tombstones_purged"):
        assert summary[counter] >= 0, report
    assert summary["anti_entropy_exchanges"] > 0, report  # anti-entropy ran
    assert summary["counted_lifetimes"] >= 6, report  # every process at least once
    assert sum(summary["faults"].values()) > 0, report
    assert summary["acknowledged"] > 0, report
    assert (data_dir / "history.jsonl").stat().st_size > 0


# 20 s of leader-mode workload under kills and pauses, the final reads and
# the linearizability check (seconds here), plus the cluster's start and stop.
@pytest.mark.process
@pytest.mark.timeout(240)
def test_a_leader_mode_chaos_run_is_linearizable(tmp_path: Path) -> None:
    data_dir = tmp_path / "chaos"
    run = subprocess.run([sys.executable, "-m", "chaos", "--mode", "leader", "--duration", "20",
                          "--seed", "1", "--data-dir", str(data_dir)],
                         cwd=REPO, capture_output=True, text=True, timeout=200)
    report = f"stdout:\n{run.stdout}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, report
    summary = json.loads((data_dir / "summary.json").read_text())
    assert summary["passed"] and summary["verdict"] == "linearizable", report
    assert summary["unread_keys"] == [] and summary["unconverged"] == {}, report
    assert sum(summary["faults"].values()) > 0, report
    assert summary["ok"] > 100, report
    # Compare-and-set ran both ways: applied, and refused with a version.
    history = [json.loads(line) for line in (data_dir / "history.jsonl").open()]
    ops = [entry for entry in history if entry["type"] == "op"]
    assert any(op["if_version"] is not None and op["outcome"] == "ok" for op in ops), report
    assert any(op["if_version"] is not None and op["outcome"] == "fail"
               and op["version"] is not None for op in ops), report
