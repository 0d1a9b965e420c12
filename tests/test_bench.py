"""`kvstore bench` runs end to end and prints every figure it promises."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore.ops.bench import (Server, Workload, _admitted_latency, targets_of_cluster_file,
                               workloads)
from kvstore.ops.scrape import Samples
from kvstore.ops.process_memory import reset_peak, resident


@pytest.mark.process
@pytest.mark.timeout(120)
def test_bench_against_a_temporary_node_prints_every_figure_per_phase() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kvstore", "bench", "--echo", "--duration", "0.5", "--warmup", "0",
         "--keys", "50", "--concurrency", "4,8", "--read-ratio", "0.5"],
        capture_output=True, text=True, timeout=100,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("phase"))
    for column in ("ops/s", "p50 ms", "p99 ms", "p999 ms", "srv CPU ms/op", "vs echo", "errors"):
        assert column in header
    rows = [line.split() for line in lines if line.startswith(("echo", "50%get"))]
    # A phase per concurrency, each after its own echo phase.
    assert [row[:2] for row in rows] == [["echo", "c4"], ["50%get", "c4"], ["echo", "c8"],
                                         ["50%get", "c8"]]
    for row in rows:
        assert int(row[-9]) > 0  # operations done
        assert row[-1] == "0"  # no errors
        assert float(row[-5]) > 0  # server CPU per operation was measured
    hops = [line for line in lines if "operations per message:" in line]
    assert len(hops) == 4 and all("client>server" in line and "answers" in line for line in hops)
    assert all("per commit" in line for line in hops[1::2])  # the mixed phases wrote
    peaks = [line for line in lines if "peak RSS MB:" in line]
    assert len(peaks) == 4 and all(re.search(r"node \d+ \(idle \d+\)", line) for line in peaks)


def test_a_phase_for_each_combination_of_the_lists_given() -> None:
    made = workloads([64, 2000], [100, 1 << 20], [10_000], [0.0])
    assert [w.name for w in made] == ["put c64 100B 10k keys", "put c64 1MiB 10k keys",
                                      "put c2000 100B 10k keys", "put c2000 1MiB 10k keys"]
    assert Workload(read_ratio=0.9, keys=1_000_000).name == "90%get c64 100B 1M keys"


def test_cluster_file_targets_coordinators_or_nodes_and_watches_every_process(
        tmp_path: Path) -> None:
    document = {"processes": [
        {"role": "node", "id": "n1", "address": "127.0.0.1:7101", "metrics": "127.0.0.1:9101",
         "pid": 11},
        {"role": "coordinator", "id": "c1", "address": "127.0.0.1:7201", "metrics": "", "pid": 12},
    ], "replicas": 1, "partitions": 64, "mode": "leaderless"}
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(document))
    to_c1 = [Server("n1", 11, "127.0.0.1:9101", False), Server("c1", 12, None, True)]
    assert targets_of_cluster_file(path, "coordinators") == (["127.0.0.1:7201"], to_c1)
    to_n1 = [Server("n1", 11, "127.0.0.1:9101", True), Server("c1", 12, None, False)]
    assert targets_of_cluster_file(path, "nodes") == (["127.0.0.1:7101"], to_n1)


def test_resident_memory_and_a_new_peak_come_from_proc() -> None:
    before = resident(os.getpid())
    assert 0 < before.anonymous <= before.rss <= before.peak
    ballast = bytearray(64 << 20)  # touched: 64 MiB more resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    grown = resident(os.getpid())
    assert grown.peak >= grown.rss >= before.rss + (60 << 20)
    del ballast
    if reset_peak(os.getpid()):  # a kernel that allows it starts the peak again from now
        assert resident(os.getpid()).peak < grown.peak


def test_admitted_latency_is_the_bucket_bound_of_the_servers_ok_kv_requests_in_the_phase() -> None:
    def samples(counts: dict[str, float], method: str = "Put", code: str = "OK") -> Samples:
        return {("kvstore_request_duration_seconds_bucket",
                 frozenset({"le": le, "method": method, "code": code}.items())): count
                for le, count in counts.items()}

    before = {"c1": samples({"0.1": 50, "1.0": 50, "2.5": 50, "+Inf": 50})}
    after = {"c1": {**samples({"0.1": 100, "1.0": 148, "2.5": 150, "+Inf": 150}),
                    **samples({"0.1": 0, "1.0": 0, "2.5": 0, "+Inf": 900}, code="CANCELLED"),
                    **samples({"0.1": 0, "1.0": 0, "2.5": 0, "+Inf": 900}, method="Ping")}}
    # 100 requests in the phase: 50 within 0.1 s, 98 within 1 s, all within 2.5 s.
    assert _admitted_latency(after, before) == {0.5: 0.1, 0.99: 2.5}
    assert _admitted_latency(before, before) == {}
