"""Certificates rotate without a restart: the files re-read on change or
SIGHUP (a half-written rotation keeps the old ones), the server presenting
the new certificate to new connections, the expiry metric following, and
peer links reconnecting with the new files while replication goes on."""

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
from kvclient.security import TLS
from kvstore.security.certificates import Authority, write_issued
from kvstore.security.rotation import CertificateFiles
from tests.test_cluster_up import ClusterUp, free_base_port


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


def served_certificate(address: str, tls: dict[str, str]) -> x509.Certificate:
    """The certificate a new TLS connection to `address` is shown."""
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=tls["ca"])
    context.load_cert_chain(tls["cert"], tls["key"])
    context.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=host) as connection:
            der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def expiry_metric(metrics: str) -> float:
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    sample = 'kvstore_tls_certificate_expiry_timestamp_seconds{certificate="cert"} '
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
