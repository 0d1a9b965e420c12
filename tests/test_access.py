"""Who may call what (kvstore.security.identity, kvstore.rpc.access): the
policy's decisions, and a plaintext cluster's internal service refusing a
caller without the cluster secret, on unary and stream calls alike."""

import asyncio
import contextlib
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

import kvclient
from kvclient.pb import admin_pb2, admin_pb2_grpc, replica_pb2, replica_pb2_grpc
from kvclient.security import PLAINTEXT, Credentials
from kvstore.rpc.access import bearer_token
from kvstore.rpc.channels import open_aio_channel, open_channel
from kvstore.security.identity import (ANONYMOUS, AccessPolicy, Identity, NamePatterns, Refusal,
                                       Role, TokenTable, ADMIN_ROLES, required_role)
from tests.clusters import Cluster

SECRET = "s3cret-token-for-tests"
POLICY = AccessPolicy(TokenTable({SECRET: Identity("the cluster secret", ADMIN_ROLES)}))
BATCH = "/kvstore.v1.Replica/Batch"


def test_each_method_needs_the_role_its_service_is_for() -> None:
    assert required_role(BATCH) is Role.PEER
    assert required_role("/kvstore.v1.Replica/Stream") is Role.PEER
    assert required_role("/kvstore.v1.Admin/Snapshot") is Role.ADMIN
    assert required_role("/kvstore.v1.Admin/TransferLeader") is Role.ADMIN  # leader mode
    assert required_role("/kvstore.v1.Admin/Status") is Role.READ
    assert required_role("/kvstore.v1.KV/Get") is Role.READ
    assert required_role("/kvstore.v1.KV/Session") is Role.READ
    assert required_role("/kvstore.v1.KV/Topology") is Role.READ
    assert required_role("/kvstore.v1.KV/PutMany") is Role.WRITE
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None


def test_a_caller_without_credentials_is_a_client_refused_the_internal_service() -> None:
    assert POLICY.check("/kvstore.v1.KV/Put", None, None) is ANONYMOUS
    refusal = POLICY.check(BATCH, None, None)
    assert isinstance(refusal, Refusal) and not refusal.unauthenticated
    assert refusal.reason == "not_permitted"
    assert "Replica" in refusal.message and "cluster secret" in refusal.message
    snapshot = POLICY.check("/kvstore.v1.Admin/Snapshot", None, None)
    assert isinstance(snapshot, Refusal) and "operators" in snapshot.message


def test_the_cluster_secret_makes_an_admin_and_a_wrong_token_is_unauthenticated() -> None:
    admitted = POLICY.check(BATCH, SECRET, None)
    assert isinstance(admitted, Identity) and admitted.kind == "admin"
    assert isinstance(POLICY.check("/kvstore.v1.Admin/Snapshot", SECRET, None), Identity)
    for wrong in ("s3cret-token-for-test", SECRET + "x", ""):
        refusal = POLICY.check(BATCH, wrong, None)
        assert isinstance(refusal, Refusal) and refusal.unauthenticated
        assert refusal.reason == "bad_token" and SECRET not in refusal.message
    # Health answers anyone, whatever it presents.
    assert POLICY.check("/grpc.health.v1.Health/Check", "junk", None) is ANONYMOUS


def test_certificate_names_make_peers_admins_and_clients() -> None:
    names = NamePatterns(peer=("*.peer.kvstore",), admin=("*.admin.kvstore",))
    policy = AccessPolicy(names=names)
    assert isinstance(policy.check(BATCH, None, ["n1.peer.kvstore", "localhost"]), Identity)
    assert isinstance(policy.check("/kvstore.v1.Admin/Snapshot", None,
                                   ["ops.admin.kvstore"]), Identity)
    refused = policy.check(BATCH, None, ["client.kvstore"])
    assert isinstance(refused, Refusal) and not refused.unauthenticated
    assert "client certificate 'client.kvstore'" in refused.message
    # A peer is no admin; a name must match whole.
    assert isinstance(policy.check("/kvstore.v1.Admin/Snapshot", None, ["n1.peer.kvstore"]),
                      Refusal)
    assert isinstance(policy.check(BATCH, None, ["n1.peer.kvstore.evil"]), Refusal)
    # No anonymous callers: presenting nothing is unauthenticated.
    strict = AccessPolicy(anonymous=None)
    refusal = strict.check("/kvstore.v1.KV/Get", None, None)
    assert isinstance(refusal, Refusal) and refusal.unauthenticated


def test_the_bearer_token_is_read_from_the_authorization_header() -> None:
    assert bearer_token([("user-agent", "x"), ("authorization", "Bearer abc")]) == "abc"
    assert bearer_token([("authorization", "bearer abc")]) == "abc"
    assert bearer_token([("authorization", "Basic abc")]) == "Basic abc"  # no table holds it
    assert bearer_token([("user-agent", "x")]) is None
    assert bearer_token(None) is None


def _batch(address: str, credentials: Credentials = PLAINTEXT) -> None:
    op = replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing())
    with open_channel(address, credentials=credentials) as channel:
        replica_pb2_grpc.ReplicaStub(channel).Batch(
            replica_pb2.ReplicaBatchRequest(ops=[op]), timeout=10)


async def _stream_status(address: str, credentials: Credentials) -> grpc.StatusCode:
    async with open_aio_channel(address, credentials=credentials) as channel:
        call = replica_pb2_grpc.ReplicaStub(channel).Stream(timeout=10)
        # A refusal ends the call as it opens; a message written after that
        # end would turn its status into a local INTERNAL. So first give the
        # refusal the time to come (an accepted stream may send no headers
        # before its first answer: then the wait just ends).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await call.initial_metadata()
        if call.done():
            return await call.code()
        try:
            await call.write(replica_pb2.ReplicaBatchRequest(ops=[
                replica_pb2.ReplicaOp(id=1, ping=replica_pb2.ReplicaPing())]))
            await call.done_writing()
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:  # the refusal may come before the write
            return error.code()
        return await call.code()


def _refusals(node_metrics_port: int, reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node_metrics_port}/metrics",
                                  timeout=5).read().decode()
    sample = f'kvstore_auth_refusals_total{{reason="{reason}"}} '
    return float(next(l for l in text.splitlines() if l.startswith(sample)).split()[1])


@pytest.mark.process
@pytest.mark.timeout(120)
def test_a_plaintext_clusters_internal_service_refuses_a_caller_without_the_secret(
        make_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster: Cluster = make_cluster(nodes=3, coordinators=1)
    node = cluster.nodes["n1"]
    with pytest.raises(grpc.RpcError) as stray:
        _batch(node.address)
    assert stray.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "cluster secret" in stray.value.details()  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as wrong:
        _batch(node.address, Credentials(token="guessed"))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
    # The stream peers use is checked as it opens, with and without the secret.
    assert asyncio.run(_stream_status(node.address, Credentials())) == \
        grpc.StatusCode.PERMISSION_DENIED
    assert asyncio.run(_stream_status(node.address, cluster.admin)) == grpc.StatusCode.OK
    _batch(node.address, cluster.admin)
    with open_channel(node.address) as channel:
        admin = admin_pb2_grpc.AdminStub(channel)
        with pytest.raises(grpc.RpcError) as snapshot:
            next(iter(admin.Snapshot(admin_pb2.SnapshotRequest(), timeout=10)))
        assert snapshot.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        assert admin.Status(admin_pb2.StatusRequest(), timeout=10).id == "n1"  # a client may
    assert _refusals(node.metrics_port, "not_permitted") >= 3
    assert _refusals(node.metrics_port, "bad_token") >= 1
    # A client (no secret) still reads and writes at w=all: replication
    # between the nodes carries the secret, through nodes and the coordinator.
    for address in (node.address, cluster.coordinators[0].address):
        with kvclient.Client([address], timeout=20) as client:
            client.put(b"k", address.encode(), w="all")
            assert client.get(b"k", r="all").value == address.encode()
    # The secret is in no log, no metric and no status output.
    secret = cluster.admin.token
    assert secret
    for server in [*cluster.nodes.values(), *cluster.coordinators]:
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                         timeout=5).read().decode()
        assert secret not in metrics
    for log in tmp_path.glob("*.log"):
        assert secret not in log.read_text(errors="replace")
    status = subprocess.run([sys.executable, "-m", "kvstore", "status", "-a", node.address,
                             "-o", "json", "--data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert secret not in status.stdout + status.stderr
