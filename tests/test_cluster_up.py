"""`kvstore cluster up` and `kvstore cluster status`: real processes on loopback.

Every cluster runs on a random base port whose ports were all free a moment
before, in the test's own data dir; the `clusters` fixture stops whatever a
test started, by pid.
"""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import kvclient
from kvstore.ops.cli import main
from kvstore.ops.cluster_layout import Layout, Requested, resolve, save_layout, write_config
from kvstore.ops.cluster_layout import free_base_port as layout_free_base_port
from kvstore.ops.cluster_status import collect, pid_alive, read_cluster
from kvstore.ops.probe import is_serving
from kvstore.ops.processes import cluster_up_command, launch

START_SECONDS = 60.0  # cluster up's own deadline for every process to serve
STOP_SECONDS = 30.0


def free_base_port(nodes: int = 3, coordinators: int = 1) -> int:
    return layout_free_base_port(nodes, coordinators, random.Random())


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll `condition` until it returns something true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    delay = 0.01
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(delay)  # polling back-off, not synchronisation
        delay = min(delay * 2, 0.2)


def runs_from(pid: int, data_dir: Path) -> bool:
    """`pid` is alive and is one of this data dir's processes (not a reused pid)."""
    try:
        return pid_alive(pid) and str(data_dir) in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


class ClusterUp:
    """One `kvstore cluster up` subprocess, its output in a file."""

    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.output_file = data_dir.parent / f"cluster-up-{time.monotonic_ns()}.out"
        self.process = launch(cluster_up_command(data_dir, args), self.output_file)
        self.document: dict[str, Any] | None = None

    def output(self) -> str:
        return self.output_file.read_text()

    def wait_up(self) -> dict[str, Any]:
        cluster_json = self.data_dir / "cluster.json"

        def published() -> bool:
            assert self.process.exit_code() is None, f"cluster up exited:\n{self.output()}"
            return cluster_json.exists()

        wait_for(published, START_SECONDS + 5, "cluster.json")
        self.document = json.loads(cluster_json.read_text())
        return self.document

    def pid(self, process_id: str) -> int:
        assert self.document is not None
        return next(p["pid"] for p in self.document["processes"] if p["id"] == process_id)

    def address(self, process_id: str) -> str:
        assert self.document is not None
        return next(p["address"] for p in self.document["processes"] if p["id"] == process_id)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(STOP_SECONDS)

    def clean_up(self) -> None:
        self.process.stop(STOP_SECONDS)
        for entry in (self.document or {}).get("processes", []):
            if runs_from(entry["pid"], self.data_dir):
                os.kill(entry["pid"], signal.SIGKILL)


@pytest.fixture
def clusters() -> Iterator[Callable[..., ClusterUp]]:
    started: list[ClusterUp] = []

    def _up(data_dir: Path, *args: str) -> ClusterUp:
        cluster = ClusterUp(data_dir, list(args))
        started.append(cluster)
        return cluster

    yield _up
    for cluster in started:
        cluster.clean_up()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvstore", *args], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.process
@pytest.mark.timeout(60)
def test_cluster_up_serves_publishes_its_processes_and_stops_on_sigint(
        tmp_path: Path, clusters: Callable[..., ClusterUp]) -> None:
    data_dir, base = tmp_path / "data", free_base_port()
    cluster = clusters(data_dir, "--nodes", "3", "--coordinators", "1", "--base-port", str(base))
    document = cluster.wait_up()

    assert set(document) == {"processes", "replicas", "partitions", "mode"}
    assert (document["replicas"], document["partitions"], document["mode"]) == (3, 64, "leaderless")
    assert document["processes"] == [
        {"role": "node", "id": f"n{i}", "address": f"127.0.0.1:{base + i}",
         "metrics": f"127.0.0.1:{base + 2000 + i}", "pid": cluster.pid(f"n{i}"),
         "data_dir": str(data_dir.resolve() / f"n{i}")} for i in (1, 2, 3)
    ] + [{"role": "coordinator", "id": "c1", "address": f"127.0.0.1:{base + 101}",
          "metrics": f"127.0.0.1:{base + 2101}", "pid": cluster.pid("c1")}]
    pids = [p["pid"] for p in document["processes"]]
    assert all(runs_from(pid, data_dir) for pid in pids)

    with kvclient.Client([cluster.address("c1")], timeout=10) as client:
        client.put(b"greeting", b"hello", w="all")
    with kvclient.Client([cluster.address("n2")], timeout=10) as client:
        assert client.get(b"greeting").value == b"hello"

    rows = collect(*read_cluster(data_dir))
    assert [(r.process_id, r.alive, r.health) for r in rows] == [
        ("n1", True, "SERVING"), ("n2", True, "SERVING"), ("n3", True, "SERVING"),
        ("c1", True, "SERVING")]
    nodes = [r for r in rows if r.role == "node"]
    assert sum(r.ownership.primary for r in nodes) == 64  # type: ignore[union-attr]
    assert all(r.ownership.replicated == 64 for r in nodes)  # type: ignore[union-attr]
    assert all(r.keys == 1 and r.db_bytes for r in nodes)  # w=all: every replica has it
    status = run_cli("cluster", "status", "--data-dir", str(data_dir))
    assert status.returncode == 0, status.stderr
    for process_id in ("n1", "n2", "n3", "c1"):
        line = next(line for line in status.stdout.splitlines() if f"│ {process_id} " in line)
        assert "│ SERVING " in line

    assert cluster.interrupt() == 0
    assert not any(pid_alive(pid) for pid in pids)
    assert not (data_dir / "cluster.json").exists()
    assert "stopped" in cluster.output()


@pytest.mark.process
@pytest.mark.timeout(60)
def test_starting_again_on_the_same_data_dir_brings_back_the_cluster_and_its_data(
        tmp_path: Path, clusters: Callable[..., ClusterUp]) -> None:
    data_dir = tmp_path / "data"
    first = clusters(data_dir, "--base-port", str(free_base_port()))
    before = first.wait_up()
    with kvclient.Client([first.address("c1")], timeout=10) as client:
        client.put(b"kept", b"across restarts")
    assert first.interrupt() == 0

    # No layout flags: the saved cluster, ports included. Node settings may change.
    second = clusters(data_dir, "--node-setting", "tombstone_grace_seconds=7",
                      "--node-setting", "map_size=256MiB")
    after = second.wait_up()
    config = tomllib.loads((data_dir / "cluster.toml").read_text())
    assert config["node"] == {"tombstone_grace_seconds": 7, "map_size": "256MiB"}
    assert len(config["cluster"]["members"]) == 3
    assert [(p["id"], p["address"]) for p in after["processes"]] == [
        (p["id"], p["address"]) for p in before["processes"]]
    with kvclient.Client([second.address("c1")], timeout=10) as client:
        assert client.get(b"kept", r="all").value == b"across restarts"
    wait_for(lambda: "Restarted the cluster saved in" in second.output(), 10, "the banner")
    assert second.interrupt() == 0


@pytest.mark.process
@pytest.mark.timeout(60)
def test_a_killed_node_is_reported_and_the_other_processes_keep_serving(
        tmp_path: Path, clusters: Callable[..., ClusterUp]) -> None:
    data_dir = tmp_path / "data"
    cluster = clusters(data_dir, "--base-port", str(free_base_port()))
    cluster.wait_up()
    victim = cluster.pid("n2")
    os.kill(victim, signal.SIGKILL)

    report = f"node n2 (pid {victim}) was killed by SIGKILL; it is not restarted"
    wait_for(lambda: report in cluster.output(), 10, "the report of n2's death")
    assert cluster.output().count(report) == 1
    assert "To start it again by hand: " in cluster.output()
    assert cluster.process.exit_code() is None
    for process_id in ("n1", "n3", "c1"):
        assert is_serving(cluster.address(process_id), timeout=5)
    with kvclient.Client([cluster.address("c1")], timeout=10) as client:
        client.put(b"after the crash", b"still written", w=2)
    rows = {r.process_id: r for r in collect(*read_cluster(data_dir))}
    assert (rows["n2"].alive, rows["n2"].health, rows["n2"].keys) == (False, "unreachable", None)
    # Within seconds every live process's failure detector holds n2 down.
    wait_for(lambda: set({r.process_id: r for r in collect(*read_cluster(data_dir))}[
        "n2"].seen_down_by) == {"n1", "n3", "c1"}, 15, "n2 seen down by the others")
    status = subprocess.run([sys.executable, "-m", "kvstore", "cluster", "status",
                             "--data-dir", str(data_dir)], capture_output=True, text=True,
                            timeout=30)
    assert "n1, n3, c1" in status.stdout

    assert cluster.interrupt() == 0
    assert cluster.output().count(report) == 1  # reported once, not again at the stop


@pytest.mark.process
@pytest.mark.timeout(60)
def test_a_port_in_use_fails_the_start_names_the_process_and_stops_the_others(
        tmp_path: Path, clusters: Callable[..., ClusterUp]) -> None:
    data_dir, base = tmp_path / "data", free_base_port()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", base + 2))
        squatter.listen()
        cluster = clusters(data_dir, "--base-port", str(base))
        assert cluster.process.wait(START_SECONDS + 10) == 1

    output = cluster.output()
    assert "node n2 (pid" in output and f"127.0.0.1:{base + 2}" in output
    assert not (data_dir / "cluster.json").exists()
    assert not (data_dir / "cluster-layout.json").exists()  # nothing saved: other flags may follow
    assert not [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if runs_from(pid, data_dir)]


@pytest.mark.process
@pytest.mark.timeout(30)
def test_a_flag_that_disagrees_with_the_saved_cluster_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    saved = resolve(Requested(base_port=free_base_port()), None, data_dir)
    write_config(saved, data_dir)  # what a first successful start leaves
    save_layout(saved, data_dir)

    result = CliRunner().invoke(main, ["cluster", "up", "--data-dir", str(data_dir),
                                       "--nodes", "4", "--replicas", "3"])
    assert result.exit_code == 2
    assert (f"{data_dir} holds a 3-node cluster; remove {data_dir} or pass --nodes 3"
            in result.output)
    assert "replicas" not in result.output.split("Error:")[1]  # agreeing flags are fine
    assert not (data_dir / "cluster.json").exists()
    assert not (data_dir / "logs").exists()  # nothing was started


@pytest.mark.timeout(30)
@pytest.mark.parametrize("flags, message", [
    (["--nodes", "2", "--replicas", "3"], "--replicas must be 1..2 (the number of nodes), got 3"),
    (["--partitions", "48"], "must be a power of two"),
    (["--nodes", "8", "--partitions", "4"], "--partitions 4 is fewer than the 8 nodes"),
    (["--base-port", "64000"], "--base-port must be 1..63434"),
    (["--nodes", "0"], "--nodes must be 1..99, got 0"),
    (["--mode", "raft"], "mode 'raft' is not available; choose one of leaderless, leader"),
    (["--node-setting", "tombstone_grace_seconds"], "--node-setting takes KEY=VALUE"),
    (["--node-setting", "no_such_setting=1"], "unknown setting(s): no_such_setting"),
    (["--node-setting", "tombstone_grace_seconds=soon"],
     "tombstone_grace_seconds must be a number, got 'soon'"),
    (["--node-setting", "listen=127.0.0.1:1"], "cluster up sets it for every node itself"),
])
def test_bad_flags_are_refused_before_anything_is_written(
        tmp_path: Path, flags: list[str], message: str) -> None:
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(main, ["cluster", "up", "--data-dir", str(data_dir), *flags])
    assert result.exit_code == 2
    assert message in result.output
    assert not data_dir.exists()


@pytest.mark.timeout(30)
def test_replicas_default_to_three_or_the_number_of_nodes() -> None:
    assert resolve(Requested(), None, Path("d")).replicas == 3
    assert resolve(Requested(nodes=2), None, Path("d")).replicas == 2
    assert resolve(Requested(nodes=5), None, Path("d")).replicas == 3


@pytest.mark.timeout(30)
def test_leader_mode_defaults_to_16_partitions_unless_asked() -> None:
    assert resolve(Requested(), None, Path("d")).partitions == 64
    assert resolve(Requested(mode="leader"), None, Path("d")).partitions == 16
    assert resolve(Requested(mode="leader", nodes=20), None, Path("d")).partitions == 32
    assert resolve(Requested(mode="leader", partitions=64), None, Path("d")).partitions == 64


@pytest.mark.timeout(30)
def test_default_ports_are_the_documented_ones() -> None:
    layout = Layout(nodes=3, coordinators=2, replicas=3, partitions=64, mode="leaderless",
                    base_port=7100, durability="sync")
    assert [(p.process_id, p.address, p.metrics) for p in layout.plans(Path("/d"))] == [
        ("n1", "127.0.0.1:7101", "127.0.0.1:9101"), ("n2", "127.0.0.1:7102", "127.0.0.1:9102"),
        ("n3", "127.0.0.1:7103", "127.0.0.1:9103"), ("c1", "127.0.0.1:7201", "127.0.0.1:9201"),
        ("c2", "127.0.0.1:7202", "127.0.0.1:9202")]


@pytest.mark.process
@pytest.mark.timeout(30)
def test_status_without_a_running_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    result = run_cli("cluster", "status", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert f"no running cluster in {tmp_path}; start one with kvstore cluster up" in result.stderr
