"""A certificate authority and the certificates it issues, with the
`cryptography` package: what `kvstore cluster up --tls` puts under DIR/tls/,
and what the tests use to make other authorities and rotated certificates.

Owns key generation, signing and writing PEM files (keys readable by their
owner only). Never loads or checks certificates for a connection: gRPC does.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Loopback: what every local process's certificate must name, since clients
# dial 127.0.0.1 and check the server's certificate against it.
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: as strong as RSA-3072 for this purpose, and a handshake costs far less.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Authority:
    """A self-signed CA that signs the certificates of one cluster."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self._key = key

    @classmethod
    def create(cls, name: str = "kvstore local CA", valid_days: int = 3650) -> Authority:
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=valid_days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> Authority:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an EC key")
        return cls(x509.load_pem_x509_certificate(cert_pem), key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self._key)

    def issue(self, common_name: str, *, dns_names: tuple[str, ...] = LOOPBACK_NAMES,
              ip_addresses: tuple[str, ...] = LOOPBACK_ADDRESSES, server: bool = True,
              valid_days: int = 825,
              not_after: datetime.datetime | None = None) -> Issued:
        """A certificate for `common_name` (also its first DNS name), good for
        client authentication and, with `server`, for serving `dns_names`
        and `ip_addresses` too. `not_after` overrides `valid_days`."""
        key = _new_key()
        now = _now()
        names: list[x509.GeneralName] = [x509.DNSName(common_name)]
        names += [x509.DNSName(n) for n in dns_names if n != common_name]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([ExtendedKeyUsageOID.SERVER_AUTH]
                                                      if server else [])
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
                .issuer_name(self.cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(not_after or now + datetime.timedelta(days=valid_days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self._key.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only, replacing it whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def write_public(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def write_issued(directory: Path, stem: str, issued: Issued) -> tuple[Path, Path]:
    """STEM.pem and STEM-key.pem in `directory`; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    write_private(key, issued.key_pem)
    write_public(cert, issued.cert_pem)
    return cert, key


def expiry(cert_pem: bytes) -> datetime.datetime:
    """When the (first) certificate of `cert_pem` stops being valid."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def key_matches(key_pem: bytes, cert_pem: bytes) -> bool:
    """Whether `key_pem` is the private key of the certificate `cert_pem`."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = x509.load_pem_x509_certificate(cert_pem).public_key()
    as_der = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*as_der) == public.public_bytes(*as_der)


def names(cert_pem: bytes) -> list[str]:
    """The common name and DNS names a certificate carries."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    found = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found += san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    return found
