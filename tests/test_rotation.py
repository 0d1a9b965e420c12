"""Certificates rotate without a restart: the files re-read on change or
SIGHUP (a half-written rotation keeps the old ones), the server presenting
the new certificate to new connections, the expiry metric following, and
peer links reconnecting with the new files while replication goes on, so
that a whole cluster moves to a new CA with no node restarted."""

import contextlib
import os
import signal
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

import kvclient
from kvclient import errors
from kvclient.security import TLS, Credentials
from kvstore.ops.probe import wait_serving
from kvstore.ops.processes import ServerProcess, launch
from kvstore.security.certificates import Authority, write_issued, write_public
from kvstore.security.rotation import CertificateFiles
from tests.test_cluster_up import ClusterUp, free_base_port, runs_from


def _files(directory: Path, authority: Authority, days: int) -> None:
    (directory / "ca.pem").write_bytes(authority.cert_pem)
    issued = authority.issue("n1.peer.kvstore", valid_days=days)
    write_issued(directory, "n1", issued)


def test_changed_files_are_reloaded_once_and_a_mismatched_pair_is_not(tmp_path: Path) -> None:
    authority = Authority.create()
    _files(tmp_path, authority, 30)
    files = CertificateFiles(tmp_path / "ca.pem", tmp_path / "n1.pem", tmp_path / "n1-key.pem",
                             require_client_cert=True)
    first = files.material
    assert not files.reload_if_changed()
    assert files.server_fetcher() is None  # nothing new for gRPC
    _files(tmp_path, authority, 60)
    assert files.reload_if_changed() and files.generation == 1
    assert files.material.expiries["cert"] > first.expiries["cert"] + 29 * 86400
    assert files.server_fetcher() is not None and files.server_fetcher() is None
    # A new key beside the old certificate (a rotation caught half way): kept as it was.
    (tmp_path / "n1-key.pem").write_bytes(authority.issue("other").key_pem)
    loaded = files.material
    assert not files.reload_if_changed() and files.material is loaded
    (tmp_path / "n1.pem").write_bytes(b"not a certificate")
    assert not files.reload_if_changed(force=True) and files.material is loaded


@contextlib.contextmanager
def tls_connection(address: str, tls: dict[str, str]) -> Iterator[ssl.SSLSocket]:
    """A new TLS connection to `address` (as gRPC's: ALPN h2), presenting
    `tls`'s certificate and checking the server against its CA."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=tls["ca"])
    context.load_cert_chain(tls["cert"], tls["key"])
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as connection:
            yield connection


def served_certificate(address: str, tls: dict[str, str]) -> x509.Certificate:
    """The certificate a new TLS connection to `address` is shown."""
    with tls_connection(address, tls) as connection:
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def expiry_metric(metrics: str, certificate: str = "cert") -> float:
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    sample = f'kvstore_tls_certificate_expiry_timestamp_seconds{{certificate="{certificate}"}} '
    return float(next(l for l in text.splitlines() if l.startswith(sample)).split()[1])


def wait_until(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        time.sleep(0.1)  # polling interval, not synchronisation


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterUp]:
    root = tmp_path_factory.mktemp("rotation")
    up = ClusterUp(root / "data", ["--nodes", "3", "--coordinators", "0", "--tls",
                                   "--base-port", str(free_base_port())])
    try:
        up.wait_up()
        yield up
    finally:
        up.clean_up()


def _rotate(up: ClusterUp, node_id: str, days: int) -> x509.Certificate:
    tls_dir = up.data_dir / "tls"
    authority = Authority.load((tls_dir / "ca.pem").read_bytes(),
                               (tls_dir / "ca-key.pem").read_bytes())
    issued = authority.issue(f"{node_id}.peer.kvstore", valid_days=days)
    write_issued(tls_dir, node_id, issued)
    return x509.load_pem_x509_certificate(issued.cert_pem)


@pytest.mark.process
@pytest.mark.timeout(180)
def test_a_rotated_certificate_is_served_without_a_restart(secure: ClusterUp) -> None:
    document = secure.document
    assert document is not None
    admin = document["admin_tls"]
    entry = {p["id"]: p for p in document["processes"]}
    before = served_certificate(entry["n1"]["address"], admin)
    # n1 on SIGHUP; n2 on its own, when it sees the files change.
    rotated = {"n1": _rotate(secure, "n1", 90), "n2": _rotate(secure, "n2", 120)}
    os.kill(entry["n1"]["pid"], signal.SIGHUP)
    for node_id, cert in rotated.items():
        address = entry[node_id]["address"]
        wait_until(lambda a=address, c=cert: served_certificate(a, admin).serial_number
                   == c.serial_number, 30, f"{node_id} serves its new certificate")
        assert expiry_metric(entry[node_id]["metrics"]) == pytest.approx(
            cert.not_valid_after_utc.timestamp())
    assert before.serial_number != rotated["n1"].serial_number
    os.kill(entry["n1"]["pid"], 0)  # the same process: not restarted
    # The rotated nodes' peer links reconnected with their new certificates,
    # and replication carries on at w=all and r=all.
    client_tls = TLS(**document["tls"])
    for key, address in ((b"after-n1", entry["n1"]["address"]),
                         (b"after-n2", entry["n2"]["address"])):
        with kvclient.Client([address], tls=client_tls, timeout=20) as client:
            client.put(key, b"rotated", w="all")
            assert client.get(key, r="all").value == b"rotated"
    log = (secure.data_dir / "logs" / "n1.log").read_text()
    assert "reloaded the TLS certificate files" in log and "PRIVATE KEY" not in log


# -- the peer links: moving every node to a new CA ----------------------------------------


def certificate_refused(address: str, tls: dict[str, str]) -> bool:
    """Whether `address` refuses a new connection presenting `tls`'s
    certificate. With TLS 1.3 the server checks the client's certificate
    after the client's side of the handshake is done, so it says so by
    alerting instead of sending its HTTP/2 settings, the first thing a
    gRPC server writes."""
    try:
        with tls_connection(address, tls) as connection:
            return connection.recv(1) == b""
    except (ssl.SSLError, ConnectionError):
        return True


@pytest.mark.process
@pytest.mark.timeout(240)
def test_peer_links_present_rotated_certificates_through_a_move_to_a_new_ca(
        tmp_path: Path) -> None:
    """Every node's certificate and CA replaced, in steps, by a new CA's,
    without a restart: then a peer that trusts only the new CA must accept
    the links the others open to it. n2 is restarted at the end so that
    n1's and n3's links to it must open new connections: a link still on
    the credentials it started with (the old CA's certificate, trusting the
    old CA only) would fail the handshake, and writes at w=all with it."""
    up = ClusterUp(tmp_path / "data", ["--nodes", "3", "--coordinators", "0", "--tls",
                                       "--base-port", str(free_base_port(3, 0))])
    restarted: list[ServerProcess] = []
    try:
        document = up.wait_up()
        entry = {p["id"]: p for p in document["processes"]}
        tls_dir = up.data_dir / "tls"
        old = Authority.load((tls_dir / "ca.pem").read_bytes(),
                             (tls_dir / "ca-key.pem").read_bytes())
        new = Authority.create("kvstore new CA", valid_days=3000)
        new_expiry = new.cert.not_valid_after_utc.timestamp()
        # The test's own client and admin of the new CA.
        client_cert, client_key = write_issued(tmp_path / "new", "client",
                                               new.issue("client.kvstore", server=False))
        admin_cert, admin_key = write_issued(tmp_path / "new", "admin",
                                             new.issue("operator.admin.kvstore", server=False))
        new_admin = {"ca": str(tls_dir / "ca.pem"), "cert": str(admin_cert),
                     "key": str(admin_key)}
        old_admin = document["admin_tls"]

        def reload_all() -> None:
            for node_id in entry:
                os.kill(entry[node_id]["pid"], signal.SIGHUP)

        # 1. Every node trusts both CAs (the new one first: the metric follows it).
        write_public(tls_dir / "ca.pem", new.cert_pem + old.cert_pem)
        reload_all()
        for node_id in entry:
            wait_until(lambda n=node_id: expiry_metric(entry[n]["metrics"], "ca") == new_expiry,
                       30, f"{node_id} trusts the bundle")
        # 2. Every node gets a certificate of the new CA.
        rotated = {}
        for node_id in entry:
            issued = new.issue(f"{node_id}.peer.kvstore")
            write_issued(tls_dir, node_id, issued)
            rotated[node_id] = x509.load_pem_x509_certificate(issued.cert_pem)
        reload_all()
        for node_id, cert in rotated.items():
            wait_until(lambda n=node_id, c=cert: served_certificate(
                entry[n]["address"], new_admin).serial_number == c.serial_number, 30,
                f"{node_id} serves its new CA's certificate")
        assert not certificate_refused(entry["n1"]["address"], old_admin)  # not yet
        # 3. Every node trusts the new CA only: the old CA's certificates are refused.
        write_public(tls_dir / "ca.pem", new.cert_pem)
        reload_all()
        for node_id in entry:
            wait_until(lambda n=node_id: certificate_refused(entry[n]["address"], old_admin), 30,
                       f"{node_id} refuses the old CA")
        # 4. n2 restarted on its files as they are now: the others' links to it reconnect.
        command = _cmdline(entry["n2"]["pid"])
        os.kill(entry["n2"]["pid"], signal.SIGTERM)
        wait_until(lambda: not runs_from(entry["n2"]["pid"], up.data_dir), 30, "n2 stopped")
        restarted.append(launch(command, up.data_dir / "logs" / "n2.restarted.log"))
        wait_serving(entry["n2"]["address"], 30, credentials=Credentials(tls=TLS(**new_admin)))
        client_tls = TLS(ca=tls_dir / "ca.pem", cert=client_cert, key=client_key)
        for coordinator in ("n1", "n3"):  # each coordinates: its links carry the writes
            key = f"through-{coordinator}".encode()

            def written(address: str = entry[coordinator]["address"], key: bytes = key) -> bool:
                try:
                    with kvclient.Client([address], tls=client_tls, token_aware=False,
                                         timeout=5) as client:
                        client.put(key, b"new CA", w="all")
                        return client.get(key, r="all").value == b"new CA"
                except errors.KVError:
                    return False

            wait_until(written, 30, f"a write at w=all coordinated by {coordinator}")
        for node_id in ("n1", "n3"):
            os.kill(entry[node_id]["pid"], 0)  # never restarted
    finally:
        for process in restarted:
            process.stop(30)
        up.clean_up()


def _cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]
