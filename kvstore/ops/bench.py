"""`kvstore bench`: a closed-loop load generator.

Each of `concurrency` tasks issues one operation, waits for its answer, and
issues the next, for `duration` seconds. Reported per phase: operations per
second, p50/p99/p999 latency, and the server processes' CPU seconds per
operation (from /proc, so only for processes on this machine). With --echo, a
phase of KV.Ping calls carrying the same payload size runs first: the gRPC
transport's ceiling on this machine, in the same run, so every result can be
given as a ratio to it. The client takes its default path, the KV.Session
stream (the calls of the tasks coalesce into its messages); --unary sends
unary calls instead, to compare the two.
"""

import asyncio
import json
import os
import random
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kvclient.security import PLAINTEXT, Credentials
from kvclient import AsyncClient
from kvstore.ops.processes import cpu_seconds, start_node

PRELOAD_BATCH = 500


@dataclass(frozen=True)
class BenchOptions:
    addresses: Sequence[str]
    server_pids: Sequence[int]
    concurrency: int = 64
    duration: float = 10.0
    keys: int = 10_000
    value_size: int = 100
    read_ratio: float = 0.0
    echo: bool = False
    warmup: float = 1.0
    seed: int = 1
    r: str | int | None = None  # consistency of gets (None: the server's default, quorum)
    w: str | int | None = None  # consistency of puts
    unary: bool = False  # unary calls, not the client's default KV.Session stream
    credentials: Credentials = PLAINTEXT  # what the client presents (TLS, a token)


@dataclass(frozen=True)
class PhaseResult:
    name: str
    operations: int
    errors: int
    seconds: float
    latencies: list[float]  # sorted, seconds
    server_cpu_seconds: float
    client_cpu_seconds: float

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


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


async def _closed_loop(
    name: str, operation: Callable[[random.Random], Awaitable[None]], options: BenchOptions
) -> PhaseResult:
    if options.warmup > 0:
        await _run_workers(operation, options, options.warmup, [])
    latencies: list[float] = []
    cpu_before, client_before = _server_cpu(options.server_pids), _client_cpu()
    started = time.perf_counter()
    errors = await _run_workers(operation, options, options.duration, latencies)
    elapsed = time.perf_counter() - started
    cpu_after, client_after = _server_cpu(options.server_pids), _client_cpu()
    latencies.sort()
    return PhaseResult(name, len(latencies), errors, elapsed, latencies,
                       cpu_after - cpu_before, client_after - client_before)


async def _run_workers(
    operation: Callable[[random.Random], Awaitable[None]], options: BenchOptions,
    seconds: float, latencies: list[float],
) -> int:
    end = time.perf_counter() + seconds
    errors = 0

    async def worker(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        clock = time.perf_counter
        while (start := clock()) < end:
            try:
                await operation(rng)
            except Exception:
                errors += 1
                continue
            latencies.append(clock() - start)

    async with asyncio.TaskGroup() as group:
        for index in range(options.concurrency):
            group.create_task(worker(options.seed * 100_003 + index))
    return errors


async def _preload(client: AsyncClient, options: BenchOptions) -> None:
    value = os.urandom(options.value_size)
    for start in range(0, options.keys, PRELOAD_BATCH):
        batch = [(_key(i), value) for i in range(start, min(start + PRELOAD_BATCH, options.keys))]
        await client.put_many(batch, timeout=60)


async def run_bench(options: BenchOptions) -> list[PhaseResult]:
    results = []
    payload = os.urandom(options.value_size)
    async with AsyncClient(list(options.addresses), timeout=10,
                           stream=not options.unary, tls=options.credentials.tls,
                           token=options.credentials.token) as client:
        if options.echo:
            async def echo(rng: random.Random) -> None:
                await client.ping(payload)
            results.append(await _closed_loop("echo", echo, options))
        if options.read_ratio > 0:
            await _preload(client, options)

        async def workload(rng: random.Random) -> None:
            key = _key(rng.randrange(options.keys))
            if rng.random() < options.read_ratio:
                await client.get(key, r=options.r)
            else:
                await client.put(key, payload, w=options.w)

        results.append(await _closed_loop(_workload_name(options.read_ratio), workload, options))
    return results


def _workload_name(read_ratio: float) -> str:
    if read_ratio >= 1:
        return "get"
    if read_ratio <= 0:
        return "put"
    return f"mixed {read_ratio:.0%} get"


def format_results(results: Sequence[PhaseResult], options: BenchOptions) -> str:
    echo = next((r for r in results if r.name == "echo"), None)
    lines = [
        f"closed loop: concurrency {options.concurrency}, {options.duration:g}s per phase, "
        f"{options.keys} keys, {options.value_size}-byte values, r={options.r or 'default'}, "
        f"w={options.w or 'default'}, {len(options.server_pids)} server process(es), "
        f"{'unary calls' if options.unary else 'KV.Session stream'}",
        f"{'phase':<14}{'ops':>9}{'ops/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p999 ms':>9}"
        f"{'srv CPU ms/op':>15}{'cli CPU ms/op':>15}{'vs echo':>9}{'errors':>8}",
    ]
    for r in results:
        ratio = f"{r.ops_per_second / echo.ops_per_second:.0%}" if echo and r is not echo else "-"
        lines.append(
            f"{r.name:<14}{r.operations:>9}{r.ops_per_second:>10.0f}{r.percentile_ms(0.5):>9.2f}"
            f"{r.percentile_ms(0.99):>9.2f}{r.percentile_ms(0.999):>9.2f}"
            f"{r.server_cpu_ms_per_op:>15.3f}{r.client_cpu_ms_per_op:>15.3f}{ratio:>9}{r.errors:>8}"
        )
    return "\n".join(lines)


def run_against_temporary_node(options: BenchOptions, durability: str) -> list[PhaseResult]:
    """Start a throwaway single node, benchmark it, stop it."""
    with tempfile.TemporaryDirectory(prefix="kvstore-bench-") as scratch:
        node = start_node("bench", Path(scratch) / "data", metrics_port=0,
                          extra=["--durability", durability, "--log-level", "warning"])
        try:
            local = BenchOptions(**{**options.__dict__, "addresses": [node.address],
                                    "server_pids": [node.pid]})
            return _run(local)
        finally:
            node.stop()


def _run(options: BenchOptions) -> list[PhaseResult]:
    import uvloop

    return uvloop.run(run_bench(options))


def run_against(options: BenchOptions) -> list[PhaseResult]:
    return _run(options)


def targets_of_cluster_file(path: Path, via: str) -> tuple[list[str], list[int]]:
    """From a `kvstore cluster up` cluster.json: the addresses to send to (its
    coordinators, or its nodes when `via` says so or there are no
    coordinators) and every process's pid, for CPU per operation."""
    document = json.loads(path.read_text())
    processes = document["processes"]
    coordinators = [p["address"] for p in processes if p["role"] == "coordinator"]
    nodes = [p["address"] for p in processes if p["role"] == "node"]
    targets = nodes if via == "nodes" or not coordinators else coordinators
    return targets, [int(p["pid"]) for p in processes]
