"""`kvstore bench` runs end to end and prints every figure it promises."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore.ops.bench import Server, Workload, targets_of_cluster_file, workloads
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
    servers = [Server("n1", 11, "127.0.0.1:9101"), Server("c1", 12, None)]
    assert targets_of_cluster_file(path, "coordinators") == (["127.0.0.1:7201"], servers)
    assert targets_of_cluster_file(path, "nodes") == (["127.0.0.1:7101"], servers)


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
