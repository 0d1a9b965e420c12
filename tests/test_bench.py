"""`kvstore bench` runs end to end and prints every figure it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore.ops.bench import targets_of_cluster_file


@pytest.mark.process
@pytest.mark.timeout(120)
def test_bench_against_a_temporary_node_prints_throughput_latency_and_cpu() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kvstore", "bench", "--echo", "--duration", "0.5", "--warmup", "0",
         "--keys", "50", "--concurrency", "4", "--read-ratio", "0.5"],
        capture_output=True, text=True, timeout=100,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("phase"))
    for column in ("ops/s", "p50 ms", "p99 ms", "p999 ms", "srv CPU ms/op", "vs echo", "errors"):
        assert column in header
    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("echo", "mixed"))}
    assert set(rows) == {"echo", "mixed"}
    assert int(rows["echo"][1]) > 0 and int(rows["mixed"][3]) > 0  # operations done
    assert rows["mixed"][-1] == "0"  # no errors
    assert float(rows["echo"][-4]) > 0  # server CPU per operation was measured


def test_cluster_file_targets_coordinators_or_nodes(tmp_path: Path) -> None:
    document = {"processes": [
        {"role": "node", "id": "n1", "address": "127.0.0.1:7101", "metrics": "", "pid": 11},
        {"role": "coordinator", "id": "c1", "address": "127.0.0.1:7201", "metrics": "", "pid": 12},
    ], "replicas": 1, "partitions": 64, "mode": "leaderless"}
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(document))
    assert targets_of_cluster_file(path, "coordinators") == (["127.0.0.1:7201"], [11, 12])
    assert targets_of_cluster_file(path, "nodes") == (["127.0.0.1:7101"], [11, 12])
