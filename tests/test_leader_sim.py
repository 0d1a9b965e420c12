"""Leader mode in the deterministic simulation (chaos/sim/leader/): seeds
pass with every check exercised and replay exactly, planted Raft bugs are
caught, the Raft oracle's checks bite on violations made up by hand, and a
linearizability search that runs out of its budget fails a seed.

The long run is `make sim MODE=leader SEEDS=10000`; here a few seeds in
process, and (process tests) 150 through the command line.
"""

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.sim.bugs import LEADER_BUGS, MODE_OF_BUG
from chaos.sim.leader.oracle import RaftOracle
from chaos.sim.leader.run import run_leader_seed, scenario_for
from chaos.sim.leader.verdict import linearizability_problems
from chaos.sim.loop import run_virtual
from kvstore.leader import commands
from kvstore.leader.commands import Put
from kvstore.leader.host import LeaderChange, MultiRaft
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.persistence import GroupWrite, PassWrite
from kvstore.leader.raft.config import ReadMode
from kvstore.leader.raft.messages import Entry, HardState

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)

# The first seed (from 1) that catches each planted bug, and what it
# reports: the README's table. If a change to the simulation moves them,
# the bounded search below still has to find each within its bound.
CAUGHT_BY = {
    "commit-on-a-minority": (3, "state machine safety"),
    "vote-twice-in-a-term": (3, "one vote per term"),
    "vote-for-any-log": (2, "leader completeness"),
    "read-without-read-index": (5, "stale read"),
    "read-before-applied": (5, "stale read"),
    "restore-without-fence": (3, "partition halted"),
}
BUG_SEED_BOUND = 60


# -- whole runs ---------------------------------------------------------------------


def test_a_leader_seed_replays_exactly() -> None:
    first, again = run_leader_seed(5), run_leader_seed(5)
    assert first.story(everything=True) == again.story(everything=True)
    assert (first.problems, first.history) == (again.problems, again.history)
    assert first.operations > 100 and first.faults and first.leader_terms > 5


def test_leader_seeds_pass_with_every_check_exercised() -> None:
    results = [run_leader_seed(seed) for seed in range(1, 9)]
    failed = {r.scenario.seed: r.problems for r in results if not r.passed}
    assert not failed, f"failing seeds (replay: make sim MODE=leader SEED=...): {failed}"
    history = [op for r in results for op in r.history]
    assert sum(r.checked_reads for r in results) > 1000
    assert sum(r.leader_terms for r in results) > 50
    assert sum(r.snapshots_installed for r in results) > 0
    assert sum(op.outcome == "unknown" for op in history) > 20
    assert sum(op.outcome == "fail" and op.version is not None for op in history) > 20
    kinds = set().union(*(r.faults for r in results))
    assert {"crash", "crash-persisting", "restart", "partition", "isolate", "cut",
            "cut-both", "transfer-leader", "heal-links"} <= kinds


def test_leader_scenarios_vary_with_the_seed() -> None:
    scenarios = [scenario_for(seed) for seed in range(1, 40)]
    assert {s.nodes for s in scenarios} == {3, 5}
    assert {s.raft.read_mode for s in scenarios} == {ReadMode.READ_INDEX, ReadMode.LEASE}
    assert {s.raft.check_quorum for s in scenarios} == {True, False}
    assert {s.raft.slow_disk for s in scenarios} == {True, False}
    assert len({s.raft.max_append_bytes for s in scenarios}) > 2
    assert len({s.network.drop_probability for s in scenarios}) > 2


# -- planted bugs -------------------------------------------------------------------


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_a_planted_raft_bug_is_caught_by_its_seed(bug: str) -> None:
    seed, problem = CAUGHT_BY[bug]
    assert run_leader_seed(seed).passed, "the seed passes without the bug"
    caught = run_leader_seed(seed, bug)
    assert any(p.startswith(problem) for p in caught.problems), caught.problems


def test_every_planted_raft_bug_has_a_catching_seed() -> None:
    assert set(CAUGHT_BY) == set(LEADER_BUGS)
    assert all(MODE_OF_BUG[bug] == "leader" for bug in CAUGHT_BY)


# -- the oracle's checks --------------------------------------------------------------


def oracle_and_host() -> tuple[RaftOracle, MultiRaft, MemoryRaftStore, list[str]]:
    lines: list[str] = []
    store = MemoryRaftStore()
    host = MultiRaft("n2", store, clock_ms=lambda: 0, seed=1)
    host.add_group(0, ("n1", "n2", "n3"))
    return RaftOracle(lines.append), host, store, lines


def persist(oracle: RaftOracle, node: str, host: MultiRaft, store: MemoryRaftStore,
            write: GroupWrite) -> None:
    batch = PassWrite((write,), sync=True)
    oracle.persisted(node, host, store, batch, store.write(batch))


def put_entry(index: int, term: int, value: bytes) -> Entry:
    return Entry(index, term, commands.encode(Put(b"k", value, b"r%d" % index)))


def test_the_oracle_sees_two_leaders_in_one_term() -> None:
    oracle, _, _, _ = oracle_and_host()
    oracle.leader_changed("n1", LeaderChange(0, "n1", 3))
    oracle.leader_changed("n2", LeaderChange(0, "n1", 3))  # n2 follows n1: fine
    assert not oracle.problems
    oracle.leader_changed("n2", LeaderChange(0, "n2", 3))
    assert oracle.problems[0].startswith("election safety: n1 and n2 both lead partition 0 "
                                         "in term 3")
    assert oracle.failed.is_set()


def test_the_oracle_sees_a_second_vote_in_a_term() -> None:
    async def main() -> list[str]:
        oracle, host, store, _ = oracle_and_host()
        persist(oracle, "n2", host, store, GroupWrite(0, HardState(term=2, vote="n1")))
        persist(oracle, "n2", host, store, GroupWrite(0, HardState(term=2, vote="n1", commit=1)))
        assert not oracle.problems
        persist(oracle, "n2", host, store, GroupWrite(0, HardState(term=2, vote="n3")))
        return oracle.problems

    assert run_virtual(main())[0].startswith("one vote per term: n2 voted for n1 in term 2")


def test_the_oracle_sees_logs_that_do_not_match() -> None:
    async def main() -> list[str]:
        oracle, host, _, _ = oracle_and_host()
        a, b = MemoryRaftStore(), MemoryRaftStore()
        persist(oracle, "n1", host, a, GroupWrite(0, entries=(Entry(1, 1, b""),
                                                             Entry(2, 2, b""))))
        persist(oracle, "n2", host, b, GroupWrite(0, entries=(Entry(1, 1, b""),)))
        persist(oracle, "n2", host, b, GroupWrite(0, entries=(Entry(2, 2, b""),)))
        assert not oracle.problems  # the same entries, in two writes
        # An entry of term 2 at 2 that follows another term than n1's does.
        persist(oracle, "n3", host, MemoryRaftStore(),
                GroupWrite(0, entries=(Entry(1, 2, b""), Entry(2, 2, b""))))
        return oracle.problems

    assert run_virtual(main())[0].startswith("log matching: partition 0 has two entries of "
                                             "term 2 at 2")


def test_the_oracle_sees_two_nodes_apply_different_entries_at_an_index() -> None:
    async def main() -> list[str]:
        oracle, host, _, _ = oracle_and_host()
        # n3 applies an entry of another term at 1 (its log matches no one's there).
        for node, term, value in (("n1", 1, b"x"), ("n2", 1, b"x"), ("n3", 2, b"y")):
            entry = put_entry(1, term, value)
            persist(oracle, node, host, MemoryRaftStore(),
                    GroupWrite(0, HardState(term, None, 1), (entry,), committed=(entry,)))
        return oracle.problems

    (problem,) = run_virtual(main())
    assert problem.startswith("state machine safety: at 1 of partition 0, n1 applied term 1 ")
    assert "n3 term 2" in problem


def test_a_read_may_return_only_what_stood_between_its_call_and_answer() -> None:
    async def main() -> RaftOracle:
        oracle, host, store, _ = oracle_and_host()
        for index in (1, 2, 3):  # applied at 0.0, 1.0 and 2.0
            entry = put_entry(index, 1, b"v%d" % index)
            persist(oracle, "n2", host, store, GroupWrite(0, entries=(entry,),
                                                          committed=(entry,)))
            await asyncio.sleep(1.0)
        return oracle

    oracle = run_virtual(main())
    low, high, states = oracle.states_between(0, b"k", invoke=1.5, complete=2.5)
    assert (low, high) == (2, 3) and states == [(2, b"v2"), (3, b"v3")]
    assert oracle.states_between(0, b"k", invoke=0.5, complete=0.6)[2] == [(1, b"v1")]
    # Applied at the very moment of the call: not necessarily seen.
    assert oracle.states_between(0, b"k", invoke=1.0, complete=1.0)[2] == [(1, b"v1"),
                                                                          (2, b"v2")]
    assert oracle.states_between(0, b"other", invoke=0.5, complete=3.0)[2] == [(0, None)]


def test_a_linearizability_search_out_of_budget_fails_the_seed() -> None:
    history = run_leader_seed(3).history
    assert not linearizability_problems(history)
    starved = linearizability_problems(history, looks_per_key=0.5)
    assert starved and all(p.startswith("linearizability unknown (counted as a failure)")
                           for p in starved)


# -- the command line (process tests) ---------------------------------------------


def sim(*args: str, hash_seed: str = "0", timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, "-m", "chaos.sim", "--mode", "leader", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.process
@pytest.mark.timeout(400)
def test_a_hundred_and_fifty_leader_seeds_pass() -> None:
    run = sim("--seeds", "150", "--jobs", str(min(os.cpu_count() or 1, 4)), timeout=380)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"150 seeds \(1\.\.150\) in leader mode: 150 passed, 0 failed",
                     run.stdout), run.stdout


@pytest.mark.process
@pytest.mark.timeout(300)
@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_a_planted_raft_bug_is_caught_within_a_bounded_number_of_seeds(bug: str) -> None:
    run = sim("--seeds", str(BUG_SEED_BOUND), "--bug", bug, "-x", "--jobs", "1")
    assert run.returncode == 1, f"{bug} not caught in {BUG_SEED_BOUND} seeds:\n{run.stdout}"
    first = re.search(r"seed (\d+): FAIL", run.stdout)
    assert first is not None, run.stdout
    assert int(first.group(1)) == CAUGHT_BY[bug][0], run.stdout


@pytest.mark.process
@pytest.mark.timeout(120)
def test_a_failing_leader_seed_prints_its_story_and_replays_under_any_hash_seed() -> None:
    seed = CAUGHT_BY["read-without-read-index"][0]
    runs = [sim("--seed", str(seed), "--bug", "read-without-read-index", hash_seed=h)
            for h in ("1", "2")]
    for run in runs:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "problem: stale read" in run.stdout and "problem: not linearizable" in run.stdout
        assert "FAULT" in run.stdout and "OP client" in run.stdout
        assert (f"replay: make sim MODE=leader SEED={seed} BUG=read-without-read-index"
                in run.stdout)

    def without_wall_time(text: str) -> str:
        return re.sub(r"in [0-9.]+ wall s", "", text)

    assert without_wall_time(runs[0].stdout) == without_wall_time(runs[1].stdout)


@pytest.mark.process
@pytest.mark.timeout(60)
def test_a_bug_of_the_other_mode_is_refused() -> None:
    run = subprocess.run([sys.executable, "-m", "chaos.sim", "--seed", "1", "--bug",
                          "read-before-applied"], cwd=REPO, capture_output=True, text=True,
                         timeout=50)
    assert run.returncode == 2 and "add --mode leader" in run.stderr
