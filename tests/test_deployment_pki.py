"""`kvstore certs create`: a deployment's CA and certificates, named so that
the default name patterns make peers, admins and clients of them, kept
when they exist, issued again by the same CA on --renew, the CA's key kept
apart from the rest."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509

from kvstore.ops.cli import main
from kvstore.security.certificates import names
from kvstore.security.deployment_pki import (ADMIN, CLIENT, CertificateRequestError, Request,
                                             create, peer_request)
from kvstore.security.identity import NamePatterns


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _served(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (set(san.get_values_for_type(x509.DNSName)),
            {str(a) for a in san.get_values_for_type(x509.IPAddress)})


def test_each_certificate_makes_the_identity_it_is_named_for(tmp_path: Path) -> None:
    create(tmp_path, [peer_request("n1"), Request("app", CLIENT), Request("ops", ADMIN)])
    patterns = NamePatterns()
    kinds = {stem: patterns.identity(names((tmp_path / f"{stem}.pem").read_bytes())).kind
             for stem in ("n1", "app", "ops")}
    assert kinds == {"n1": "peer", "app": "client", "ops": "admin"}
    ca = _cert(tmp_path / "ca.pem")
    for stem in ("n1", "app", "ops"):
        assert _cert(tmp_path / f"{stem}.pem").issuer == ca.subject
        assert (tmp_path / f"{stem}-key.pem").stat().st_mode & 0o077 == 0


def test_a_peer_serves_its_name_or_the_hosts_given_and_loopback(tmp_path: Path) -> None:
    create(tmp_path, [peer_request("n1"),
                      peer_request("kvstore-0=kvstore-0.kvstore-peers,10.1.2.3")])
    assert _served(_cert(tmp_path / "n1.pem")) == (
        {"n1.peer.kvstore", "n1", "localhost"}, {"127.0.0.1", "::1"})
    assert _served(_cert(tmp_path / "kvstore-0.pem")) == (
        {"kvstore-0.peer.kvstore", "kvstore-0.kvstore-peers", "localhost"},
        {"10.1.2.3", "127.0.0.1", "::1"})


def test_the_ca_key_is_kept_apart_and_existing_certificates_are_kept_unless_renewed(
        tmp_path: Path) -> None:
    out = tmp_path / "tls"
    first = create(out, [peer_request("n1")])
    assert [(o.path.name, o.what) for o in first] == [("ca.pem", "created"),
                                                      ("n1.pem", "created")]
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["ca.pem", "n1-key.pem",
                                                                    "n1.pem"]
    assert (out / "private" / "ca-key.pem").stat().st_mode & 0o077 == 0
    serial = _cert(out / "n1.pem").serial_number
    again = create(out, [peer_request("n1"), peer_request("n2")])
    assert [o.what for o in again] == ["kept", "kept", "created"]
    assert _cert(out / "n1.pem").serial_number == serial
    renewed = create(out, [peer_request("n1")], renew=True, valid_days=30)
    assert [o.what for o in renewed] == ["kept", "renewed"]
    rotated = _cert(out / "n1.pem")
    assert rotated.serial_number != serial
    assert rotated.issuer == _cert(out / "ca.pem").subject  # the same CA


def test_a_ca_key_elsewhere_is_used_and_a_ca_without_its_key_is_refused(
        tmp_path: Path) -> None:
    key = tmp_path / "vault" / "ca-key.pem"
    create(tmp_path / "a", [peer_request("n1")], ca_key=key)
    assert key.exists() and not (tmp_path / "a" / "private").exists()
    with pytest.raises(CertificateRequestError, match="exists but"):
        create(tmp_path / "a", [peer_request("n2")])  # the default key path holds none


@pytest.mark.parametrize("bad, message", [
    ("../n1", "cannot name a certificate"),
    ("ca", "the CA's own file"),
    ("n1=", "give the host names"),
    ("n1=bad host", "neither a DNS name nor an IP address"),
])
def test_a_bad_name_or_host_is_refused_and_says_why(tmp_path: Path, bad: str,
                                                     message: str) -> None:
    with pytest.raises(CertificateRequestError, match=message):
        create(tmp_path, [peer_request(bad)])
    assert not (tmp_path / "ca.pem").exists()


def test_the_command_lists_what_it_wrote_and_refuses_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "tls"
    made = runner.invoke(main, ["certs", "create", "--out", str(out), "--peer", "n1",
                                "--client", "app", "--admin", "operator"])
    assert made.exit_code == 0, made.output
    assert f"created  {out / 'n1.pem'}" in made.output
    assert "keep it off the cluster" in made.output and "PRIVATE KEY" not in made.output
    for args, message in ((["--peer", "n1", "--client", "n1"], "named more than once"),
                          ([], "name at least one certificate"),
                          (["--peer", "n9", "--days", "0"], "1 to 3650 days")):
        refused = runner.invoke(main, ["certs", "create", "--out", str(out), *args])
        assert refused.exit_code == 2 and message in refused.output, refused.output
