"""`kvstore admin snapshot` and `admin restore` in leader mode, on real
processes: a node's snapshot, taken over the network, is restored into its
data dir after it missed writes; the restore fences its Raft groups above
the cluster's highest term (`kvstore.leader.restore_fence`), and the node
catches up from the leaders and then votes and leads again. The restore is
refused while the node runs, while another member does not answer, and
without the cluster to ask."""

import subprocess
import sys
from pathlib import Path

import pytest

import kvclient
from kvstore.ops.remote import fetch_status
from tests.clusters import Cluster, poll

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

PARTITIONS = 16  # tests/clusters.py's


def kvstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvstore", *args], capture_output=True,
                          text=True, timeout=120)


def every_partition_led(cluster: Cluster, among: set[str]) -> bool:
    leaders: dict[int, tuple[int, str]] = {}
    for node_id in among:
        try:
            status = fetch_status(cluster.nodes[node_id].address, 2)
        except Exception:
            continue
        for group in status.raft:
            if group.role == "leader" and group.term >= leaders.get(group.partition, (0, ""))[0]:
                leaders[group.partition] = (group.term, node_id)
    return len(leaders) == PARTITIONS


def test_a_restored_node_is_fenced_catches_up_and_then_leads_again(
        make_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(mode="leader")
    poll(lambda: every_partition_led(cluster, {"n1", "n2", "n3"}), 30, "every partition led")
    n1, n2, n3 = (cluster.nodes[n] for n in ("n1", "n2", "n3"))
    token = cluster.admin.token
    assert token is not None
    with kvclient.Client([n1.address, n3.address], timeout=15) as kv:
        before = {f"before/{i}".encode(): kv.put(f"before/{i}".encode(), b"1").version
                  for i in range(120)}
    backup = tmp_path / "n2.snapshot"
    taken = kvstore("admin", "snapshot", "--address", n2.address, "--out", str(backup),
                    "--token", token)
    assert taken.returncode == 0, taken.stderr
    assert "n2 (" in taken.stdout

    # Writes n2 acknowledges after its backup, and then forgets.
    with kvclient.Client([n1.address, n3.address], timeout=15) as kv:
        after = {f"after/{i}".encode(): kv.put(f"after/{i}".encode(), b"2").version
                 for i in range(60)}
        for key in list(before)[:30]:
            before[key] = kv.put(key, b"changed").version
    expected = {**before, **after}

    restore = ["admin", "restore", str(backup), "--data-dir", str(n2.data_dir), "--force",
               "--node-id", "n2", "--address", n1.address, "--token", token, "--timeout", "3"]
    running = kvstore(*restore)
    assert running.returncode == 2 and "n2 is running" in running.stderr
    n2.kill()
    n3.kill()
    silent = kvstore(*restore)
    assert silent.returncode == 2 and "every other member must answer" in silent.stderr
    assert "n3" in silent.stderr
    n3 = cluster.restart("n3")
    poll(lambda: every_partition_led(cluster, {"n1", "n3"}), 30, "n1 and n3 lead every partition")
    unasked = kvstore("admin", "restore", str(backup), "--data-dir", str(n2.data_dir), "--force")
    assert unasked.returncode == 2 and "leader-mode node's snapshot" in unasked.stderr

    highest = max(g.term for node in (n1, n3) for g in fetch_status(node.address, 2).raft)
    restored = kvstore(*restore)
    assert restored.returncode == 0, restored.stderr
    assert f"fenced {PARTITIONS} Raft group(s) above term {highest}" in restored.stdout
    assert "restored 120 key(s)" in restored.stdout  # what the backup held

    n2 = cluster.restart("n2")
    with kvclient.Client([n2.address], timeout=10, token_aware=False) as kv:
        def caught_up() -> bool:
            return all(kv.get(key, stale=True).version == version
                       for key, version in expected.items())

        poll(caught_up, 60, "the restored n2 holds every write, those after its backup too")
    poll(lambda: not any(g.fenced for g in fetch_status(n2.address, 2).raft), 60,
         "every group of n2 has lifted its fence")
    # Once caught up, the fence is lifted: n2 takes a leadership handed to it
    # (a fenced member ignores the hand-over) at a term above the fence.
    status = fetch_status(n1.address, 2)
    partition = next(g.partition for g in status.raft if g.role == "leader")

    def n2_took_over() -> bool:
        moved = kvstore("admin", "transfer-leader", str(partition), "n2",
                        "--address", n1.address, "--token", token)
        return moved.returncode == 0

    poll(n2_took_over, 60, f"n2 takes partition {partition}'s leadership")
    led = {g.partition: g for g in fetch_status(n2.address, 2).raft}[partition]
    assert led.role == "leader" and led.term > highest + 1
    with kvclient.Client([n2.address], timeout=10) as kv:
        for key, version in expected.items():
            assert kv.get(key).version == version
