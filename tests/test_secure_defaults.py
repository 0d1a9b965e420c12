"""Secure defaults: plaintext beyond loopback only when asked for in plain
sight (--insecure), reflection that can be turned off, and what --insecure
without a cluster secret means."""

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kvstore.rpc.channels import open_channel
from kvstore.security.identity import Identity
from kvstore.security.settings import Security, exposure_refusal, is_loopback
from kvstore.server.config import ConfigError, load_coordinator_config, load_node_config
from tests.conftest import StartNode


def test_only_loopback_addresses_count_as_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "kvstore-0.kvstore"))


def test_plaintext_beyond_loopback_needs_insecure_or_tls() -> None:
    refusal = exposure_refusal("0.0.0.0", Security())
    assert refusal is not None and "--insecure" in refusal and "--tls-cert" in refusal
    assert exposure_refusal("127.0.0.1", Security()) is None
    assert exposure_refusal("0.0.0.0", Security(insecure=True)) is None
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_node_config(None, {"node_id": "n1", "listen": "0.0.0.0:7101"})
    assert load_node_config(None, {"node_id": "n1", "listen": "0.0.0.0:7101",
                                   "insecure": True}).security.insecure


def test_insecure_in_the_config_file_counts_and_the_flag_wins(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[coordinator]\ninsecure = true\nlisten = "0.0.0.0:7201"\n'
                      '[cluster]\nreplicas = 1\nmembers = [{id = "n1", address = "n1:7101"}]\n')
    assert load_coordinator_config(config, {"coordinator_id": "c1"}).security.insecure
    with pytest.raises(ConfigError, match="not a loopback address"):
        load_coordinator_config(config, {"coordinator_id": "c1", "insecure": False})


def test_insecure_without_a_secret_lets_every_caller_through_and_with_one_does_not(
        tmp_path: Path) -> None:
    open_policy = Security(insecure=True).policy()
    assert isinstance(open_policy.check("/kvstore.v1.Replica/Batch", None, None), Identity)
    secret = tmp_path / "cluster.secret"
    secret.write_text("x" * 40)
    secret.chmod(0o600)
    guarded = load_node_config(None, {"node_id": "n1", "listen": "0.0.0.0:7101",
                                      "insecure": True, "cluster_secret_file": str(secret)})
    assert not guarded.security.unguarded
    assert not isinstance(guarded.security.policy().check("/kvstore.v1.Replica/Batch", None,
                                                          None), Identity)


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
