"""The operator commands over the network: `kvstore status`, `ring`,
`endpoints`, `health`, `admin repair`, `get --json/--hex`, `--version` and
`completion`, against a cluster `cluster up` started elsewhere (they are run
from a directory that does not hold its data dir, unless a test says so)."""

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvclient.pb import admin_pb2
from kvstore.ops.remote import (DEFAULT_ADDRESS, RemoteError, endpoints, resolve_address,
                                seen_down_by)
from kvstore.placement.ring import partition_of
from tests.test_cluster_up import ClusterUp, free_base_port, wait_for

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUp]:
    root = tmp_path_factory.mktemp("operator")
    up = ClusterUp(root / "data", ["--nodes", "3", "--coordinators", "1",
                                   "--base-port", str(free_base_port())])
    try:
        up.wait_up()
        yield up
    finally:
        up.clean_up()


# Generous: a loaded machine can stall a process for seconds, and these tests
# are about what the commands say, not how fast.
PATIENT = ("--timeout", "15")


def kvstore(*args: str, cwd: Path, env: dict[str, str] | None = None,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if k != "KVSTORE_ADDRESS"}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "client")])
    return subprocess.run([sys.executable, "-m", "kvstore", *args], cwd=cwd,
                          env={**environment, **(env or {})}, capture_output=True,
                          input=stdin, timeout=60)


def as_json(run: subprocess.CompletedProcess[bytes]) -> Any:
    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
    return json.loads(run.stdout)


def node_addresses(cluster: ClusterUp) -> dict[str, str]:
    assert cluster.document is not None
    return {p["id"]: p["address"] for p in cluster.document["processes"] if p["role"] == "node"}


# -- pure parts ---------------------------------------------------------------------


def test_the_address_comes_from_the_flag_the_environment_the_local_cluster_or_the_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVSTORE_ADDRESS", raising=False)
    assert resolve_address(None, tmp_path) == DEFAULT_ADDRESS
    (tmp_path / "cluster.json").write_text(json.dumps({"processes": [
        {"role": "node", "id": "n1", "address": "127.0.0.1:1"},
        {"role": "coordinator", "id": "c1", "address": "127.0.0.1:2"}]}))
    assert resolve_address(None, tmp_path) == "127.0.0.1:2"
    monkeypatch.setenv("KVSTORE_ADDRESS", "127.0.0.1:3")
    assert resolve_address(None, tmp_path) == "127.0.0.1:3"
    assert resolve_address("127.0.0.1:4", tmp_path) == "127.0.0.1:4"


def status(process_id: str, *down: str) -> admin_pb2.StatusResponse:
    members = [admin_pb2.MemberStatus(id=n, address=f"127.0.0.1:{i}", up=n not in down)
               for i, n in enumerate(("n1", "n2", "n3"), 1)]
    ring = [admin_pb2.PartitionReplicas(partition=p, replicas=["n1", "n2", "n3"][p:] +
                                        ["n1", "n2", "n3"][:p]) for p in range(2)]
    return admin_pb2.StatusResponse(id=process_id, role="node", partitions=2, replicas=3,
                                    members=members, ring=ring)


def test_a_node_is_seen_down_by_each_process_whose_detector_says_so() -> None:
    answers = {"n1": status("n1", "n3"), "n2": status("n2", "n3"),
               "n3": RemoteError("n3 did not answer")}
    assert seen_down_by(answers) == {"n3": ["n1", "n2"]}  # type: ignore[arg-type]


def test_endpoints_are_the_ring_entry_of_the_keys_partition() -> None:
    found = endpoints(status("n1", "n2"), b"greeting")
    partition = partition_of(b"greeting", 2)
    assert found["partition"] == partition
    assert [r["id"] for r in found["replicas"]] == list(status("n1").ring[partition].replicas)
    assert {r["id"]: r["up"] for r in found["replicas"]}["n2"] is False


# -- against a running cluster (process tests) ---------------------------------------


@pytest.mark.process
@pytest.mark.timeout(120)
def test_status_ring_and_endpoints_answer_from_any_member(cluster: ClusterUp,
                                                          tmp_path: Path) -> None:
    nodes = node_addresses(cluster)
    coordinator = cluster.address("c1")
    document = as_json(kvstore("status", "--address", coordinator, "-o", "json", *PATIENT,
                               cwd=tmp_path))
    assert document["asked"]["id"] == "c1" and document["asked"]["role"] == "coordinator"
    assert [n["id"] for n in document["nodes"]] == ["n1", "n2", "n3"]
    assert all(n["reachable"] and n["status"]["node"]["map_size_bytes"] > 0
               for n in document["nodes"])
    table = kvstore("status", "--address", nodes["n2"], *PATIENT, cwd=tmp_path)
    assert table.returncode == 0 and all(n.encode() in table.stdout for n in nodes)

    ring = as_json(kvstore("ring", "-a", nodes["n1"], "-o", "json", *PATIENT, cwd=tmp_path))
    assert len(ring["ring"]) == ring["partitions"] and ring["replicas"] == 3
    assert all(sorted(p["replicas"]) == ["n1", "n2", "n3"] for p in ring["ring"])

    found = as_json(kvstore("endpoints", "greeting", "-a", nodes["n3"], "-o", "json",
                            *PATIENT, cwd=tmp_path))
    entry = ring["ring"][found["partition"]]
    assert [r["id"] for r in found["replicas"]] == entry["replicas"]
    assert [r["address"] for r in found["replicas"]] == entry["addresses"]


@pytest.mark.process
@pytest.mark.timeout(120)
def test_the_address_defaults_to_the_environment_then_the_local_cluster(
        cluster: ClusterUp, tmp_path: Path) -> None:
    by_env = as_json(kvstore("status", "-o", "json", *PATIENT, cwd=tmp_path,
                             env={"KVSTORE_ADDRESS": node_addresses(cluster)["n1"]}))
    assert by_env["asked"]["id"] == "n1"
    # In the directory holding the cluster's data dir: its coordinator.
    local = as_json(kvstore("status", "-o", "json", *PATIENT, cwd=cluster.data_dir.parent))
    assert local["asked"]["id"] == "c1"


@pytest.mark.process
@pytest.mark.timeout(120)
def test_get_prints_binary_values_unambiguously(cluster: ClusterUp, tmp_path: Path) -> None:
    address = cluster.address("c1")
    put = kvstore("put", "blob", "-", "-a", address, cwd=tmp_path, stdin=b"\x00\xffline\n")
    assert put.returncode == 0, put.stderr
    document = as_json(kvstore("get", "blob", "--json", "-a", address, cwd=tmp_path))
    assert document["found"] is True
    assert document["siblings"] == [{"hex": "00ff6c696e650a", "text": None}]
    assert document["context"]
    hexed = kvstore("get", "blob", "--hex", "-a", address, cwd=tmp_path)
    assert hexed.stdout == b"00ff6c696e650a\n"
    absent = kvstore("get", "nothing-here", "--json", "-a", address, cwd=tmp_path)
    assert absent.returncode == 1 and json.loads(absent.stdout)["found"] is False


@pytest.mark.process
@pytest.mark.timeout(180)
def test_admin_repair_learns_the_cluster_from_a_member(cluster: ClusterUp,
                                                       tmp_path: Path) -> None:
    where = ("--address", cluster.address("c1"), "--node", "n1", "--partition", "0")
    # Without the cluster's secret (no data dir here, no --token) the tool
    # is a client, which the internal service refuses.
    stray = kvstore("admin", "repair", *where, cwd=tmp_path)
    assert stray.returncode == 2 and b"PERMISSION_DENIED" in stray.stderr
    assert b"cluster secret" in stray.stderr
    run = kvstore("admin", "repair", *where, "--data-dir", str(cluster.data_dir), cwd=tmp_path)
    assert run.returncode == 0, run.stdout.decode() + run.stderr.decode()
    assert b"n1: partition 0 (1/1)" in run.stdout and b"done:" in run.stdout
    secret = (cluster.data_dir / "cluster.secret").read_text().strip()
    with_token = kvstore("admin", "repair", *where, cwd=tmp_path,
                         env={"KVSTORE_TOKEN": secret})
    assert with_token.returncode == 0, with_token.stderr.decode()
    wrong = kvstore("admin", "repair", *where, "--token", "not-the-secret", cwd=tmp_path)
    assert wrong.returncode == 2 and b"UNAUTHENTICATED" in wrong.stderr
    assert secret.encode() not in wrong.stderr + wrong.stdout
    bad = kvstore("admin", "repair", "--address", cluster.address("c1"), "--node", "n9",
                  cwd=tmp_path)
    assert bad.returncode == 2 and b"not members of the cluster: n9" in bad.stderr


@pytest.mark.process
@pytest.mark.timeout(60)
def test_health_version_and_completion(cluster: ClusterUp, tmp_path: Path) -> None:
    healthy = as_json(kvstore("health", "-a", cluster.address("n1"), "-o", "json", *PATIENT,
                              cwd=tmp_path))
    assert healthy["status"] == "SERVING"
    nobody = kvstore("health", "-a", f"127.0.0.1:{free_base_port()}", "--timeout", "0.5",
                     cwd=tmp_path)
    assert nobody.returncode == 1 and b"unreachable" in nobody.stdout
    version = kvstore("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith(b"kvstore ")
    script = kvstore("completion", "bash", cwd=tmp_path)
    assert script.returncode == 0 and b"_KVSTORE_COMPLETE" in script.stdout


@pytest.mark.process
@pytest.mark.timeout(60)
def test_a_coordinator_has_no_snapshot_to_give(cluster: ClusterUp, tmp_path: Path) -> None:
    run = kvstore("admin", "snapshot", "-a", cluster.address("c1"), "--out",
                  str(tmp_path / "c1.snapshot"), "--data-dir", str(cluster.data_dir),
                  cwd=tmp_path)
    assert run.returncode == 2 and b"FAILED_PRECONDITION" in run.stderr
    assert b"holds no data" in run.stderr and not (tmp_path / "c1.snapshot").exists()


@pytest.mark.process
@pytest.mark.timeout(120)
def test_status_reports_a_node_that_does_not_answer(cluster: ClusterUp, tmp_path: Path) -> None:
    # Last in the module: it kills n3 for good.
    os.kill(cluster.pid("n3"), signal.SIGKILL)

    def n3_unreachable() -> Any:
        run = kvstore("status", "-a", cluster.address("c1"), "-o", "json", "--timeout", "1",
                      cwd=tmp_path)
        document = json.loads(run.stdout)
        n3 = next(n for n in document["nodes"] if n["id"] == "n3")
        return (run, n3) if not n3["reachable"] and "c1" in n3["seen_down_by"] else None

    run, n3 = wait_for(n3_unreachable, 60, "n3 reported down, by c1 among others")
    assert run.returncode == 1 and n3["error"]
