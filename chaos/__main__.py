"""`python -m chaos`: parse the flags, run once, exit 0 when every check
passed, 1 when one failed, 2 when the run could not be carried out."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from chaos.leader_run import LeaderOptions, run_leader
from chaos.run import Options, run
from kvclient.consistency import Level


def level(text: str) -> Level:
    """`--r`/`--w`: a number of replicas, or one, quorum, all."""
    return int(text) if text.isdigit() else text


def parse(argv: list[str]) -> Options | LeaderOptions:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description="Run a kvstore cluster under faults and check what the clients saw.")
    parser.add_argument("--mode", choices=("leaderless", "leader"), default="leaderless",
                        help="leaderless (default): quorums, checked for lost writes and "
                             "convergence; leader: a Raft group per partition, reads, writes "
                             "and compare-and-set on a few hot keys, checked for "
                             "linearizability")
    parser.add_argument("--duration", type=float, default=30.0,
                        help="seconds of workload; faults stop for the last 20%% (default 30)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the fault schedule and the clients' choices "
                             "(default: random, printed)")
    parser.add_argument("--nodes", type=int, default=None,
                        help="storage nodes (default 5; leader mode 3)")
    parser.add_argument("--replicas", type=int, default=3, help="N, replicas per key (default 3)")
    parser.add_argument("--r", type=level, default=2, help="read quorum (default 2)")
    parser.add_argument("--w", type=level, default=2, help="write quorum (default 2)")
    parser.add_argument("--clients", type=int, default=8, help="client tasks (default 8)")
    parser.add_argument("--converge-timeout", type=float, default=90.0,
                        help="seconds after the faults are healed within which every "
                             "partition's replicas must report equal Merkle roots (default 90)")
    parser.add_argument("--tombstone-grace", type=float, default=20.0,
                        help="the nodes' tombstone_grace_seconds: tombstones older than this "
                             "are collected during the run (default 20)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="a fresh directory for the cluster, logs, history.jsonl and "
                             "summary.json (default: a temporary one, removed if the run passes)")
    parser.add_argument("--tls", action="store_true",
                        help="run the cluster with mTLS on every link (cluster up --tls)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary data dir even when the run passes")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.converge_timeout <= 0:
        parser.error("--converge-timeout must be positive")
    if args.tombstone_grace < 0:
        parser.error("--tombstone-grace must be at least 0")
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    if args.mode == "leader":
        return LeaderOptions(seed=seed, duration=args.duration, nodes=args.nodes or 3,
                             replicas=args.replicas, clients=args.clients,
                             data_dir=args.data_dir, keep=args.keep, tls=args.tls)
    return Options(seed=seed, duration=args.duration, nodes=args.nodes or 5,
                   replicas=args.replicas,
                   r=args.r, w=args.w, clients=args.clients,
                   converge_timeout=args.converge_timeout,
                   tombstone_grace=args.tombstone_grace, data_dir=args.data_dir,
                   keep=args.keep, tls=args.tls)


def main(argv: list[str] | None = None) -> int:
    options = parse(sys.argv[1:] if argv is None else argv)

    def say(line: str) -> None:
        print(line, flush=True)

    def warn(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if isinstance(options, LeaderOptions):
            return run_leader(options, say, warn)
        return run(options, say, warn)
    except KeyboardInterrupt:
        warn("interrupted; every process started was stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
