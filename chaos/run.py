"""One chaos run, start to finish: start the cluster, run the workload and
the nemesis together, stop the faults for a quiet period at the end, heal
everything, wait for the replicas' Merkle roots to agree by themselves, read
the final state, check that it agrees key by key, check, summarise.

Owns the order of these steps and the run's files in the data dir
(history.jsonl, summary.json, next to what `cluster up` keeps there). Every
process it starts is stopped in a `finally`, whatever happens.
"""

from __future__ import annotations

import asyncio
import functools
import random
import shutil
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from chaos.checkers import (check_duplicate_siblings, check_lost_writes, check_never_written,
                            check_superseded, divergent_keys)
from chaos.cluster import ClusterError, LocalCluster
from chaos.convergence import ReplicaReader, final_reads, wait_converged, wait_roots_equal
from chaos.counters import RunCounters, end_lifetime
from chaos.history import History
from chaos.nemesis import Nemesis, NemesisSettings
from chaos.summary import Summary, count_ops, from_reports
from chaos.workload import Workload, WorkloadSettings
from kvclient.consistency import Level

HISTORY_FILE = "history.jsonl"
SUMMARY_FILE = "summary.json"

# How long after its client gave up a write of unknown outcome may still be
# applied: a request held by a paused process runs when it resumes (at most
# the longest fault later), plus the server's request and replica timeouts.
UNKNOWN_SLACK = 10.0

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


@dataclass(frozen=True)
class Options:
    seed: int
    duration: float = 30.0
    nodes: int = 5
    coordinators: int = 1
    replicas: int = 3
    r: Level = 2
    w: Level = 2
    clients: int = 8
    keys: int = 50
    quiet: float = 0.2  # share of the run at the end without faults
    # How long after every process is healthy the Merkle roots may take to
    # agree (anti-entropy compares every partition's roots once a second, and
    # repairs at most 1000 keys a second per node).
    converge_timeout: float = 90.0
    # Tombstones older than this are collected during the run. Longer than a
    # fault plus the request timeouts (UNKNOWN_SLACK), as the grace period
    # must outlast any write still in flight from before a delete.
    tombstone_grace: float = 20.0
    data_dir: Path | None = None
    keep: bool = False
    tls: bool = False  # cluster up --tls: every link mTLS


def run(options: Options, say: Callable[[str], None], warn: Callable[[str], None]) -> int:
    """The whole run; the exit status (0: passed, 1: a check failed, 2: the
    run itself could not be carried out)."""
    node_settings = {"tombstone_grace_seconds": options.tombstone_grace}
    return carry_out(
        options.data_dir, options.keep, "cluster", options.seed, options.duration,
        lambda data_dir: LocalCluster(data_dir, options.nodes, options.coordinators,
                                      options.replicas, node_settings, tls=options.tls),
        lambda cluster, history: _session(cluster, history, options, warn), say, warn)


class RunSummary(Protocol):
    @property
    def passed(self) -> bool: ...

    def lines(self) -> list[str]: ...

    def write(self, path: Path) -> None: ...


def carry_out(given_dir: Path | None, keep: bool, what: str, seed: int, duration: float,
              open_cluster: Callable[[Path], LocalCluster],
              session: Callable[[LocalCluster, History], Coroutine[Any, Any, RunSummary]],
              say: Callable[[str], None], warn: Callable[[str], None]) -> int:
    """A run's life, in either mode: a fresh data dir (a temporary one unless
    given), the cluster up, `session` on it, the history and summary written
    there whatever happened, the summary said, and the data dir removed after
    a passing run in a temporary one (unless `keep`). The exit status."""
    data_dir = (given_dir or Path(tempfile.mkdtemp(prefix="kvstore-chaos-"))).resolve()
    if data_dir.exists() and any(data_dir.iterdir()):
        warn(f"error: {data_dir} is not empty; a chaos run needs a fresh data dir")
        return EXIT_ERROR
    history: History | None = None
    summary: RunSummary | None = None
    try:
        with open_cluster(data_dir) as cluster:
            warn(f"{what} up in {data_dir} (base port {cluster.base_port}); "
                 f"seed {seed}, {duration:g} s")
            history = History()
            summary = asyncio.run(session(cluster, history))
    except ClusterError as exc:
        warn(f"error: {exc}")
    finally:
        if history is not None:
            history.write_jsonl(data_dir / HISTORY_FILE)
    if summary is None:
        warn(f"the run did not finish; its files are in {data_dir}")
        return EXIT_ERROR
    summary.write(data_dir / SUMMARY_FILE)
    for line in summary.lines():
        say(line)
    if summary.passed and given_dir is None and not keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        say(f"files          {data_dir} (history.jsonl, summary.json, logs/)")
    return EXIT_PASSED if summary.passed else EXIT_FAILED


async def _session(cluster: LocalCluster, history: History, options: Options,
                   warn: Callable[[str], None]) -> Summary:
    faults_until = options.duration * (1 - options.quiet)
    workload = Workload(cluster.addresses(), history,
                        WorkloadSettings(clients=options.clients, keys=options.keys,
                                         r=options.r, w=options.w), options.seed,
                        cluster.client_credentials)
    nemesis_settings = NemesisSettings()
    counters = RunCounters()
    nemesis = Nemesis(cluster, history, random.Random(options.seed), nemesis_settings, warn,
                      before_kill=functools.partial(end_lifetime, counters))
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(workload.run(until=options.duration))
            tasks.create_task(nemesis.run(until=faults_until))
    except* ClusterError as group:
        raise group.exceptions[0] from None
    crashed = cluster.collect_crashed()
    cluster.heal_all()  # the nemesis healed its own faults; this restarts crashed processes
    await cluster.wait_all_healthy()
    healthy_at = history.now()
    warn(f"{healthy_at:7.2f}s  workload stopped, every process healthy; checking")

    # The contended keys and every write-once key a put was sent to.
    keys = sorted({*workload.keys, *(op.key for op in history.ops)})
    nodes = cluster.addresses("node")
    spec = cluster.spec
    async with ReplicaReader(spec, cluster.admin_credentials) as reader:
        states, unreadable = await reader.states(keys)
        divergent = sorted({*divergent_keys(states), *unreadable})
        # Before any read through the KV service: the roots must come to
        # agree by hinted handoff and anti-entropy alone, not read repair.
        roots = await wait_roots_equal(reader, spec, history, healthy_at,
                                       options.converge_timeout)
        # What the cluster did to heal itself, before the checker's reads add
        # read repairs of their own.
        await asyncio.gather(*(end_lifetime(counters, server)
                               for server in cluster.servers.values()))
        state = ("equal" if roots.converged
                 else f"of {len(roots.differing_at_end)} partition(s) still differ")
        warn(f"{history.now():7.2f}s  Merkle roots {state} after {roots.seconds:.2f} s; "
             "final reads")
        reads_at = history.now()
        final = await final_reads(nodes, keys, history, credentials=cluster.client_credentials)
        convergence = await wait_converged(reader, nodes, keys, history, reads_at, divergent,
                                           credentials=cluster.client_credentials)

    unknown_horizon = nemesis_settings.longest_fault + UNKNOWN_SLACK
    head = dict(seed=options.seed, duration=options.duration, faults_until=faults_until,
                nodes=options.nodes, coordinators=options.coordinators,
                replicas=options.replicas, r=str(options.r), w=str(options.w),
                clients=options.clients, keys=options.keys, crashed=crashed,
                write_once_keys=len(keys) - len(workload.keys), data_dir=str(cluster.data_dir))
    return from_reports(head, count_ops(history.ops), nemesis.injected,
                        check_lost_writes(history.ops, final, unknown_horizon),
                        check_never_written(history.ops),
                        check_superseded(history.ops, convergence.agreed),
                        check_duplicate_siblings(history.ops),
                        roots, convergence, counters, final, unknown_horizon)
