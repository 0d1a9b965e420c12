"""One simulated run: a seed decides the cluster, the network, the
workload and the faults; the run plays them out on virtual time, heals,
waits for the replicas to converge, and judges the history.

Phases: `faulty_seconds` of client operations under the nemesis; then
every fault healed, and up to `converge_within` seconds for every replica of
every key to hold the same state with no hint left to hand over; then the
checks of `chaos.checkers` on the history and the final states: no
acknowledged write lost, no value read that was never written, nothing
deleted or replaced come back, reads with a strict quorum and R + W > N
seeing the writes acknowledged before them, convergence in time, and no
error logged by the store's code (an exception a background loop caught is
a bug all the same).

Everything comes from `random.Random(seed)` and the virtual clock, so a
seed replays exactly: same trace, same verdict.
"""

import asyncio
import random
import time
from dataclasses import dataclass, field

from chaos.checkers import (check_duplicate_siblings, check_lost_writes, check_never_written,
                            check_quorum_reads, check_superseded, divergent_keys)
from chaos.history import Op, text
from chaos.sim.bugs import planted
from chaos.sim.durability import DurabilityOracle
from chaos.sim.faults import FaultLog, FaultSettings, Nemesis
from chaos.sim.loop import run_virtual
from chaos.sim.network import Network, NetworkSettings
from chaos.sim.node import NodeSettings, SimNode
from chaos.sim.trace import Trace, TraceHandler, captured_logs
from chaos.sim.workload import SimClient, WorkloadSettings
from kvstore.causality import versions
from kvstore.causality.versions import DVVSet
from kvstore.placement.membership import ClusterMember, ClusterSpec
from kvstore.placement.ring import partition_of


@dataclass(frozen=True)
class Scenario:
    seed: int
    nodes: int
    replicas: int
    partitions: int
    network: NetworkSettings
    workload: WorkloadSettings
    faults: FaultSettings
    node: NodeSettings = NodeSettings()
    faulty_seconds: float = 12.0
    # After the clients stop, the faults stand this long before the heal:
    # with no writes moving the Merkle roots, tombstone collection runs
    # while nodes are still down or cut off.
    quiet_seconds: float = 4.0
    converge_within: float = 60.0

    def describe(self) -> list[str]:
        return [
            f"seed {self.seed}: {self.nodes} nodes, N={self.replicas}, "
            f"{self.partitions} partitions, {self.faulty_seconds:g} s of operations under "
            f"faults, {self.quiet_seconds:g} s of faults alone",
            f"network: {self.network.describe()}",
            f"workload: {self.workload.describe()}",
            f"faults: {self.faults.describe()}",
        ]


def scenario_for(seed: int) -> Scenario:
    """The scenario a seed stands for (its own generator: adding a knob
    here changes scenarios, not how a scenario plays out)."""
    rng = random.Random(f"scenario-{seed}")
    nodes = rng.choice((3, 3, 5))
    return Scenario(
        seed=seed, nodes=nodes, replicas=3, partitions=8,
        network=NetworkSettings(
            drop_probability=rng.choice((0.0, 0.001, 0.01, 0.03)),
            duplicate_probability=rng.choice((0.0, 0.0, 0.01, 0.03)),
            spike_probability=rng.choice((0.0, 0.01, 0.05)),
        ),
        workload=WorkloadSettings(clients=rng.choice((2, 4, 6)), keys=rng.choice((4, 12, 30)),
                                  delete_share=rng.choice((0.1, 0.25))),
        faults=FaultSettings(
            max_down=1 if nodes == 3 else rng.choice((1, 2)),
            max_wipes=rng.choice((0, 0, 1)),
        ),
    )


@dataclass
class SimResult:
    scenario: Scenario
    bug: str | None
    problems: list[str]
    trace: list[tuple[float, str]]
    history: list[Op]
    operations: int
    acknowledged: int
    checked_puts: int
    checked_reads: int
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
        operations on the keys a problem names, and warnings and errors."""
        keys = {op.key for op in self.history if any(
            f" {op.key}=" in p or f" {op.key} " in p for p in self.problems)}
        entries = [(at, line) for at, line in self.trace
                   if everything or not line.startswith("INFO ")]
        entries += [(op.complete, _op_line(op)) for op in self.history
                    if everything or op.key in keys]
        entries.sort(key=lambda entry: entry[0])
        return [f"{at:9.3f}  {line}" for at, line in entries]

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        converged = ("never" if self.converged_after is None
                     else f"{self.converged_after:.1f}s after the heal")
        faults = ", ".join(f"{k} {n}" for k, n in sorted(self.faults.items())) or "none"
        bug = f" [planted bug: {self.bug}]" if self.bug else ""
        return (f"seed {self.scenario.seed}{bug}: {verdict}; {self.operations} ops "
                f"({self.acknowledged} acknowledged), {self.checked_puts} puts and "
                f"{self.checked_reads} quorum reads checked; faults: {faults}; converged "
                f"{converged}; {self.virtual_seconds:.1f} simulated s in "
                f"{self.wall_seconds:.2f} wall s")


def run_seed(seed: int, bug: str | None = None,
             scenario: Scenario | None = None) -> SimResult:
    """Play one seed (with a planted bug, if named) and judge it."""
    scenario = scenario or scenario_for(seed)
    trace = Trace()
    started = time.perf_counter()
    with captured_logs(trace) as logs, planted(bug):
        result = run_virtual(_simulate(scenario, trace, logs))
    result.bug = bug
    result.wall_seconds = time.perf_counter() - started
    return result


async def _simulate(scenario: Scenario, trace: Trace, logs: TraceHandler) -> SimResult:
    rng = random.Random(scenario.seed)
    loop = asyncio.get_running_loop()
    for line in scenario.describe():
        trace(line)
    names = [f"n{i}" for i in range(1, scenario.nodes + 1)]
    spec = ClusterSpec(tuple(ClusterMember(n, f"sim:{n}") for n in names),
                       replicas=scenario.replicas, partitions=scenario.partitions)
    network = Network(random.Random(rng.random()), scenario.network)
    node_rng = random.Random(rng.random())
    nodes = {n: SimNode(n, spec, network, scenario.node, node_rng,
                        skew_ms=rng.randint(-50, 50)) for n in names}
    for node in nodes.values():
        node.start()
    history: list[Op] = []
    fault_log = FaultLog(trace)
    oracle = DurabilityOracle(nodes, spec, fault_log.disk_losses, trace)
    clients = [SimClient(i, names, network, scenario.workload, random.Random(rng.random()),
                         history, oracle.acknowledged)
               for i in range(scenario.workload.clients)]
    nemesis = Nemesis(nodes, network, scenario.faults, random.Random(rng.random()), fault_log)
    start = loop.time()
    until = start + scenario.faulty_seconds
    watching = loop.create_task(oracle.watch(0.25))
    async with asyncio.TaskGroup() as group:
        for client in clients:
            group.create_task(client.run(until))
        group.create_task(nemesis.run(until))
    await asyncio.sleep(scenario.quiet_seconds)
    await nemesis.heal()
    converged_after = await _converge(nodes, spec, history, scenario.converge_within)
    watching.cancel()
    states = _replica_states(nodes, spec, _written_keys(history))
    for node in nodes.values():
        if node.process is not None:
            await node.crash()
    return _judge(scenario, history, states, fault_log, logs, trace, converged_after,
                  loop.time() - start, oracle)


def _written_keys(history: list[Op]) -> list[str]:
    return sorted({op.key for op in history if op.is_write})


def _replica_states(nodes: dict[str, SimNode], spec: ClusterSpec,
                    keys: list[str]) -> dict[str, dict[str, DVVSet | None]]:
    """key -> replica -> the state its disk holds."""
    states: dict[str, dict[str, DVVSet | None]] = {}
    for key in keys:
        raw = key.encode()
        partition = partition_of(raw, spec.partitions)
        states[key] = {}
        for node_id in spec.preference_list(raw):
            record = nodes[node_id].engine.read(partition, raw)
            states[key][node_id] = None if record is None else versions.decode(record.value)
    return states


async def _converge(nodes: dict[str, SimNode], spec: ClusterSpec, history: list[Op],
                    within: float) -> float | None:
    """Seconds until every key's replicas agree and no hint is left; None if not within."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    keys = _written_keys(history)
    while loop.time() - start <= within:
        hints_left = any(node.engine.scan_hints(limit=1) for node in nodes.values())
        if not hints_left and not divergent_keys(_replica_states(nodes, spec, keys)):
            return loop.time() - start
        await asyncio.sleep(0.25)
    return None


def _judge(scenario: Scenario, history: list[Op], states: dict[str, dict[str, DVVSet | None]],
           fault_log: FaultLog, logs: TraceHandler, trace: Trace,
           converged_after: float | None, virtual_seconds: float,
           oracle: DurabilityOracle) -> SimResult:
    problems: list[str] = []
    horizon = _unknown_horizon(scenario)
    agreed = {key: next(iter(by_node.values())) for key, by_node in states.items()
              if key not in divergent_keys({key: by_node})}
    final = {key: [text(s.value) for s in state.live] if state is not None else []
             for key, state in agreed.items()}
    lost = check_lost_writes(history, final, horizon)
    for write in lost.lost:
        problems.append(f"lost: put {write.key}={write.value} acknowledged at "
                        f"{write.complete:.3f}s is not among the final siblings "
                        f"{list(write.final_siblings)}")
    never = check_never_written(history)
    for bad in never.never_written:
        problems.append(f"never written: a read of {bad.key} at {bad.read_invoke:.3f}s "
                        f"returned {bad.value!r} ({bad.why})")
    superseded = check_superseded(history, agreed)
    for back in superseded.resurrected:
        problems.append(f"came back: {back.key}={back.value} (dot {back.dot}) although "
                        f"{back.superseded_by} superseded it")
    quorum = check_quorum_reads(history, scenario.replicas, horizon, fault_log.disk_losses)
    for stale in quorum.stale:
        problems.append(f"stale quorum read: get {stale.key} at {stale.read_invoke:.3f}s "
                        f"returned {list(stale.siblings)}, missing {stale.value} "
                        f"(acknowledged at {stale.put_complete:.3f}s with a strict quorum)")
    if converged_after is None:
        divergent = divergent_keys(states)
        problems.append(f"not converged {scenario.converge_within:g}s after the heal: "
                        f"{len(divergent)} key(s) differ ({', '.join(divergent[:5])})")
    problems += oracle.problems
    problems += [f"error logged: {line}" for line in logs.errors]
    notes = []
    duplicates = check_duplicate_siblings(history)
    if duplicates:
        notes.append(f"{len(duplicates)} read(s) returned one put's value twice "
                     "(a write retried at a second origin)")
    if problems:
        trace(f"VERDICT FAIL: {len(problems)} problem(s)")
    acknowledged = sum(1 for op in history if op.outcome == "ok")
    return SimResult(scenario, None, problems, list(trace), history, len(history), acknowledged,
                     lost.checked_puts, quorum.checked, dict(fault_log.counts), converged_after,
                     virtual_seconds, 0.0, notes)


def _unknown_horizon(scenario: Scenario) -> float:
    """How long after its client gave up a write may still take effect: its
    messages can wait out a pause at the coordinator and another at the
    origin, and a latency spike each way, before the origin applies it."""
    return (2 * scenario.faults.max_pause + scenario.workload.client_timeout
            + 4 * scenario.network.spike_delay + 1.0)


def _op_line(op: Op) -> str:
    what = {"get": f"get {op.key}", "put": f"put {op.key}={op.value}",
            "delete": f"delete {op.key}"}[op.kind]
    how = (f"r={op.replicas}" if op.kind == "get"
           else f"w={op.replicas}{' strict' if op.strict else ''}"
                f"{' with context' if op.context else ' blind'}")
    result = op.outcome + (f" {list(op.siblings)}" if op.siblings is not None else "")
    if op.error:
        result += f" ({op.error})"
    return f"OP client{op.client} {what} {how} (invoked {op.invoke:.3f}) -> {result}"
