"""The deterministic simulation (chaos/sim/): its virtual-time loop, its
network, and whole runs: seeds pass, replay exactly, and catch planted bugs.

The long runs are `make sim SEEDS=10000`; here a few seeds in process, and
(process tests) a few hundred through the command line on every core.
"""

import asyncio
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.sim.bugs import LEADERLESS_BUGS, planted
from chaos.sim.loop import Deadlock, run_virtual
from chaos.sim.network import Network, NetworkSettings
from chaos.sim.run import run_seed, scenario_for
from chaos.sim.store import SimStore
from kvstore.errors import NOT_APPLIED, DeadlineExceeded, Unavailable
from kvstore.leaderless.write_request import WriteRequest
from kvstore.storage.engine import Write
from kvstore.storage.memory_engine import MemoryEngine
from kvstore.storage.record import Record

REPO = Path(__file__).resolve().parent.parent

# The first seed (from 1) that catches each planted bug, and what it reports:
# the README's table. If a change to the simulation moves them, the bounded
# search below still has to find each within BUG_SEED_BOUND seeds.
CAUGHT_BY = {
    "ack-before-quorum": (1, "under-replicated"),
    "hint-dropped-early": (1, "under-replicated"),
    "purge-with-replica-down": (11, "came back"),
    "read-without-merge": (4, "stale quorum read"),
}
BUG_SEED_BOUND = 60


# -- the loop ---------------------------------------------------------------------


def test_virtual_time_jumps_to_the_next_timer() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = []
        for delay in (5.0, 0.25, 3600.0):
            await asyncio.sleep(delay)
            seen.append(loop.time())
        return seen

    assert run_virtual(main()) == [5.0, 5.25, 3605.25]


def test_timeouts_fire_at_their_virtual_deadline() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.5):
                await asyncio.Event().wait()
        return loop.time()

    assert run_virtual(main()) == 2.5


def test_waiting_on_what_never_happens_is_a_deadlock() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(Deadlock):
        run_virtual(main())


# -- the network --------------------------------------------------------------------


class Process:
    def __init__(self, name: str) -> None:
        self.name = name
        self.running = True
        self.paused = False
        self.served = 0

    def spawn(self, work: object) -> None:
        asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]


async def serve(process: Process) -> str:
    process.served += 1
    return f"answer from {process.name}"


def network(**settings: float) -> tuple[Network, Process, Process]:
    net = Network(random.Random(1), NetworkSettings(**settings))  # type: ignore[arg-type]
    a, b = Process("a"), Process("b")
    net.attach(a)
    net.attach(b)
    return net, a, b


def test_a_call_is_answered_after_the_latency_both_ways() -> None:
    async def main() -> tuple[str, float]:
        net, a, _b = network(min_delay=0.01, max_delay=0.01, spike_probability=0)
        answer = await net.call(a, "b", serve, 1.0, "test")
        return answer, asyncio.get_running_loop().time()

    answer, at = run_virtual(main())
    assert answer == "answer from b" and at == pytest.approx(0.02)


def test_a_one_way_cut_stops_one_direction_only() -> None:
    async def main() -> None:
        net, a, b = network()
        net.cut("a", "b")
        with pytest.raises(DeadlineExceeded):
            await net.call(a, "b", serve, 0.5, "test")
        assert b.served == 0
        # b's requests reach a, but a's answers to b are cut too.
        with pytest.raises(DeadlineExceeded):
            await net.call(b, "a", serve, 0.5, "test")
        assert a.served == 1
        net.heal_all()
        assert await net.call(a, "b", serve, 0.5, "test") == "answer from b"

    run_virtual(main())


def test_a_duplicated_message_runs_twice_and_answers_once() -> None:
    async def main() -> None:
        net, a, b = network(duplicate_probability=1.0)
        assert await net.call(a, "b", serve, 1.0, "test") == "answer from b"
        await asyncio.sleep(1.0)
        assert b.served == 2

    run_virtual(main())


def test_a_process_that_is_not_running_refuses_and_nothing_was_applied() -> None:
    async def main() -> None:
        net, a, _b = network()
        net.detach("b")
        with pytest.raises(Unavailable) as refused:
            await net.call(a, "b", serve, 1.0, "test")
        assert refused.value.outcome == NOT_APPLIED

    run_virtual(main())


def test_a_paused_process_answers_when_it_resumes() -> None:
    async def main() -> float:
        net, a, b = network(min_delay=0.001, max_delay=0.001, spike_probability=0)
        b.paused = True
        loop = asyncio.get_running_loop()
        loop.call_later(3.0, lambda: (setattr(b, "paused", False), net.resume("b")))
        assert await net.call(a, "b", serve, 10.0, "test") == "answer from b"
        return loop.time()

    assert run_virtual(main()) == pytest.approx(3.001, abs=1e-6)


# -- the store ----------------------------------------------------------------------


def test_a_crash_loses_exactly_the_writes_not_yet_committed() -> None:
    engine = MemoryEngine()
    value = Record(version=b"v", timestamp=1, tombstone=False, value=b"x")

    async def main() -> None:
        async with SimStore(engine, lambda: 0.01) as store:
            await store.write(Write(0, b"committed", lambda current: value))
            pending = asyncio.get_running_loop().create_task(
                store.write(Write(0, b"in flight", lambda current: value)))
            await asyncio.sleep(0.005)  # the commit has started, not ended
            store.crash()
            await asyncio.sleep(0.1)
            assert not pending.done()  # never answered
            pending.cancel()

    run_virtual(main())
    assert engine.read(0, b"committed") == value
    assert engine.read(0, b"in flight") is None


# -- whole runs ---------------------------------------------------------------------


def test_a_seed_replays_exactly() -> None:
    first, again = run_seed(3), run_seed(3)
    assert first.story(everything=True) == again.story(everything=True)
    assert (first.problems, first.operations) == (again.problems, again.operations)
    assert first.operations > 100 and first.faults


@pytest.mark.timeout(120)
def test_seeds_pass_with_every_check_exercised() -> None:
    results = [run_seed(seed) for seed in range(1, 13)]
    failed = {r.scenario.seed: r.problems for r in results if not r.passed}
    assert not failed, f"failing seeds (replay: make sim SEED=...): {failed}"
    assert sum(r.checked_puts for r in results) > 100
    assert sum(r.checked_reads for r in results) > 50
    kinds = set().union(*(r.faults for r in results))
    assert {"crash", "restart", "pause", "cut", "cut-both", "isolate"} <= kinds


def test_scenarios_vary_with_the_seed() -> None:
    scenarios = [scenario_for(seed) for seed in range(1, 40)]
    assert {s.nodes for s in scenarios} == {3, 5}
    assert len({s.network.drop_probability for s in scenarios}) > 2
    assert any(s.faults.max_wipes for s in scenarios)


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_a_planted_bug_is_caught_by_its_seed(bug: str) -> None:
    seed, problem = CAUGHT_BY[bug]
    assert run_seed(seed).passed, "the seed passes without the bug"
    caught = run_seed(seed, bug)
    assert any(p.startswith(problem) for p in caught.problems), caught.problems


def test_every_planted_bug_has_a_catching_seed() -> None:
    assert set(CAUGHT_BY) == set(LEADERLESS_BUGS)


def test_a_planted_bug_is_undone_after_its_run() -> None:
    applied = WriteRequest.applied
    with planted("ack-before-quorum"):
        assert WriteRequest.applied is not applied
    assert WriteRequest.applied is applied
    with pytest.raises(ValueError, match="no planted bug"):
        with planted("no-such-bug"):
            pass


# -- the command line (process tests) ---------------------------------------------


def sim(*args: str, hash_seed: str = "0", timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, "-m", "chaos.sim", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.process
@pytest.mark.timeout(400)
def test_a_few_hundred_seeds_pass() -> None:
    run = sim("--seeds", "300", "--jobs", str(min(os.cpu_count() or 1, 4)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"300 seeds \(1\.\.300\): 300 passed, 0 failed", run.stdout), run.stdout


@pytest.mark.process
@pytest.mark.timeout(400)
@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_a_planted_bug_is_caught_within_a_bounded_number_of_seeds(bug: str) -> None:
    run = sim("--seeds", str(BUG_SEED_BOUND), "--bug", bug, "-x", "--jobs", "1")
    assert run.returncode == 1, f"{bug} not caught in {BUG_SEED_BOUND} seeds:\n{run.stdout}"
    first = re.search(r"seed (\d+): FAIL", run.stdout)
    assert first is not None, run.stdout
    assert int(first.group(1)) == CAUGHT_BY[bug][0], run.stdout


@pytest.mark.process
@pytest.mark.timeout(120)
def test_a_failing_seed_prints_its_story_and_replays_under_any_hash_seed() -> None:
    seed = CAUGHT_BY["purge-with-replica-down"][0]
    runs = [sim("--seed", str(seed), "--bug", "purge-with-replica-down", hash_seed=h)
            for h in ("1", "2")]
    for run in runs:
        assert run.returncode == 1, run.stdout + run.stderr
        assert "problem: came back" in run.stdout and "FAULT" in run.stdout
        assert f"replay: make sim SEED={seed} BUG=purge-with-replica-down" in run.stdout

    def without_wall_time(text: str) -> str:
        return re.sub(r"in [0-9.]+ wall s", "", text)

    assert without_wall_time(runs[0].stdout) == without_wall_time(runs[1].stdout)
