"""The certificates of a deployment (`kvstore certs create`): a CA, and a
certificate for each process, client and operator, in one directory that
a Kubernetes Secret or a compose volume is made from.

A *peer* (a node, or the coordinators) gets the common name
"<name>.peer.kvstore" and is valid for serving the host names and
addresses it is reached at (by default its name, as compose's service
names) and loopback; an *admin* gets "<name>.admin.kvstore"; a *client*
"<name>.client.kvstore" (any certificate of the CA that is neither is a
client). These are the names the default `peer_names` and `admin_names`
patterns match (`kvstore.security.identity`).

Owns which names each certificate carries, where each file goes, and what
is kept: an existing certificate is kept unless renewal is asked for
(then it is issued again by the same CA, e.g. to rotate it). The CA's key
is written apart from the certificates (by default `private/` in the
directory, which `kubectl create secret --from-file=DIR` leaves out), and
every key is readable by its owner only.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kvstore.security.certificates import (LOOPBACK_ADDRESSES, LOOPBACK_NAMES, Authority,
                                           write_issued, write_private, write_public)

PEER, CLIENT, ADMIN = "peer", "client", "admin"
_DOMAINS = {PEER: "peer.kvstore", CLIENT: "client.kvstore", ADMIN: "admin.kvstore"}
# A file stem and the first label of a common name (at most 64 characters).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,49}")
_HOST = re.compile(r"(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                   r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class CertificateRequestError(ValueError):
    """A requested name or host cannot go in a certificate; the message says why."""


@dataclass(frozen=True)
class Request:
    """One certificate to have: `name` (its files are NAME.pem and
    NAME-key.pem), its `kind` (PEER, CLIENT or ADMIN) and, for a peer, the
    DNS names and IP addresses it serves beside loopback."""

    name: str
    kind: str
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _DOMAINS:
            raise CertificateRequestError(f"unknown kind {self.kind!r}")
        if not _NAME.fullmatch(self.name):
            raise CertificateRequestError(
                f"{self.name!r} cannot name a certificate: use 1 to 50 letters, digits, "
                "'-' or '_', starting with a letter or digit")
        if self.name == "ca":
            raise CertificateRequestError("'ca' is the CA's own file (ca.pem): pick another name")
        for host in self.hosts:
            if not _is_ip(host) and not _HOST.fullmatch(host):
                raise CertificateRequestError(
                    f"{host!r} (of {self.name}) is neither a DNS name nor an IP address")

    @property
    def common_name(self) -> str:
        return f"{self.name}.{_DOMAINS[self.kind]}"

    @property
    def dns_names(self) -> tuple[str, ...]:
        names = [h for h in self.hosts if not _is_ip(h)] + list(LOOPBACK_NAMES)
        return tuple(dict.fromkeys(names))

    @property
    def ip_addresses(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([h for h in self.hosts if _is_ip(h)]
                                   + list(LOOPBACK_ADDRESSES)))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def peer_request(text: str) -> Request:
    """A peer from "NAME" (serving NAME, as a compose service is reached)
    or "NAME=HOST,HOST,..." (serving those hosts instead)."""
    name, sep, hosts = text.partition("=")
    if not sep:
        return Request(name, PEER, (name,))
    listed = tuple(h.strip() for h in hosts.split(",") if h.strip())
    if not listed:
        raise CertificateRequestError(f"{text!r}: give the host names after '=', "
                                      "separated by commas")
    return Request(name, PEER, listed)


@dataclass(frozen=True)
class Outcome:
    """What became of one file: "created", "renewed" or "kept"."""

    path: Path
    what: str


def load_or_create_authority(ca_cert: Path, ca_key: Path,
                             name: str = "kvstore CA") -> tuple[Authority, Outcome]:
    """The CA of these files, made (called `name` and a random suffix) when
    neither exists; CertificateRequestError when only one does, or they
    cannot be read."""
    if ca_cert.exists() != ca_key.exists():
        present, missing = (ca_cert, ca_key) if ca_cert.exists() else (ca_key, ca_cert)
        raise CertificateRequestError(
            f"{present} exists but {missing} does not: give the CA's other file (--ca-key), "
            "or move this one away to start a new CA")
    if ca_cert.exists():
        try:
            authority = Authority.load(ca_cert.read_bytes(), ca_key.read_bytes())
        except (OSError, ValueError) as exc:
            raise CertificateRequestError(f"cannot load the CA from {ca_cert} and {ca_key}: "
                                          f"{exc}") from None
        return authority, Outcome(ca_cert, "kept")
    ca_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A name of its own: a bundle of an old and a new CA (while moving to the
    # new one) must not hold two of the same name. 64 characters at most.
    authority = Authority.create(f"{name} {secrets.token_hex(4)}")
    write_private(ca_key, authority.key_pem)
    write_public(ca_cert, authority.cert_pem)
    return authority, Outcome(ca_cert, "created")


def create(directory: Path, requests: Sequence[Request], *, ca_key: Path | None = None,
           renew: bool = False, valid_days: int = 825) -> list[Outcome]:
    """DIRECTORY/ca.pem and NAME.pem, NAME-key.pem for each request, the CA
    made if missing (its key at `ca_key`, default DIRECTORY/private/ca-key.pem);
    an existing certificate is kept unless `renew`."""
    names = [r.name for r in requests]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CertificateRequestError(f"named more than once: {', '.join(repeated)}")
    if not 1 <= valid_days <= 3650:
        raise CertificateRequestError(f"the validity must be 1 to 3650 days, got {valid_days}")
    directory.mkdir(parents=True, exist_ok=True)
    authority, outcome = load_or_create_authority(
        directory / "ca.pem", ca_key or directory / "private" / "ca-key.pem")
    outcomes = [outcome]
    for request in requests:
        cert = directory / f"{request.name}.pem"
        existed = cert.exists() and (directory / f"{request.name}-key.pem").exists()
        if existed and not renew:
            outcomes.append(Outcome(cert, "kept"))
            continue
        issued = authority.issue(request.common_name, dns_names=request.dns_names,
                                 ip_addresses=request.ip_addresses,
                                 server=request.kind == PEER, valid_days=valid_days)
        # The key first: a process that reloads between the two sees a
        # mismatched pair and keeps what it had (kvstore.security.rotation).
        write_issued(directory, request.name, issued)
        outcomes.append(Outcome(cert, "renewed" if existed else "created"))
    return outcomes
