"""Secure defaults: plaintext beyond loopback only when asked for in plain
sight (--insecure), and then, for a process with peers, only with the
cluster secret; --insecure never making an unidentified caller more than a
client; reflection that can be turned off."""

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import kvclient
from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvstore.rpc.channels import open_channel
from kvstore.security.identity import Identity, Refusal
from kvstore.security.settings import Security, exposure_refusal, is_loopback
from kvstore.server.config import ConfigError, load_coordinator_config, load_node_config
from tests.conftest import StartNode


def test_only_loopback_addresses_count_as_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "kvstore-0.kvstore"))


def _secret(tmp_path: Path) -> Path:
    secret = tmp_path / "cluster.secret"
    secret.write_text("x" * 40)
    secret.chmod(0o600)
    return secret


def test_plaintext_beyond_loopback_needs_insecure_or_tls() -> None:
    refusal = exposure_refusal("0.0.0.0", Security(), has_peers=False)
    assert refusal is not None and "--insecure" in refusal and "--tls-cert" in refusal
    assert exposure_refusal("127.0.0.1", Security(), has_peers=True) is None
    assert exposure_refusal("0.0.0.0", Security(insecure=True), has_peers=False) is None
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_node_config(None, {"node_id": "n1", "listen": "0.0.0.0:7101"})
    assert load_node_config(None, {"node_id": "n1", "listen": "0.0.0.0:7101",
                                   "insecure": True}).security.insecure


def test_insecure_with_peers_needs_the_cluster_secret(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[cluster]\nreplicas = 2\nmembers = [{id = "n1", address = "n1:7101"},'
                      ' {id = "n2", address = "n2:7101"}]\n')
    insecure = {"listen": "0.0.0.0:7101", "insecure": True}
    with pytest.raises(ConfigError, match="without a cluster secret.*--cluster-secret-file"):
        load_node_config(config, {"node_id": "n1", **insecure})
    with pytest.raises(ConfigError, match="without a cluster secret"):
        load_coordinator_config(config, {"coordinator_id": "c1", **insecure})
    secret = str(_secret(tmp_path))
    assert load_node_config(config, {"node_id": "n1", **insecure,
                                     "cluster_secret_file": secret}).security.insecure
    assert load_coordinator_config(config, {"coordinator_id": "c1", **insecure,
                                            "cluster_secret_file": secret}).security.insecure


def test_insecure_in_the_config_file_counts_and_the_flag_wins(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[coordinator]\ninsecure = true\nlisten = "0.0.0.0:7201"\n'
                      f'[auth]\ncluster_secret_file = "{_secret(tmp_path)}"\n'
                      '[cluster]\nreplicas = 1\nmembers = [{id = "n1", address = "n1:7101"}]\n')
    assert load_coordinator_config(config, {"coordinator_id": "c1"}).security.insecure
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_coordinator_config(config, {"coordinator_id": "c1", "insecure": False})


def test_insecure_never_makes_a_caller_that_presents_nothing_more_than_a_client(
        tmp_path: Path) -> None:
    for security in (Security(insecure=True), load_node_config(None, {
            "node_id": "n1", "listen": "0.0.0.0:7101", "insecure": True,
            "cluster_secret_file": str(_secret(tmp_path))}).security):
        policy = security.policy()
        assert isinstance(policy.check("/kvstore.v1.KV/Put", None, None), Identity)
        for internal in ("/kvstore.v1.Replica/Batch", "/kvstore.v1.Admin/Snapshot"):
            assert isinstance(policy.check(internal, None, None), Refusal), internal


@pytest.mark.timeout(60)
def test_an_insecure_node_without_a_secret_serves_clients_and_refuses_the_internal_service(
        start: StartNode) -> None:
    node = start(extra=["--insecure"])  # loopback: the tests listen nowhere else
    with kvclient.Client([node.address], timeout=10) as client:
        client.put(b"k", b"v")
        assert client.get(b"k").value == b"v"
    op = replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing())
    with open_channel(node.address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            replica_pb2_grpc.ReplicaStub(channel).Batch(
                replica_pb2.ReplicaBatchRequest(ops=[op]), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "cluster secret" in caught.value.details()  # type: ignore[attr-defined]


@pytest.mark.process
@pytest.mark.timeout(60)
def test_a_node_refuses_to_serve_plaintext_beyond_loopback_and_says_why(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "kvstore", "node", "--id", "n1",
                          "--listen", "0.0.0.0:7101", "--data-dir", str(tmp_path / "n1")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2
    assert "refusing to serve plaintext on 0.0.0.0" in run.stderr and "--insecure" in run.stderr
    assert not (tmp_path / "n1").exists()


@pytest.mark.timeout(60)
def test_reflection_can_be_turned_off(start: StartNode) -> None:
    node = start(extra=["--no-reflection"])
    with open_channel(node.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(reflection.ServerReflectionInfo(iter([request]), timeout=5)))
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
