"""mTLS on every link (`kvstore cluster up --tls`), on real processes: who
gets in with which certificate, replication between the nodes over mTLS,
and the settings a process refuses to start with."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import kvclient
from kvclient import errors
from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvclient.security import TLS, Credentials
from kvstore.ops.probe import health_status
from kvstore.rpc.channels import open_channel
from kvstore.security.certificates import Authority
from kvstore.security.settings import SecuritySettingError, load_security
from tests.test_cluster_up import ClusterUp, free_base_port

REPO = Path(__file__).resolve().parent.parent


def tls_of(entry: dict[str, str]) -> TLS:
    return TLS(ca=entry["ca"], cert=entry["cert"], key=entry["key"])


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUp]:
    root = tmp_path_factory.mktemp("tls")
    up = ClusterUp(root / "data", ["--nodes", "3", "--coordinators", "1", "--tls",
                                   "--base-port", str(free_base_port())])
    try:
        up.wait_up()
        yield up
    finally:
        up.clean_up()


def _ping_replica(address: str, credentials: Credentials) -> None:
    op = replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing())
    with open_channel(address, credentials=credentials) as channel:
        replica_pb2_grpc.ReplicaStub(channel).Batch(replica_pb2.ReplicaBatchRequest(ops=[op]),
                                                    timeout=10)


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()  # type: ignore[attr-defined, no-any-return]


@pytest.mark.process
@pytest.mark.timeout(120)
def test_cluster_json_names_the_client_and_admin_certificates(secure: ClusterUp) -> None:
    document = secure.document
    assert document is not None
    for entry in ("tls", "admin_tls"):
        paths = document[entry]
        assert set(paths) == {"ca", "cert", "key"}
        assert all(Path(p).is_absolute() and Path(p).exists() for p in paths.values())
        assert Path(paths["key"]).stat().st_mode & 0o077 == 0


@pytest.mark.process
@pytest.mark.timeout(120)
def test_the_client_certificate_reads_and_writes_at_all_but_not_the_internal_service(
        secure: ClusterUp) -> None:
    document = secure.document
    assert document is not None
    client_tls = tls_of(document["tls"])
    # r=all and w=all: every replica answers, so node-to-node links carry mTLS.
    for address in (secure.address("c1"), secure.address("n2")):
        with kvclient.Client([address], tls=client_tls, timeout=20) as client:
            client.put(b"secure", address.encode(), w="all")
            assert client.get(b"secure", r="all").value == address.encode()
    code = _code(lambda: _ping_replica(secure.address("n1"), Credentials(tls=client_tls)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    _ping_replica(secure.address("n1"), Credentials(tls=tls_of(document["admin_tls"])))


@pytest.mark.process
@pytest.mark.timeout(120)
def test_callers_without_a_certificate_of_the_clusters_ca_are_refused(
        secure: ClusterUp, tmp_path: Path) -> None:
    document = secure.document
    assert document is not None
    address = secure.address("n1")
    ca = document["tls"]["ca"]
    stranger_ca = Authority.create("another CA")
    stranger = stranger_ca.issue("client.kvstore", server=False)
    callers = {
        "plaintext": {},
        "TLS without a client certificate": {"tls": TLS(ca=ca)},
        "a certificate from another CA": {"tls": TLS(ca=ca, cert=stranger.cert_pem,
                                                     key=stranger.key_pem)},
        # And the other way round: a server this client's CA did not sign.
        "a CA that did not sign the server": {"tls": TLS(ca=stranger_ca.cert_pem,
                                                         cert=document["tls"]["cert"],
                                                         key=document["tls"]["key"])},
    }
    for what, arguments in callers.items():
        with kvclient.Client([address], timeout=3, max_attempts=1, **arguments) as client:
            with pytest.raises(errors.Unavailable):
                client.put(b"k", b"v")
        assert health_status(address, 2, Credentials(**arguments)) == "unreachable", what


@pytest.mark.process
@pytest.mark.timeout(180)
def test_operator_tools_use_the_admin_certificate_and_a_client_certificate_is_refused(
        secure: ClusterUp, tmp_path: Path) -> None:
    document = secure.document
    assert document is not None

    def kvstore(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kvstore", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    where = ["--address", secure.address("n1"), "--node", "n1", "--partition", "0"]
    repaired = kvstore("admin", "repair", *where, "--data-dir", str(secure.data_dir))
    assert repaired.returncode == 0, repaired.stderr
    client = document["tls"]
    as_client = kvstore("admin", "repair", *where, "--ca", client["ca"], "--cert",
                        client["cert"], "--key", client["key"])
    assert as_client.returncode == 2 and "PERMISSION_DENIED" in as_client.stderr
    assert "client certificate 'client.kvstore'" in as_client.stderr
    status = kvstore("cluster", "status", "--data-dir", str(secure.data_dir))
    assert status.returncode == 0 and status.stdout.count("SERVING") == 4, status.stdout
    put = kvstore("put", "cli", "yes", "-a", secure.address("c1"), "--data-dir",
                  str(secure.data_dir))
    assert put.returncode == 0, put.stderr
    got = kvstore("get", "cli", "-a", secure.address("c1"), "--data-dir", str(secure.data_dir))
    assert got.stdout == "yes\n", got.stderr
    # No private key in any log or in the status output.
    for log in (secure.data_dir / "logs").glob("*.log"):
        assert "PRIVATE KEY" not in log.read_text(errors="replace")
    assert "PRIVATE KEY" not in status.stdout + status.stderr


def test_tls_settings_need_a_ca_a_certificate_and_a_key(tmp_path: Path) -> None:
    assert load_security(None, None, {}).tls is None
    with pytest.raises(SecuritySettingError, match="missing: key"):
        load_security({"ca": "ca.pem", "cert": "c.pem"}, None, {})
    with pytest.raises(SecuritySettingError, match="cannot read"):
        load_security(None, None, {"tls_ca": str(tmp_path / "none.pem"),
                                   "tls_cert": str(tmp_path / "none.pem"),
                                   "tls_key": str(tmp_path / "none.pem")})
    with pytest.raises(SecuritySettingError, match="unknown \\[tls\\] setting"):
        load_security({"certificate": "x"}, None, {})
    authority = Authority.create()
    issued = authority.issue("n1.peer.kvstore")
    for name, data in (("ca.pem", authority.cert_pem), ("n1.pem", issued.cert_pem),
                       ("n1-key.pem", issued.key_pem)):
        (tmp_path / name).write_bytes(data)
    loaded = load_security({"ca": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "n1.pem"),
                            "require_client_cert": False},
                           None, {"tls_key": str(tmp_path / "n1-key.pem")}).tls
    assert loaded is not None and not loaded.require_client_cert
    assert "n1-key" not in repr(loaded)  # the key's path is not shown either


@pytest.mark.process
@pytest.mark.timeout(60)
def test_a_node_with_unusable_tls_settings_refuses_to_start(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "kvstore", "node", "--id", "n1",
                          "--data-dir", str(tmp_path / "n1"), "--tls-ca", __file__,
                          "--tls-cert", __file__], capture_output=True, text=True,
                         timeout=30, cwd=tmp_path)
    assert run.returncode == 2 and "missing: key" in run.stderr
