"""`kvstore bench`: a closed-loop load generator.

Each of `concurrency` tasks issues one operation, waits for its answer, and
issues the next, for `duration` seconds. A run is one or more phases, one
per workload (concurrency, value size, key count, read ratio: the cross
product of the values given). Reported per phase: operations per second,
p50/p99/p999 latency of the operations that succeeded, the server
processes' CPU seconds per operation (from /proc, so only for processes on
this machine), the client's, and the errors by status and reason; and,
where the servers' metrics can be read, the operations per message on each
hop (client to server, answers, to the replicas and back, writes per
commit) and the requests the servers refused and the client retried; and
each server's peak resident memory during the phase.

With --echo, a phase of KV.Ping calls carrying the same payload size runs
first: the gRPC transport's ceiling on this machine, in the same run, so
every result can be given as a ratio to it. The client takes its default
path, the KV.Session stream (the calls of the tasks coalesce into its
messages); --unary sends unary calls instead, to compare the two.
"""

import asyncio
import itertools
import json
import os
import random
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kvclient.security import PLAINTEXT, Credentials
from kvclient import AsyncClient
from kvclient.errors import KVError
from kvstore.ops.ports import free_port
from kvstore.ops.process_memory import Resident, reset_peak, resident
from kvstore.ops.processes import cpu_seconds, start_node
from kvstore.ops.scrape import Samples, scrape, total

PRELOAD_BATCH = 250
PRELOAD_BATCHES_IN_FLIGHT = 4
PRELOAD_ATTEMPTS = 3
MIB = 1024 * 1024


@dataclass(frozen=True)
class Server:
    """A server process the benchmark watches: its CPU and memory by pid,
    its metrics (HOST:PORT of /metrics) when known."""

    name: str
    pid: int
    metrics: str | None = None
    target: bool = True  # the client sends to it (its KV latencies are the admitted requests')


@dataclass(frozen=True)
class Workload:
    concurrency: int = 64
    value_size: int = 100
    keys: int = 10_000
    read_ratio: float = 0.0

    @property
    def kind(self) -> str:
        if self.read_ratio >= 1:
            return "get"
        if self.read_ratio <= 0:
            return "put"
        return f"{self.read_ratio:.0%}get"

    @property
    def name(self) -> str:
        return f"{self.kind} c{self.concurrency} {_size(self.value_size)} {_count(self.keys)} keys"


@dataclass(frozen=True)
class BenchOptions:
    addresses: Sequence[str]
    servers: Sequence[Server]
    workloads: Sequence[Workload] = (Workload(),)
    duration: float = 10.0
    echo: bool = False
    warmup: float = 1.0
    seed: int = 1
    r: str | int | None = None  # consistency of gets (None: the server's default, quorum)
    w: str | int | None = None  # consistency of puts
    unary: bool = False  # unary calls, not the client's default KV.Session stream
    credentials: Credentials = PLAINTEXT  # what the client presents (TLS, a token)
    timeout: float = 10.0  # of each call, retries included


def workloads(concurrency: Sequence[int], value_size: Sequence[int], keys: Sequence[int],
              read_ratio: Sequence[float]) -> list[Workload]:
    """One workload per combination, in the order given."""
    return [Workload(c, v, k, r)
            for c, v, k, r in itertools.product(concurrency, value_size, keys, read_ratio)]


# Operations per message, per hop: (name, stream label, direction), counted
# where the messages arrive or leave as named.
HOPS = (
    ("client>server", "KV.Session", "received"),
    ("answers", "KV.Session", "sent"),
    ("to replicas", "PeerLink", "sent"),
    ("replica answers", "Replica.Stream", "sent"),
)


@dataclass(frozen=True)
class PhaseResult:
    name: str
    operations: int
    errors: int
    seconds: float
    latencies: list[float]  # sorted, seconds
    server_cpu_seconds: float
    client_cpu_seconds: float
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    per_message: dict[str, float] = field(default_factory=dict)  # hop -> operations per message
    refused: dict[str, float] = field(default_factory=dict)  # bound -> refusals, all servers
    memory: dict[str, Resident] = field(default_factory=dict)  # server name -> its memory
    peak_is_phase: bool = True  # False: peaks are since each process started
    # Latency of the requests the servers admitted and answered OK (a call's
    # latency above includes its refusals and backoffs): fraction -> at most
    # this many seconds, the upper bound of the histogram bucket it falls in.
    admitted: dict[float, float] = field(default_factory=dict)

    @property
    def ops_per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies:
            return float("nan")
        index = min(len(self.latencies) - 1, int(fraction * len(self.latencies)))
        return self.latencies[index] * 1000

    @property
    def server_cpu_ms_per_op(self) -> float:
        return 1000 * self.server_cpu_seconds / self.operations if self.operations else float("nan")

    @property
    def client_cpu_ms_per_op(self) -> float:
        return 1000 * self.client_cpu_seconds / self.operations if self.operations else float("nan")


def _key(index: int) -> bytes:
    return b"bench-%08d" % index


def _size(value_size: int) -> str:
    if value_size >= MIB and value_size % MIB == 0:
        return f"{value_size // MIB}MiB"
    if value_size >= 1000 and value_size % 1000 == 0:
        return f"{value_size // 1000}kB"
    return f"{value_size}B"


def _seconds(seconds: float) -> str:
    return "over 10 s" if seconds == float("inf") else f"{seconds * 1000:g} ms"


def _count(keys: int) -> str:
    if keys >= 1_000_000 and keys % 1_000_000 == 0:
        return f"{keys // 1_000_000}M"
    if keys >= 1000 and keys % 1000 == 0:
        return f"{keys // 1000}k"
    return str(keys)


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(servers: Sequence[Server]) -> float:
    return sum(cpu_seconds(server.pid) for server in servers)


def _error_kind(error: Exception) -> str:
    if isinstance(error, KVError):
        return f"{error.code.name}/{error.reason}" if error.reason else error.code.name
    return type(error).__name__


class _Watch:
    """What the servers did during a phase: their metrics before and after,
    and their peak memory (reset at the start where the kernel allows)."""

    def __init__(self, servers: Sequence[Server]) -> None:
        self._servers = servers
        self._before = self._scrape()
        self.peak_is_phase = all([reset_peak(server.pid) for server in servers])

    def _scrape(self) -> dict[str, Samples]:
        found = {}
        for server in self._servers:
            if server.metrics:
                try:
                    found[server.name] = scrape(server.metrics)
                except OSError:
                    pass  # no metrics from it: its hops are left out
        return found

    def finish(self) -> tuple[dict[str, float], dict[str, float], dict[str, Resident],
                              dict[float, float]]:
        after = self._scrape()
        memory = {server.name: resident(server.pid) for server in self._servers}
        both = [name for name in after if name in self._before]

        def grown(name: str, labels: dict[str, str] | None = None) -> float:
            return sum(total(after[n], name, labels) - total(self._before[n], name, labels)
                       for n in both)

        per_message = {}
        for hop, stream, direction in HOPS:
            labels = {"stream": stream, "direction": direction}
            messages = grown("kvstore_stream_messages_total", labels)
            if messages:
                per_message[hop] = grown("kvstore_stream_items_total", labels) / messages
        commits = grown("kvstore_commit_batch_size_count")
        if commits:
            per_message["per commit"] = grown("kvstore_commit_batch_size_sum") / commits
        bounds = {bound for n in both for (name, labels) in after[n]
                  if name == "kvstore_requests_refused_total" for key, bound in labels
                  if key == "bound"}
        refused = {bound: grown("kvstore_requests_refused_total", {"bound": bound})
                   for bound in sorted(bounds)}
        targets = [server.name for server in self._servers
                   if server.target and server.name in both]
        admitted = _admitted_latency(
            {n: after[n] for n in targets}, {n: self._before[n] for n in targets})
        return per_message, {b: n for b, n in refused.items() if n}, memory, admitted


_KV_METHODS = ("Get", "Put", "Delete", "GetMany", "PutMany")


def _admitted_latency(after: dict[str, Samples], before: dict[str, Samples]
                      ) -> dict[float, float]:
    """p50 and p99 (as bucket upper bounds) of the KV requests answered OK
    by these servers between the two scrapes."""
    counts: dict[float, float] = {}
    for name, samples in after.items():
        for (sample, labels), value in samples.items():
            label = dict(labels)
            if (sample == "kvstore_request_duration_seconds_bucket" and label.get("code") == "OK"
                    and label.get("method") in _KV_METHODS):
                earlier = before[name].get((sample, labels), 0.0)
                edge = float(label["le"])
                counts[edge] = counts.get(edge, 0.0) + value - earlier
    edges = sorted(counts)
    if not edges or not counts[edges[-1]]:
        return {}
    everything = counts[edges[-1]]  # buckets are cumulative: +Inf holds all
    return {fraction: next(edge for edge in edges if counts[edge] >= fraction * everything)
            for fraction in (0.5, 0.99)}


async def _closed_loop(name: str, operation: Callable[[random.Random], Awaitable[None]],
                       options: BenchOptions, concurrency: int) -> PhaseResult:
    if options.warmup > 0:
        await _run_workers(operation, options, concurrency, options.warmup, [])
    latencies: list[float] = []
    watch = _Watch(options.servers)
    cpu_before, client_before = _server_cpu(options.servers), _client_cpu()
    started = time.perf_counter()
    errors = await _run_workers(operation, options, concurrency, options.duration, latencies)
    elapsed = time.perf_counter() - started
    cpu_after, client_after = _server_cpu(options.servers), _client_cpu()
    per_message, refused, memory, admitted = watch.finish()
    latencies.sort()
    return PhaseResult(name, len(latencies), sum(errors.values()), elapsed, latencies,
                       cpu_after - cpu_before, client_after - client_before, dict(errors),
                       per_message, refused, memory, watch.peak_is_phase, admitted)


async def _run_workers(operation: Callable[[random.Random], Awaitable[None]],
                       options: BenchOptions, concurrency: int, seconds: float,
                       latencies: list[float]) -> Counter[str]:
    end = time.perf_counter() + seconds
    errors: Counter[str] = Counter()

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        clock = time.perf_counter
        while (start := clock()) < end:
            try:
                await operation(rng)
            except Exception as error:
                errors[_error_kind(error)] += 1
                continue
            latencies.append(clock() - start)

    async with asyncio.TaskGroup() as group:
        for index in range(concurrency):
            group.create_task(worker(options.seed * 100_003 + index))
    return errors


async def _preload(client: AsyncClient, workload: Workload) -> None:
    """Write every key of `workload` once, in batches of at most 1 MiB, a
    few at a time (so a million keys take minutes, not an hour; more at once
    would pass the server's request deadline, each item being a write)."""
    value = os.urandom(workload.value_size)
    batch = max(1, min(PRELOAD_BATCH, MIB // max(1, workload.value_size)))
    room = asyncio.Semaphore(PRELOAD_BATCHES_IN_FLIGHT)

    async def put_batch(start: int) -> None:
        items = [(_key(i), value) for i in range(start, min(start + batch, workload.keys))]
        try:
            for attempt in range(PRELOAD_ATTEMPTS):
                try:
                    await client.put_many(items, timeout=120)
                    return
                except KVError:  # e.g. a batch past the server's deadline: write it again
                    if attempt == PRELOAD_ATTEMPTS - 1:
                        raise
        finally:
            room.release()

    async with asyncio.TaskGroup() as group:
        for start in range(0, workload.keys, batch):
            await room.acquire()  # released by the batch once it is written
            group.create_task(put_batch(start))


OnPhase = Callable[[PhaseResult], None]


async def run_bench(options: BenchOptions,
                    on_phase: OnPhase = lambda result: None) -> list[PhaseResult]:
    """Every phase of `options`, in order; `on_phase` is told of each as it ends."""
    results: list[PhaseResult] = []

    def done(result: PhaseResult) -> None:
        results.append(result)
        on_phase(result)

    preloaded: set[tuple[int, int]] = set()
    async with AsyncClient(list(options.addresses), timeout=options.timeout,
                           stream=not options.unary, tls=options.credentials.tls,
                           token=options.credentials.token) as client:
        for workload in options.workloads:
            payload = os.urandom(workload.value_size)
            if options.echo:
                done(await _closed_loop(
                    f"echo c{workload.concurrency} {_size(workload.value_size)}",
                    _echo(client, payload), options, workload.concurrency))
            if workload.read_ratio > 0 and (workload.keys, workload.value_size) not in preloaded:
                await _preload(client, workload)
                preloaded.add((workload.keys, workload.value_size))
            done(await _closed_loop(workload.name, _workload(client, workload, payload,
                                                                       options),
                                              options, workload.concurrency))
    return results


def _echo(client: AsyncClient, payload: bytes) -> Callable[[random.Random], Awaitable[None]]:
    async def operation(rng: random.Random) -> None:
        await client.ping(payload)
    return operation


def _workload(client: AsyncClient, workload: Workload, payload: bytes,
              options: BenchOptions) -> Callable[[random.Random], Awaitable[None]]:
    async def operation(rng: random.Random) -> None:
        key = _key(rng.randrange(workload.keys))
        if rng.random() < workload.read_ratio:
            await client.get(key, r=options.r)
        else:
            await client.put(key, payload, w=options.w)
    return operation


class Report:
    """The printed report, a phase at a time (so a long run shows each phase
    as it ends): `header()`, then `phase(result)` for each, in order."""

    def __init__(self, options: BenchOptions, idle: dict[str, Resident] | None = None) -> None:
        self._options = options
        self._idle = idle or {}
        self._echo: PhaseResult | None = None

    def header(self, servers: int) -> list[str]:
        options = self._options
        return [
            f"closed loop: {options.duration:g}s per phase, r={options.r or 'default'}, "
            f"w={options.w or 'default'}, {servers} server process(es), "
            f"{'unary calls' if options.unary else 'KV.Session stream'}",
            f"{'phase':<26}{'ops':>8}{'ops/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'p999 ms':>9}"
            f"{'srv CPU ms/op':>14}{'cli CPU ms/op':>14}{'vs echo':>8}{'errors':>7}",
        ]

    def phase(self, r: PhaseResult) -> list[str]:
        if r.name.startswith("echo"):
            self._echo = r
        echo = self._echo
        ratio = (f"{r.ops_per_second / echo.ops_per_second:.0%}"
                 if echo is not None and r is not echo and echo.ops_per_second else "-")
        return [
            f"{r.name:<26}{r.operations:>8}{r.ops_per_second:>8.0f}{r.percentile_ms(0.5):>9.2f}"
            f"{r.percentile_ms(0.99):>9.2f}{r.percentile_ms(0.999):>9.2f}"
            f"{r.server_cpu_ms_per_op:>14.3f}{r.client_cpu_ms_per_op:>14.3f}{ratio:>8}"
            f"{r.errors:>7}",
            *(f"    {line}" for line in _details(r, self._idle)),
        ]


def format_results(results: Sequence[PhaseResult], options: BenchOptions,
                   idle: dict[str, Resident] | None = None) -> str:
    report = Report(options, idle)
    servers = len(results[0].memory) if results else len(options.servers)
    return "\n".join([*report.header(servers),
                      *(line for result in results for line in report.phase(result))])


def _details(result: PhaseResult, idle: dict[str, Resident]) -> list[str]:
    details = []
    if result.errors_by_kind:
        details.append("errors: " + ", ".join(
            f"{kind} {count}" for kind, count in sorted(result.errors_by_kind.items())))
    if result.refused:
        details.append("refused by the servers (and retried): " + ", ".join(
            f"{bound} {count:.0f}" for bound, count in result.refused.items()))
    if result.admitted and result.refused:
        details.append("admitted requests at the servers: " + ", ".join(
            f"p{fraction * 100:g} <= {_seconds(seconds)}"
            for fraction, seconds in result.admitted.items()))
    if result.per_message:
        details.append("operations per message: " + ", ".join(
            f"{hop} {value:.1f}" for hop, value in result.per_message.items()))
    if result.memory:
        since = "" if result.peak_is_phase else " (since start)"
        details.append(f"peak RSS{since} MB: " + ", ".join(
            f"{name} {memory.peak / MIB:.0f}" + (
                f" (idle {idle[name].rss / MIB:.0f})" if name in idle else "")
            for name, memory in result.memory.items()))
    return details


def idle_memory(servers: Sequence[Server]) -> dict[str, Resident]:
    """Each server's memory before the benchmark sends anything."""
    return {server.name: resident(server.pid) for server in servers}


def run_against_temporary_node(options: BenchOptions, durability: str,
                               start: Callable[[dict[str, Resident]], OnPhase],
                               ) -> list[PhaseResult]:
    """Start a throwaway single node, benchmark it, stop it; `start(idle)`
    is told each server's idle memory and gives what hears of each phase."""
    with tempfile.TemporaryDirectory(prefix="kvstore-bench-") as scratch:
        metrics_port = free_port()
        node = start_node("bench", Path(scratch) / "data", metrics_port=metrics_port,
                          extra=["--durability", durability, "--log-level", "warning"])
        try:
            server = Server("node", node.pid, f"127.0.0.1:{metrics_port}")
            local = replace(options, addresses=[node.address], servers=[server])
            return _run(local, start(idle_memory(local.servers)))
        finally:
            node.stop()


def _run(options: BenchOptions, on_phase: OnPhase) -> list[PhaseResult]:
    import uvloop

    return uvloop.run(run_bench(options, on_phase))


def run_against(options: BenchOptions,
                start: Callable[[dict[str, Resident]], OnPhase]) -> list[PhaseResult]:
    """Benchmark running servers; `start` as for run_against_temporary_node."""
    return _run(options, start(idle_memory(options.servers)))


def targets_of_cluster_file(path: Path, via: str) -> tuple[list[str], list[Server]]:
    """From a `kvstore cluster up` cluster.json: the addresses to send to (its
    coordinators, or its nodes when `via` says so or there are no
    coordinators) and every process, for CPU, memory and metrics."""
    document = json.loads(path.read_text())
    processes = document["processes"]
    coordinators = [p["address"] for p in processes if p["role"] == "coordinator"]
    nodes = [p["address"] for p in processes if p["role"] == "node"]
    targets = nodes if via == "nodes" or not coordinators else coordinators
    return targets, [Server(p["id"], int(p["pid"]), p.get("metrics") or None,
                            p["address"] in targets) for p in processes]
