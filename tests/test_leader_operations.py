"""Leader mode for operators, on a real `kvstore cluster up --mode leader`:
cluster status shows each node's leaderships, `kvstore ring` every
partition's leader, term, commit and applied index, `kvstore admin
transfer-leader` moves one, the CLI reads and writes versions, and the Raft
metrics are served."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.clusters import poll
from tests.test_cluster_up import ClusterUp, clusters, free_base_port, run_cli  # noqa: F401

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

PARTITIONS = 8


def ring(data_dir: Path, address: str) -> dict:  # type: ignore[type-arg]
    answer = run_cli("ring", "-o", "json", "--address", address, "--data-dir", str(data_dir))
    assert answer.returncode == 0, answer.stderr
    return json.loads(answer.stdout)  # type: ignore[no-any-return]


def test_cluster_up_in_leader_mode_shows_moves_and_measures_leaders(
        tmp_path: Path, clusters: Callable[..., ClusterUp]) -> None:  # noqa: F811
    data_dir = tmp_path / "data"
    cluster = clusters(data_dir, "--mode", "leader", "--partitions", str(PARTITIONS),
                       "--base-port", str(free_base_port()))
    document = cluster.wait_up()
    assert document["mode"] == "leader"
    coordinator = cluster.address("c1")

    def every_partition_led() -> bool:
        return all(row["leader"] for row in ring(data_dir, coordinator)["ring"])

    poll(every_partition_led, 20, "every partition has a leader")

    written = run_cli("put", "greeting", "hello", "--address", coordinator,
                      "--data-dir", str(data_dir))
    assert written.returncode == 0, written.stderr
    version = int(written.stdout.split()[-1])
    read = run_cli("get", "greeting", "--json", "--address", cluster.address("n2"),
                   "--data-dir", str(data_dir))
    assert json.loads(read.stdout)["version"] == version
    lost = run_cli("put", "greeting", "hi", "--if-version", str(version + 1),
                   "--address", coordinator, "--data-dir", str(data_dir))
    assert lost.returncode == 2 and "FAILED_PRECONDITION" in lost.stderr
    assert f"if_version={version}" in lost.stderr

    rows = ring(data_dir, coordinator)["ring"]
    assert [row["partition"] for row in rows] == list(range(PARTITIONS))
    for row in rows:
        assert row["leader"] in row["replicas"] and row["term"] >= 1
        assert row["applied"] <= row["commit"] and row["commit"] >= 1
    table = run_cli("ring", "--address", coordinator, "--data-dir", str(data_dir))
    assert "leader" in table.stdout and "applied" in table.stdout

    status = run_cli("cluster", "status", "--data-dir", str(data_dir))
    assert status.returncode == 0, status.stderr
    assert "leads" in status.stdout
    led = [line for line in status.stdout.splitlines() if " of 8 " in line]
    assert len(led) == 3  # a "k of 8" per node

    partition = 3
    current = rows[partition]["leader"]
    target = next(r for r in rows[partition]["replicas"] if r != current)
    moved = run_cli("admin", "transfer-leader", str(partition), target,
                    "--address", coordinator, "--data-dir", str(data_dir))
    assert moved.returncode == 0, moved.stderr
    assert f"from {current} to {target}" in moved.stdout
    assert ring(data_dir, coordinator)["ring"][partition]["leader"] == target
    again = run_cli("admin", "transfer-leader", str(partition), target,
                    "--address", coordinator, "--data-dir", str(data_dir))
    assert again.returncode == 0 and "leads it already" in again.stdout
    refused = run_cli("admin", "transfer-leader", str(PARTITIONS), target,
                      "--address", coordinator, "--data-dir", str(data_dir))
    assert refused.returncode == 2 and "does not exist" in refused.stderr

    import urllib.request

    node = next(p for p in document["processes"] if p["id"] == target)
    text = urllib.request.urlopen(f"http://{node['metrics']}/metrics", timeout=5).read().decode()
    for name in ("kvstore_raft_leader_changes_total", 'kvstore_raft_proposals_total{result=',
                 "kvstore_raft_commit_duration_seconds_bucket", "kvstore_raft_apply_lag_entries",
                 'kvstore_raft_snapshots_total{direction="sent"}',
                 'kvstore_raft_snapshots_total{direction="received"}',
                 "kvstore_raft_groups_quiesced", "kvstore_raft_groups_led"):
        assert name in text, name
