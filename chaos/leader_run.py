"""One leader-mode chaos run (`python -m chaos --mode leader`): a cluster
with a Raft group per partition, the leader workload (linearizable reads,
writes and compare-and-set on a few hot keys, through nodes and the
coordinator) under the nemesis's kills and pauses, then healing, a final
linearizable read of every key, and the checks:

- the history (final reads included) is linearizable, key by key
  (`chaos.linearizability`); a key the search could not decide within its
  budget fails the run too, as undecided;
- every replica converges: once healed, each node's own (stale) read of
  every key comes to show what the final read showed, version included;
- no process crashed on its own.

It also reports who led: leader changes and how long partitions went
without a leader (`chaos.leadership`, polling every node's status).

Its files in the data dir: history.jsonl and summary.json, as the
leaderless run's. Every process it starts is stopped in a `finally`.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import kvclient
from chaos.cluster import ClusterError, LocalCluster
from chaos.history import FINAL_READER, OK, History, Op, text
from chaos.leader_workload import LeaderWorkload, LeaderWorkloadSettings
from chaos.leadership import LeadershipTimeline, watch_leaders
from chaos.linearizability import check, register_ops
from chaos.nemesis import Nemesis, NemesisSettings
from chaos.run import carry_out
from chaos.summary import count_ops
from kvclient.security import PLAINTEXT, Credentials


FINAL_READ_TIMEOUT = 60.0  # seconds for every key's final read, retries included
CONVERGE_TIMEOUT = 30.0  # for every replica to show the final state
RETRY_INTERVAL = 0.2


@dataclass(frozen=True)
class LeaderOptions:
    seed: int
    duration: float = 30.0
    nodes: int = 3
    coordinators: int = 1
    replicas: int = 3
    clients: int = 8
    keys: int = 5
    quiet: float = 0.2  # share of the run at the end without faults
    seconds_per_key: float = 30.0  # the linearizability search's budget
    data_dir: Path | None = None
    keep: bool = False
    tls: bool = False


@dataclass(frozen=True)
class LeaderSummary:
    seed: int
    duration: float
    nodes: int
    coordinators: int
    clients: int
    keys: int
    operations: int
    ok: int
    failed: int
    unknown: int
    errors: dict[str, int]
    faults: dict[str, int]
    crashed: list[str]
    verdict: str  # linearizable, not linearizable, unknown
    linearizability: str  # the checker's report
    unread_keys: list[str]
    unconverged: dict[str, list[str]]  # key -> the nodes that never showed its final state
    leader_changes: int
    # Seconds each partition went without a leader, gap by gap (chaos.leadership).
    leaderless_gaps: list[float]
    leadership: str  # the timeline's report

    @property
    def passed(self) -> bool:
        return (self.verdict == "linearizable" and not self.crashed and not self.unread_keys
                and not self.unconverged)

    def lines(self) -> list[str]:
        return [
            f"result         {'PASSED' if self.passed else 'FAILED'} (leader mode, seed "
            f"{self.seed}, {self.duration:g} s, {self.nodes} nodes, {self.coordinators} "
            f"coordinator(s), {self.clients} clients on {self.keys} hot keys)",
            f"operations     {self.operations}: {self.ok} ok, {self.failed} failed, "
            f"{self.unknown} unknown",
            f"errors         {self.errors or 'none'}",
            f"faults         {self.faults or 'none'}",
            f"leadership     {self.leadership}",
            *self.linearizability.splitlines(),
            f"final reads    {'every key read' if not self.unread_keys else self.unread_keys}",
            f"convergence    {'every replica shows the final state' if not self.unconverged else self.unconverged}",  # noqa: E501
            f"crashed        {self.crashed or 'none'}",
        ]

    def write(self, path: Path) -> None:
        gaps = self.leaderless_gaps
        elect = {"time_to_elect_median": statistics.median(gaps) if gaps else None,
                 "time_to_elect_max": max(gaps) if gaps else None}
        path.write_text(json.dumps({**asdict(self), **elect, "passed": self.passed},
                                   indent=2) + "\n")


def run_leader(options: LeaderOptions, say: Callable[[str], None],
               warn: Callable[[str], None]) -> int:
    return carry_out(
        options.data_dir, options.keep, "leader-mode cluster", options.seed, options.duration,
        lambda data_dir: LocalCluster(data_dir, options.nodes, options.coordinators,
                                      options.replicas, tls=options.tls, mode="leader"),
        lambda cluster, history: _session(cluster, history, options, warn), say, warn)


async def _session(cluster: LocalCluster, history: History, options: LeaderOptions,
                   warn: Callable[[str], None]) -> LeaderSummary:
    faults_until = options.duration * (1 - options.quiet)
    workload = LeaderWorkload(cluster.addresses(), history,
                              LeaderWorkloadSettings(clients=options.clients, keys=options.keys),
                              options.seed, cluster.client_credentials)
    nemesis = Nemesis(cluster, history, random.Random(options.seed), NemesisSettings(), warn)
    nodes = cluster.addresses("node")
    timeline, watched = LeadershipTimeline(), asyncio.Event()
    watcher = asyncio.create_task(watch_leaders(nodes, cluster.client_credentials, timeline,
                                                history.now, watched))
    try:
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(workload.run(until=options.duration))
                tasks.create_task(nemesis.run(until=faults_until))
        except* ClusterError as group:
            raise group.exceptions[0] from None
        crashed = cluster.collect_crashed()
        cluster.heal_all()
        await cluster.wait_all_healthy()
        warn(f"{history.now():7.2f}s  workload stopped, every process healthy; final reads")
        final = await final_reads(nodes, workload.keys, history, cluster.client_credentials)
    finally:
        watched.set()
        await watcher
    unconverged = await wait_replicas_show(cluster, final, cluster.client_credentials)
    warn(f"{history.now():7.2f}s  checking linearizability")
    report = check(register_ops(history.ops), seconds_per_key=options.seconds_per_key)
    counts = count_ops(history.ops)
    return LeaderSummary(
        seed=options.seed, duration=options.duration, nodes=options.nodes,
        coordinators=options.coordinators, clients=options.clients, keys=options.keys,
        operations=counts.operations, ok=counts.ok, failed=counts.failed,
        unknown=counts.unknown, errors=counts.errors, faults=dict(nemesis.injected),
        crashed=crashed, verdict=report.verdict, linearizability=report.describe(),
        unread_keys=sorted(k for k, v in final.items() if v is None),
        unconverged=unconverged, leader_changes=timeline.changes,
        leaderless_gaps=[round(gap, 3) for gap in timeline.gaps],
        leadership=timeline.describe())


async def final_reads(addresses: Sequence[str], keys: Sequence[str], history: History,
                      credentials: Credentials = PLAINTEXT,
                      ) -> dict[str, tuple[int, str | None] | None]:
    """Every key's (version, value), read linearizably and recorded as the
    checker's own reads; None for a key not read within the timeout."""
    deadline = time.monotonic() + FINAL_READ_TIMEOUT
    async with kvclient.AsyncClient(list(addresses), timeout=5.0, tls=credentials.tls,
                                    token=credentials.token) as client:
        async def read(key: str) -> tuple[int, str | None] | None:
            while True:
                invoke = history.now()
                try:
                    result = await client.get(key.encode())
                except kvclient.errors.KVError:
                    if time.monotonic() + RETRY_INTERVAL > deadline:
                        return None
                    await asyncio.sleep(RETRY_INTERVAL)  # retry interval, not synchronisation
                    continue
                history.add(Op(FINAL_READER, "get", key, None, invoke, history.now(), OK,
                               siblings=tuple(text(s) for s in result.siblings),
                               version=result.version))
                assert result.version is not None, "a leader-mode read has a version"
                return result.version, None if result.value is None else text(result.value)

        found = await asyncio.gather(*(read(key) for key in keys))
    return dict(zip(keys, found))


async def wait_replicas_show(cluster: LocalCluster,
                             final: dict[str, tuple[int, str | None] | None],
                             credentials: Credentials) -> dict[str, list[str]]:
    """Poll every node's own (stale) read of every key read at the end until
    it shows the final version; what never did, by key."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    waiting = {key: {s.server_id: s.address for s in cluster.of_role("node")}
               for key, seen in final.items() if seen is not None}
    clients = {s.server_id: kvclient.AsyncClient([s.address], timeout=2.0, token_aware=False,
                                                 max_attempts=1, tls=credentials.tls,
                                                 token=credentials.token)
               for s in cluster.of_role("node")}
    try:
        while any(waiting.values()) and time.monotonic() < deadline:
            for key, nodes in waiting.items():
                seen = final[key]
                assert seen is not None
                for node in list(nodes):
                    try:
                        result = await clients[node].get(key.encode(), stale=True)
                    except kvclient.errors.KVError:
                        continue
                    if result.version == seen[0]:
                        del nodes[node]
            if any(waiting.values()):
                await asyncio.sleep(RETRY_INTERVAL)  # polling interval, not synchronisation
    finally:
        for client in clients.values():
            await client.close()
    return {key: sorted(nodes) for key, nodes in waiting.items() if nodes}
