"""`kvstore admin snapshot` and `admin restore`: a loaded node's data round
trips through a file into a new data dir, and bad input is refused."""

import subprocess
import sys
from pathlib import Path

import pytest

import kvclient
from kvstore.security.secret import ensure_secret
from tests.conftest import StartNode

KEYS = 2000

# Every test runs the kvstore command (a process).
pytestmark = pytest.mark.process


def kvstore(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvstore", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.timeout(180)
def test_a_snapshot_of_a_loaded_node_restores_every_key_into_a_new_data_dir(
        start: StartNode, tmp_path: Path) -> None:
    # A snapshot is an admin's: the tool presents the secret the node accepts.
    node = start("n1", extra=["--cluster-secret-file", str(ensure_secret(tmp_path))])
    values = {f"key-{i}".encode(): bytes([i % 251]) * (i % 300 + 1) for i in range(KEYS)}
    with kvclient.Client([node.address], timeout=30) as client:
        for start_at in range(0, KEYS, 200):
            client.put_many({k: values[k] for k in list(values)[start_at:start_at + 200]})
        client.delete(b"key-7")
    out = tmp_path / "n1.snapshot"
    stray = kvstore("admin", "snapshot", "--address", node.address, "--out", str(out),
                    "--data-dir", str(tmp_path / "elsewhere"))
    assert stray.returncode == 2 and "PERMISSION_DENIED" in stray.stderr and not out.exists()
    taken = kvstore("admin", "snapshot", "--address", node.address, "--out", str(out),
                    "--data-dir", str(tmp_path))
    assert taken.returncode == 0, taken.stderr
    assert "n1 (" in taken.stdout and out.exists()
    assert not list(tmp_path.glob("*.partial"))
    node.stop()

    restored_dir = tmp_path / "restored"
    restored = kvstore("admin", "restore", str(out), "--data-dir", str(restored_dir))
    assert restored.returncode == 0, restored.stderr
    assert f"restored {KEYS} key(s)" in restored.stdout  # key-7 is a tombstone
    again = start("n1", data_dir=restored_dir)
    with kvclient.Client([again.address], timeout=30) as client:
        for key in (b"key-0", b"key-1999", b"key-123"):
            assert client.get(key).value == values[key]
        assert not client.get(b"key-7").found
        keys = list(values)
        found = [result.found for start_at in range(0, KEYS, 500)
                 for result in client.get_many(keys[start_at:start_at + 500])]
    assert sum(found) == KEYS - 1

    refused = kvstore("admin", "restore", str(out), "--data-dir", str(restored_dir))
    assert refused.returncode == 2 and "already holds a database" in refused.stderr


def test_restore_refuses_a_file_that_is_not_a_node_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database" * 100)
    run = kvstore("admin", "restore", str(junk), "--data-dir", str(tmp_path / "d"))
    assert run.returncode == 2 and "is not an LMDB database" in run.stderr
    assert not (tmp_path / "d" / "data.mdb").exists()


@pytest.mark.timeout(60)
def test_a_snapshot_from_a_process_that_is_not_there_leaves_no_file(tmp_path: Path) -> None:
    from kvstore.ops.ports import free_port

    out = tmp_path / "none.snapshot"
    run = kvstore("admin", "snapshot", "--address", f"127.0.0.1:{free_port()}",
                  "--out", str(out), "--timeout", "2")
    assert run.returncode == 2 and "UNAVAILABLE" in run.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_a_leader_mode_restore_asks_every_other_member_and_refuses_what_is_unsafe() -> None:
    from kvclient.pb import admin_pb2
    from kvstore.ops.backup import BackupError, ClusterTerms, terms_from
    from kvstore.ops.remote import RemoteError

    def node(node_id: str, *terms: int, fenced: bool = False) -> admin_pb2.StatusResponse:
        return admin_pb2.StatusResponse(id=node_id, role="node", mode="leader", raft=[
            admin_pb2.RaftGroupStatus(partition=p, term=t, fenced=fenced and p == 0)
            for p, t in enumerate(terms)])

    first = node("n1", 4, 7)
    first.ring.extend([admin_pb2.PartitionReplicas(partition=0, replicas=["n1", "n2", "n3"]),
                       admin_pb2.PartitionReplicas(partition=1, replicas=["n3", "n1", "n4"]),
                       admin_pb2.PartitionReplicas(partition=2, replicas=["n2", "n3", "n1"])])
    stopped = RemoteError("n2: UNAVAILABLE")
    answers = {"n1": first, "n2": stopped, "n3": node("n3", 9, 3), "n4": node("n4", 2)}
    assert terms_from(first, answers, "n2") == ClusterTerms(9, (0, 2))
    with pytest.raises(BackupError, match="n2 is running"):
        terms_from(first, {**answers, "n2": node("n2", 1)}, "n2")
    with pytest.raises(BackupError, match="every other member must answer.*n4"):
        terms_from(first, {**answers, "n4": RemoteError("n4: DEADLINE_EXCEEDED")}, "n2")
    with pytest.raises(BackupError, match="has not caught up yet.*n3 \\(partitions 0\\)"):
        terms_from(first, {**answers, "n3": node("n3", 9, 3, fenced=True)}, "n2")
