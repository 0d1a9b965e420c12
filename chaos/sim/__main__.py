"""`python -m chaos.sim`: run the deterministic simulation (see
chaos/sim/__init__.py; `make sim SEED=... | SEEDS=...`).

    --mode MODE       leaderless (the default) or leader: a Raft group per partition
                      (chaos/sim/leader/)
    --seed N          one seed; on failure its problems, its story (the faults,
                      the store's warnings and the operations on the keys
                      concerned) and the command that replays it
    --seeds COUNT     seeds --first .. --first+COUNT-1, on --jobs processes; the
                      failing seeds, and the speed in simulated seconds per wall second
    --bug NAME        plant a deliberately broken variant of the mode (chaos/sim/bugs.py)
    --trace           with --seed: print the whole story, every operation included
    -x                with --seeds: stop at the first failing seed (in seed order)

Exit status: 0 when every seed passed, 1 when one failed, 2 on bad usage.
"""

import argparse
import os
import sys
import time
import itertools
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from chaos.sim.bugs import BUGS, MODE_OF_BUG
from chaos.sim.leader.run import LeaderSimResult, run_leader_seed
from chaos.sim.run import SimResult, run_seed

MODES = ("leaderless", "leader")
Result = SimResult | LeaderSimResult


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos.sim",
                                     description="Deterministic simulation of the cluster.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="run this one seed")
    which.add_argument("--seeds", type=int, help="run this many seeds")
    parser.add_argument("--mode", choices=MODES, default="leaderless",
                        help="the replication mode to simulate")
    parser.add_argument("--first", type=int, default=1, help="first seed of --seeds")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes for --seeds")
    parser.add_argument("--bug", choices=sorted(BUGS), help="plant a broken variant")
    parser.add_argument("--trace", action="store_true", help="print the whole story")
    parser.add_argument("-x", "--stop-at-first-failure", action="store_true",
                        help="with --seeds: stop at the first seed that fails")
    options = parser.parse_args(argv)
    if options.seeds is not None and options.seeds < 1:
        parser.error("--seeds must be at least 1")
    if options.jobs < 1:
        parser.error("--jobs must be at least 1")
    if options.bug is not None and MODE_OF_BUG[options.bug] != options.mode:
        parser.error(f"--bug {options.bug} is planted in {MODE_OF_BUG[options.bug]} mode: "
                     f"add --mode {MODE_OF_BUG[options.bug]}")
    return options


def replay_command(seed: int, bug: str | None, mode: str = "leaderless") -> str:
    return (f"make sim{' MODE=leader' if mode == 'leader' else ''} SEED={seed}"
            + (f" BUG={bug}" if bug else ""))


def run_one(mode: str, seed: int, bug: str | None) -> Result:
    """One seed of `mode`'s simulation, judged."""
    return run_leader_seed(seed, bug) if mode == "leader" else run_seed(seed, bug)


def _report(result: Result, mode: str, *, everything: bool) -> None:
    print(result.summary())
    for note in result.notes:
        print(f"  note: {note}")
    if result.passed and not everything:
        return
    for problem in result.problems:
        print(f"  problem: {problem}")
    print("story:")
    for line in result.story(everything=everything):
        print(f"  {line}")
    if not result.passed:
        print(f"replay: {replay_command(result.scenario.seed, result.bug, mode)}")


def _one(job: tuple[str, int, str | None]) -> tuple[int, bool, list[str], float, float]:
    mode, seed, bug = job
    result = run_one(mode, seed, bug)
    return seed, result.passed, result.problems, result.virtual_seconds, result.wall_seconds


def _many(mode: str, first: int, count: int, bug: str | None, jobs: int) -> Iterator[
        tuple[int, bool, list[str], float, float]]:
    """Results in seed order; work is handed out a few seeds ahead, so a
    caller that stops early (-x) does not wait for the whole range."""
    work = [(mode, seed, bug) for seed in range(first, first + count)]
    if jobs == 1:
        yield from map(_one, work)
        return
    pool = ProcessPoolExecutor(jobs)
    try:
        pending: deque[Future[tuple[int, bool, list[str], float, float]]] = deque()
        jobs_left = iter(work)
        for job in itertools.islice(jobs_left, 4 * jobs):
            pending.append(pool.submit(_one, job))
        while pending:
            result = pending.popleft().result()
            for job in itertools.islice(jobs_left, 1):
                pending.append(pool.submit(_one, job))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    options = _parse(argv)
    if options.seed is not None:
        result = run_one(options.mode, options.seed, options.bug)
        _report(result, options.mode, everything=options.trace)
        return 0 if result.passed else 1
    started = time.perf_counter()
    failed: list[tuple[int, list[str]]] = []
    simulated = 0.0
    done = 0
    for seed, passed, problems, virtual, _wall in _many(options.mode, options.first,
                                                        options.seeds, options.bug,
                                                        options.jobs):
        done += 1
        simulated += virtual
        if not passed:
            failed.append((seed, problems))
            print(f"seed {seed}: FAIL: {problems[0].splitlines()[0]}" + (
                f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""), flush=True)
            if options.stop_at_first_failure:
                break
        if done % 500 == 0:
            print(f"... {done} seeds, {len(failed)} failed ({simulated:.0f} simulated s in "
                  f"{time.perf_counter() - started:.0f} wall s)", flush=True)
    wall = time.perf_counter() - started
    bug = f" with planted bug {options.bug}" if options.bug else ""
    mode = " in leader mode" if options.mode == "leader" else ""
    print(f"{done} seeds ({options.first}..{options.first + done - 1}){mode}{bug}: "
          f"{done - len(failed)} passed, {len(failed)} failed; {simulated:.0f} "
          f"simulated s in {wall:.1f} wall s on {options.jobs} process(es): "
          f"{simulated / wall:.0f} simulated s per wall s")
    if failed:
        print(f"replay the first: {replay_command(failed[0][0], options.bug, options.mode)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
