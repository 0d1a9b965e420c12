"""Client authentication by bearer token, roles, and per-client rate limits:
the token file, the token bucket, and real processes refusing what each
token may not do."""

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import kvclient
from kvclient import errors
from kvclient.pb import kv_pb2, kv_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvclient.security import Credentials
from kvstore.rpc.access import CALLER, RATE_LIMITED, AccessControl
from kvstore.rpc.channels import open_channel
from kvstore.security.identity import AccessPolicy, Identity, Role, TokenTable
from kvstore.security.rate_limit import RateLimiter
from kvstore.security.secret import SECRET_FILE, ensure_secret, read_secret
from kvstore.security.tokens import (ROLES, TokenFileError, read_token_file, tokens_by_role,
                                     write_token_file)
from tests.conftest import StartNode
from tests.test_cluster_up import ClusterUp, free_base_port


def test_a_token_file_names_each_tokens_role(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    written = write_token_file(path)
    assert set(written) == {"read", "write", "admin"} and tokens_by_role(path) == written
    assert path.stat().st_mode & 0o077 == 0
    table = read_token_file(path)
    assert table[written["read"]].roles == frozenset({Role.READ})
    assert table[written["write"]].roles == ROLES["write"]
    assert table[written["admin"]].kind == "admin"
    assert all(token not in identity.name for token, identity in table.items())


@pytest.mark.parametrize("body, error", [
    ('[[tokens]]\nname = "a"\nrole = "root"\ntoken = "0123456789abcdef"\n', "role must be"),
    ('[[tokens]]\nname = "a"\nrole = "read"\ntoken = "short"\n', "16 to 256"),
    ('[[tokens]]\nname = "a"\nrole = "read"\ntoken = "0123456789abcdef"\n'
     '[[tokens]]\nname = "a"\nrole = "write"\ntoken = "0123456789abcdeg"\n', "unique"),
    ('[[tokens]]\nname = "a"\nrole = "read"\ntoken = "0123456789abcdef"\n'
     '[[tokens]]\nname = "b"\nrole = "write"\ntoken = "0123456789abcdef"\n', "listed twice"),
    ("tokens = []\n", "entries with name, role and token"),
    ("not toml [", "not valid TOML"),
])
def test_a_bad_token_file_is_refused_without_showing_a_token(tmp_path: Path, body: str,
                                                             error: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(body)
    path.chmod(0o600)
    with pytest.raises(TokenFileError, match=error) as caught:
        read_token_file(path)
    assert "0123456789abcde" not in str(caught.value)


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    write_token_file(path)
    path.chmod(0o644)
    with pytest.raises(TokenFileError, match="readable by others"):
        read_token_file(path)


def test_the_token_bucket_allows_its_burst_then_says_how_long_to_wait() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("a", 0.0) for _ in range(3)] == [None, None, None]
    assert limiter.take("a", 0.0) == pytest.approx(0.5)
    assert limiter.take("b", 0.0) is None  # each caller its own bucket
    assert limiter.take("a", 0.5) is None  # half a second refills one
    assert limiter.take("a", 0.5) == pytest.approx(0.5)
    assert limiter.take("a", 100.0) is None  # never more than the burst
    assert [limiter.take("a", 100.0) for _ in range(3)][-1] is not None


def test_a_read_only_session_may_read_but_not_write() -> None:
    reader = Identity("token 'r' (read)", frozenset({Role.READ}))
    refused: list[str] = []
    access = AccessControl(AccessPolicy(TokenTable()), certificates=False,
                           on_refused=refused.append, limiter=RateLimiter(1.0, 1))
    CALLER.set(reader)
    assert access.admit_operation("get") is None
    denied = access.admit_operation("put")
    assert denied is not None and denied.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "write role" in denied.message and "token 'r' (read)" in denied.message
    limited = access.admit_operation("get")  # the bucket of one is spent
    assert limited is not None and limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert refused == ["not_permitted", "rate_limited"]


@pytest.fixture
def guarded(start: StartNode, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], int]]:
    """A node with a token file and a rate limit of 20 calls a second (burst 20)."""
    tokens = write_token_file(tmp_path / "tokens.toml")
    node = start(extra=["--token-file", str(tmp_path / "tokens.toml"),
                        "--cluster-secret-file", str(ensure_secret(tmp_path)),
                        "--rate-limit-per-second", "20", "--rate-limit-burst", "20"])
    yield node.address, tokens, node.metrics_port


@pytest.mark.timeout(120)
def test_tokens_authenticate_and_their_roles_decide(
        guarded: tuple[str, dict[str, str], int], tmp_path: Path) -> None:
    address, tokens, metrics_port = guarded
    for token, code in ((None, "Unauthenticated"), ("wrong-token-123456", "Unauthenticated")):
        with kvclient.Client([address], token=token, max_attempts=1) as client:
            with pytest.raises(errors.Unauthenticated) as caught:
                client.get(b"k")
        assert type(caught.value).__name__ == code
    assert "Bearer" in caught.value.details or "token" in caught.value.details
    with kvclient.Client([address], token=tokens["write"]) as client:
        client.put(b"k", b"v")
    for stream in (True, False):  # over the Session stream and as unary calls
        with kvclient.Client([address], token=tokens["read"], stream=stream,
                             max_attempts=1) as client:
            assert client.get(b"k").value == b"v"
            with pytest.raises(errors.PermissionDenied) as denied:
                client.put(b"k", b"other")
            assert "write role" in denied.value.details
    with open_channel(address, credentials=Credentials(token=tokens["read"])) as channel:
        with pytest.raises(grpc.RpcError) as internal:
            replica_pb2_grpc.ReplicaStub(channel).Batch(replica_pb2.ReplicaBatchRequest(
                ops=[replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing())]), timeout=5)
        assert internal.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    with open_channel(address, credentials=Credentials(token=tokens["admin"])) as channel:
        replica_pb2_grpc.ReplicaStub(channel).Batch(replica_pb2.ReplicaBatchRequest(
            ops=[replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing())]), timeout=5)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                     timeout=5).read().decode()
    assert not any(token in metrics for token in tokens.values())
    # At least the wrong token's get (the client may have asked for the topology too).
    line = next(l for l in metrics.splitlines()
                if l.startswith('kvstore_auth_refusals_total{reason="bad_token"}'))
    assert float(line.split()[1]) >= 1
    assert not any(token in log.read_text() for log in tmp_path.glob("*.log")
                   for token in tokens.values())


@pytest.mark.timeout(120)
def test_a_client_over_its_rate_limit_gets_resource_exhausted_with_retry_info(
        guarded: tuple[str, dict[str, str], int]) -> None:
    address, tokens, metrics_port = guarded
    for stream in (True, False):
        with kvclient.Client([address], token=tokens["write"], stream=stream,
                             max_attempts=1) as client:
            with pytest.raises(errors.ResourceExhausted) as caught:
                for _ in range(200):  # 20 a second; these come far faster
                    client.get(b"k")
            assert caught.value.reason == RATE_LIMITED
            assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 1
    # Another client identity has a bucket of its own.
    with open_channel(address, credentials=Credentials(token=tokens["read"])) as channel:
        kv_pb2_grpc.KVStub(channel).Get(kv_pb2.GetRequest(key=b"k"), timeout=5)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                     timeout=5).read().decode()
    line = next(l for l in metrics.splitlines()
                if l.startswith('kvstore_auth_refusals_total{reason="rate_limited"}'))
    assert float(line.split()[1]) >= 2


@pytest.mark.process
@pytest.mark.timeout(180)
def test_cluster_up_auth_tokens_lists_a_token_of_each_role(tmp_path: Path) -> None:
    up = ClusterUp(tmp_path / "data", ["--nodes", "3", "--coordinators", "1", "--auth-tokens",
                                       "--base-port", str(free_base_port())])
    try:
        document = up.wait_up()
        tokens = document["tokens"]
        assert set(tokens) == {"read", "write", "admin"}
        assert (tmp_path / "data" / "cluster.json").stat().st_mode & 0o077 == 0
        with kvclient.Client([up.address("c1")], token=tokens["write"], timeout=20) as client:
            client.put(b"t", b"all", w="all")  # replication: the peers' secret, not a token
            assert client.get(b"t", r="all").value == b"all"

        def kvstore(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "kvstore", *args], cwd=tmp_path,
                                  capture_output=True, text=True, timeout=60)

        stray = kvstore("get", "t", "-a", up.address("c1"), "--data-dir", str(tmp_path / "x"))
        assert stray.returncode == 2 and "UNAUTHENTICATED" in stray.stderr
        found = kvstore("get", "t", "-a", up.address("c1"), "--data-dir", str(tmp_path / "data"))
        assert found.stdout == "all\n", found.stderr
        status = kvstore("cluster", "status", "--data-dir", str(tmp_path / "data"))
        assert status.returncode == 0
        remote = kvstore("status", "-o", "json", "-a", up.address("n1"),
                         "--data-dir", str(tmp_path / "data"))
        assert remote.returncode == 0, remote.stderr
        # No secret (a token, or the peers' cluster secret) in anything the
        # cluster shows: cluster up's output, status, every log and every
        # process's metrics.
        secrets = [*tokens.values(), read_secret(tmp_path / "data" / SECRET_FILE)]
        shown = [up.output(), status.stdout, status.stderr, remote.stdout, remote.stderr]
        shown += [log.read_text() for log in (tmp_path / "data" / "logs").glob("*.log")]
        shown += [urllib.request.urlopen(f"http://{p['metrics']}/metrics", timeout=5)
                  .read().decode() for p in document["processes"]]
        assert len(shown) >= 5 + 4 + 4
        assert not [secret for secret in secrets for text in shown if secret in text]
        assert json.loads((tmp_path / "data" / "cluster-layout.json").read_text())["auth_tokens"]
    finally:
        up.clean_up()
