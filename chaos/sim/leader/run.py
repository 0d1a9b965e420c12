"""One simulated leader-mode run: a seed decides the cluster, the Raft
settings, the network, the workload and the faults; the run plays them out
on virtual time, heals, checks that the cluster is live again, and judges.

Phases: `faulty_seconds` of client operations under the nemesis (crashes,
crashes between sending and persisting a pass, restarts, pauses, one-way
and two-way cuts, isolations, heals); then every fault healed, and up to
`converge_within` seconds for every partition to commit a write of its
new leader's term and every replica to apply everything and hold the same
state; then a linearizable read of every hot key. The verdict:

The nemesis is `faults.LeaderNemesis`; the judge of the history
`verdict`.

- the `RaftOracle`'s findings, as the run went: election safety, one vote
  per term, log matching, leader completeness, state machine safety (and
  snapshots alike), no group halted;
- every linearizable read returned the key as it stood at some point
  between its call and its answer in the order Raft applied the writes
  (`RaftOracle.states_between`), and every acknowledged put is the entry
  at the index its version names;
- the client history, final reads included, is linearizable
  (`chaos.linearizability`, with a budget of search steps, so the verdict
  does not depend on the machine: a search that runs out of it fails the
  seed, it never passes it);
- live after the heal, within `converge_within`;
- the store's code logged no error.

Everything comes from `random.Random(seed)` and the virtual clock, so a
seed replays exactly: same trace, same verdict.
"""

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from chaos.history import FINAL_READER, OK, Op
from chaos.history import UNKNOWN as UNKNOWN_OUTCOME
from chaos.sim.bugs import planted
from chaos.sim.faults import FaultLog, FaultSettings, Nemesis
from chaos.sim.leader.faults import FAULT_KINDS, RESTORE_KINDS, LeaderNemesis
from chaos.sim.leader.node import LeaderMachine, LeaderNodeSettings
from chaos.sim.leader.oracle import RaftOracle
from chaos.sim.leader.verdict import (linearizability_problems, op_line, put_problems,
                                      read_problems)
from chaos.sim.leader.workload import LeaderClient, LeaderWorkloadSettings, Write, hot_key
from chaos.sim.loop import run_virtual
from chaos.sim.network import Network, NetworkSettings
from chaos.sim.trace import Trace, TraceHandler, captured_logs
from kvstore.leader.quiescence import QuiesceSettings
from kvstore.leader.raft.config import ReadMode
from kvstore.leader.settings import HostSettings
from kvstore.placement.membership import ClusterMember, ClusterSpec

T = TypeVar("T")

RESTORING_SEEDS = 0.25  # the share of seeds whose nemesis backs up and restores nodes

@dataclass(frozen=True)
class RaftSettings:
    """The seed's Raft timings and limits (besides the host's defaults)."""

    read_mode: ReadMode = ReadMode.READ_INDEX
    pre_vote: bool = True
    check_quorum: bool = True
    max_append_bytes: int | None = 1 << 20
    max_inflight_appends: int = 256
    snapshot_every: int = 10_000
    keep_entries: int = 1_000
    quiesce: bool = True
    max_drift: float = 0.0  # each node's tick is up to this much longer
    slow_disk: bool = False  # one node's passes take 10-40 ms

    def host(self) -> HostSettings:
        return HostSettings(election_ticks=10, heartbeat_ticks=1, read_mode=self.read_mode,
                            pre_vote=self.pre_vote, check_quorum=self.check_quorum,
                            max_append_bytes=self.max_append_bytes,
                            max_inflight_appends=self.max_inflight_appends,
                            snapshot_every=self.snapshot_every, keep_entries=self.keep_entries,
                            quiesce=QuiesceSettings(enabled=self.quiesce, after_ticks=6))

    def describe(self) -> str:
        append = "unbounded" if self.max_append_bytes is None else f"{self.max_append_bytes} B"
        return (f"{self.read_mode.value} reads, pre-vote {'on' if self.pre_vote else 'off'}, "
                f"check-quorum {'on' if self.check_quorum else 'off'}, appends of {append} "
                f"with {self.max_inflight_appends} in flight, a snapshot every "
                f"{self.snapshot_every} entries keeping {self.keep_entries}, quiescence "
                f"{'on' if self.quiesce else 'off'}, tick drift up to {self.max_drift:.0%}"
                + (", one slow disk" if self.slow_disk else ""))


@dataclass(frozen=True)
class LeaderScenario:
    seed: int
    nodes: int
    replicas: int
    partitions: int
    network: NetworkSettings
    workload: LeaderWorkloadSettings
    faults: FaultSettings
    raft: RaftSettings
    node: LeaderNodeSettings = LeaderNodeSettings(HostSettings())
    faulty_seconds: float = 6.0
    converge_within: float = 30.0

    def describe(self) -> list[str]:
        return [
            f"seed {self.seed} (leader mode): {self.nodes} nodes, N={self.replicas}, "
            f"{self.partitions} partitions (Raft groups), {self.faulty_seconds:g} s of "
            "operations under faults",
            f"raft: {self.raft.describe()}",
            f"network: {self.network.describe()}",
            f"workload: {self.workload.describe()}",
            f"faults: {self.faults.describe()}",
        ]


def restores(seed: int) -> bool:
    """Whether the seed's nemesis also takes backups and restores them (a
    quarter of seeds). Drawn from a generator of its own, so the seeds that
    do not are the scenarios they were before restores existed."""
    return random.Random(f"leader-restores-{seed}").random() < RESTORING_SEEDS


def scenario_for(seed: int) -> LeaderScenario:
    """The scenario a seed stands for (its own generator: adding a knob
    here changes scenarios, not how a scenario plays out)."""
    rng = random.Random(f"leader-scenario-{seed}")
    nodes = rng.choice((3, 3, 5))
    lease = rng.random() < 0.25
    raft = RaftSettings(
        read_mode=ReadMode.LEASE if lease else ReadMode.READ_INDEX,
        pre_vote=lease or rng.random() < 0.8,
        check_quorum=lease or rng.random() < 0.6,
        max_append_bytes=rng.choice((None, 1 << 20, 300, 100)),
        max_inflight_appends=rng.choice((1, 4, 256)),
        snapshot_every=rng.choice((30, 100, 10_000)),
        keep_entries=rng.choice((0, 5, 50)),
        quiesce=rng.random() < 0.7,
        # Lease reads are safe only while clock rates stay within the bound (1.1).
        max_drift=rng.choice((0.0, 0.05)) if lease else rng.choice((0.0, 0.1, 0.3)),
        slow_disk=rng.random() < 0.5,
    )
    return LeaderScenario(
        seed=seed, nodes=nodes, replicas=3, partitions=4 if nodes == 3 else 8,
        network=NetworkSettings(
            drop_probability=rng.choice((0.0, 0.005, 0.01, 0.03)),
            duplicate_probability=rng.choice((0.0, 0.01, 0.03)),
            spike_probability=rng.choice((0.0, 0.01, 0.05)),
            interleave_held=True,
        ),
        workload=LeaderWorkloadSettings(clients=rng.choice((6, 10, 16)),
                                        keys=rng.choice((1, 2, 3))),
        faults=FaultSettings(min_gap=0.3, max_gap=1.5, max_pause=1.5,
                             max_down=rng.choice((1, 1, 2)),
                             kinds=FAULT_KINDS + (RESTORE_KINDS if restores(seed) else ())),
        raft=raft,
        node=LeaderNodeSettings(raft.host(), pause_stops_clock=not lease),
    )


@dataclass
class LeaderSimResult:
    scenario: LeaderScenario
    bug: str | None
    problems: list[str]
    trace: list[tuple[float, str]]
    history: list[Op]
    operations: int
    acknowledged: int
    checked_reads: int
    leader_terms: int
    snapshots_installed: int
    faults: dict[str, int]
    converged_after: float | None  # seconds after the heal; None: never
    virtual_seconds: float
    wall_seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def story(self, *, everything: bool = False) -> list[str]:
        """The trace as lines, with the client operations merged in: with
        `everything`, all of them and the store's INFO log; else only the
        operations on the keys a problem names, and what is not INFO."""
        keys = {op.key for op in self.history if any(
            f" {op.key} " in p or f" {op.key}:" in p or f"'{op.key}'" in p
            for p in self.problems)}
        entries = [(at, line) for at, line in self.trace
                   if everything or not (line.startswith("INFO ")
                                         or (line.startswith("ORACLE ") and " leads " in line))]
        entries += [(op.complete, op_line(op)) for op in self.history
                    if everything or op.key in keys]
        entries.sort(key=lambda entry: entry[0])
        return [f"{at:9.3f}  {line}" for at, line in entries]

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        converged = ("never" if self.converged_after is None
                     else f"{self.converged_after:.1f}s after the heal")
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items())) or "none"
        bug = f" [planted bug: {self.bug}]" if self.bug else ""
        return (f"seed {self.scenario.seed} (leader mode){bug}: {verdict}; {self.operations} "
                f"ops ({self.acknowledged} acknowledged), {self.checked_reads} reads checked "
                f"against the apply order, {self.leader_terms} leader terms, "
                f"{self.snapshots_installed} snapshots installed; faults: {faults}; "
                f"live {converged}; {self.virtual_seconds:.1f} simulated s in "
                f"{self.wall_seconds:.2f} wall s")


def run_leader_seed(seed: int, bug: str | None = None,
                    scenario: LeaderScenario | None = None) -> LeaderSimResult:
    """Play one seed in leader mode (with a planted bug, if named) and judge it."""
    scenario = scenario or scenario_for(seed)
    trace = Trace()
    started = time.perf_counter()
    with captured_logs(trace) as logs, planted(bug):
        result = run_virtual(_simulate(scenario, trace, logs))
    result.bug = bug
    result.wall_seconds = time.perf_counter() - started
    return result


async def _simulate(scenario: LeaderScenario, trace: Trace,
                    logs: TraceHandler) -> LeaderSimResult:
    rng = random.Random(scenario.seed)
    loop = asyncio.get_running_loop()
    for line in scenario.describe():
        trace(line)
    names = [f"n{i}" for i in range(1, scenario.nodes + 1)]
    spec = ClusterSpec(tuple(ClusterMember(n, f"sim:{n}") for n in names),
                       replicas=scenario.replicas, partitions=scenario.partitions)
    network = Network(random.Random(rng.random()), scenario.network)
    oracle = RaftOracle(trace)
    node_rng = random.Random(rng.random())
    slow = rng.choice(names) if scenario.raft.slow_disk else None
    nodes = {}
    for name in names:
        settings = scenario.node
        if name == slow:
            settings = replace(settings, min_commit_seconds=0.01, max_commit_seconds=0.04)
        nodes[name] = LeaderMachine(name, spec, network, settings, node_rng,
                                    skew_ms=rng.randint(-50, 50),
                                    drift=rng.uniform(0, scenario.raft.max_drift), oracle=oracle)
    for node in nodes.values():
        node.start()
    history: list[Op] = []
    fault_log = FaultLog(trace)
    def partition_of(key: str) -> int:
        return spec.partition_of(key.encode())

    clients = [LeaderClient(i, names, network, scenario.workload, random.Random(rng.random()),
                            history, partition_of, token_aware=i % 2 == 0)
               for i in range(scenario.workload.clients)]
    hot = tuple(sorted({spec.partition_of(hot_key(i).encode())
                        for i in range(scenario.workload.keys)}))
    nemesis = LeaderNemesis(nodes, network, scenario.faults, random.Random(rng.random()),
                             fault_log, hot)
    start = loop.time()
    until = start + scenario.faulty_seconds
    await _until_failed(oracle, _operate(clients, nemesis, until))
    converged_after = None
    if not oracle.failed.is_set():
        await nemesis.heal()
        final = LeaderClient(FINAL_READER, names, network, scenario.workload,
                             random.Random(rng.random()), history, partition_of,
                             token_aware=False)
        converged_after = await _until_failed(oracle, _converge(
            nodes, spec, oracle, final, scenario.converge_within))
        if converged_after is not None:
            for index in range(scenario.workload.keys):
                await _until_failed(oracle, _read_until_answered(final, hot_key(index),
                                                                 loop.time() + 10.0))
    nemesis.stop()
    for node in nodes.values():
        if node.process is not None:
            await node.crash()
    return _judge(scenario, spec, history, oracle, fault_log, logs, trace, converged_after,
                  loop.time() - start)


async def _operate(clients: list[LeaderClient], nemesis: Nemesis, until: float) -> None:
    async with asyncio.TaskGroup() as group:
        for client in clients:
            group.create_task(client.run(until))
        group.create_task(nemesis.run(until))


async def _until_failed(oracle: RaftOracle, work: Coroutine[Any, Any, T]) -> T | None:
    """`work`'s result; or None, with `work` cancelled, once the oracle has
    found a problem: the seed has failed, and a broken cluster can keep a
    simulation busy for ever."""
    task = asyncio.get_running_loop().create_task(work)
    failed = asyncio.get_running_loop().create_task(oracle.failed.wait())
    await asyncio.wait({task, failed}, return_when=asyncio.FIRST_COMPLETED)
    failed.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


async def _converge(nodes: dict[str, LeaderMachine], spec: ClusterSpec, oracle: RaftOracle,
                    client: LeaderClient, within: float) -> float | None:
    """Seconds until every partition committed a write of the healed
    cluster and every replica applied everything and holds the same state;
    None if not within."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + within
    for partition in range(spec.partitions):
        key = _key_in(spec, partition)
        write = Write("put", key, f"final-{partition}", None, f"final-{partition}".encode())
        while True:
            await client.write(write)
            last = client.last
            assert last is not None
            if last.outcome == OK:
                break
            if last.outcome == UNKNOWN_OUTCOME:
                write = replace(write, earlier=last)  # the same request, sent again
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.1)
    while loop.time() < deadline:
        if all(_group_converged(nodes, spec, oracle, p) for p in range(spec.partitions)):
            return loop.time() - start
        await asyncio.sleep(0.1)
    return None


def _group_converged(nodes: dict[str, LeaderMachine], spec: ClusterSpec, oracle: RaftOracle,
                     partition: int) -> bool:
    replicas = [nodes[n] for n in spec.ring.preference_list(partition, spec.replicas)]
    wanted = oracle.max_applied(partition)
    if any(not node.running or node.store.load(partition, 0).applied < wanted
           for node in replicas):
        return False
    states = [sorted(node.store.keys(partition).items()) for node in replicas]
    return all(state == states[0] for state in states)


def _key_in(spec: ClusterSpec, partition: int) -> str:
    for i in itertools.count():
        key = f"final-{partition}-{i}"
        if spec.partition_of(key.encode()) == partition:
            return key
    raise AssertionError("unreachable")


async def _read_until_answered(client: LeaderClient, key: str, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    while await client.get(key, FINAL_READER) is None and loop.time() < deadline:
        await asyncio.sleep(0.1)


def _judge(scenario: LeaderScenario, spec: ClusterSpec, history: list[Op], oracle: RaftOracle,
           fault_log: FaultLog, logs: TraceHandler, trace: Trace,
           converged_after: float | None, virtual_seconds: float) -> LeaderSimResult:
    problems = list(oracle.problems)
    problems += [f"partition halted: {line}" for line in logs.warnings if "stopped on" in line]
    reads = 0
    for op in history:
        if op.outcome != OK:
            if op.error is not None and op.error.startswith("InvalidArgument"):
                problems.append(f"the store refused a well-formed request: {op_line(op)}")
            continue
        group = spec.partition_of(op.key.encode())
        if op.kind == "get":
            reads += 1
            problems += read_problems(oracle, group, op)
        elif op.kind == "put":
            problems += put_problems(oracle, group, op)
    problems += linearizability_problems(history)
    if oracle.more_problems:
        problems.append(f"... and {oracle.more_problems} more of the oracle's findings")
    if oracle.failed.is_set():
        trace("STOPPED at the oracle's first finding")
    elif converged_after is None:
        problems.append(f"not live {scenario.converge_within:g}s after the heal: some partition "
                        "committed no write, or its replicas did not all apply everything")
    problems += [f"error logged: {line}" for line in logs.errors]
    if problems:
        trace(f"VERDICT FAIL: {len(problems)} problem(s)")
    acknowledged = sum(1 for op in history if op.outcome == OK)
    return LeaderSimResult(scenario, None, problems, list(trace), history, len(history),
                           acknowledged, reads, oracle.leader_terms, oracle.snapshots_installed,
                           dict(fault_log.counts),
                           converged_after, virtual_seconds, 0.0)


