"""The security settings of a node or coordinator: the `[tls]` and `[auth]`
tables of its config file and their flags (`--tls-ca`, `--tls-cert`,
`--tls-key`, `--tls-require-client-cert`, `--cluster-secret-file`,
`--token-file`, `--rate-limit-per-second`, `--rate-limit-burst`, `--insecure`),
checked once at start.

Owns their shape, defaults and validation, and building the access policy
(`kvstore.security.identity`) they describe. Reads the files they name
only to check them and to load the secret; never logs a secret or a key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvclient.security import TLS, Credentials
from kvstore.security.identity import (ADMIN_ROLES, ANONYMOUS, AccessPolicy, Identity,
                                       NamePatterns, TokenTable)
from kvstore.security.rate_limit import RateLimiter
from kvstore.security.rotation import CertificateFiles
from kvstore.security.secret import SecretError, read_secret
from kvstore.security.tokens import TokenFileError, read_token_file


class SecuritySettingError(ValueError):
    """A [tls] or [auth] setting is unusable; the message names it."""


@dataclass(frozen=True)
class TlsSettings:
    """`ca`: the authority whose certificates this process trusts (peers'
    and clients'); `cert` and `key`: its own, served to callers and shown
    to the peers it calls; `require_client_cert`: refuse a caller without a
    certificate of `ca` (mTLS); `peer_names`/`admin_names`: the certificate
    names (patterns) that make a peer or an admin."""

    ca: Path
    cert: Path
    key: Path = field(repr=False)
    require_client_cert: bool = True
    peer_names: tuple[str, ...] = NamePatterns().peer
    admin_names: tuple[str, ...] = NamePatterns().admin

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise SecuritySettingError(
                    f"[tls] {name}: cannot read {path}: {exc.strerror or exc}") from None
            if b"-----BEGIN" not in data:
                raise SecuritySettingError(f"[tls] {name}: {path} holds no PEM data")
        for name in ("peer_names", "admin_names"):
            patterns = getattr(self, name)
            if not patterns or not all(isinstance(p, str) and p for p in patterns):
                raise SecuritySettingError(f"[tls] {name} must be a non-empty list of "
                                           "name patterns, e.g. [\"*.peer.kvstore\"]")

    @property
    def names(self) -> NamePatterns:
        return NamePatterns(self.peer_names, self.admin_names)

    def files(self) -> CertificateFiles:
        """The files, loaded now, to serve with and to reload when they change."""
        try:
            return CertificateFiles(self.ca, self.cert, self.key,
                                    require_client_cert=self.require_client_cert)
        except (OSError, ValueError) as exc:
            raise SecuritySettingError(f"[tls]: cannot load the certificates: {exc}") from None

    @property
    def client_tls(self) -> TLS:
        """This process's TLS as a caller of its peers (re-read at each connection)."""
        return TLS(ca=self.ca, cert=self.cert, key=self.key)


@dataclass(frozen=True)
class AuthSettings:
    """`cluster_secret_file`: the cluster secret, which peers present and
    which makes its bearer a peer and an admin (a plaintext cluster's
    identities); `token_file`: clients' and operators' bearer tokens
    (`kvstore.security.tokens`): with it, a client must present a token or
    a certificate; `rate_limit_per_second` (0: none) and `rate_limit_burst`:
    each client identity's token bucket for KV calls and Session operations."""

    cluster_secret_file: Path | None = None
    token_file: Path | None = None
    rate_limit_per_second: float = 0.0
    rate_limit_burst: float = 0.0  # 0: the rate's one second's worth (at least 1)

    def __post_init__(self) -> None:
        if self.cluster_secret_file is not None:
            try:
                read_secret(self.cluster_secret_file)
            except SecretError as exc:
                raise SecuritySettingError(f"[auth] cluster_secret_file: {exc}") from None
        if self.token_file is not None:
            try:
                read_token_file(self.token_file)
            except TokenFileError as exc:
                raise SecuritySettingError(f"[auth] token_file: {exc}") from None
        for name in ("rate_limit_per_second", "rate_limit_burst"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 <= value <= 1_000_000):
                raise SecuritySettingError(f"[auth] {name} must be a number in [0, 1000000]")

    def rate_limiter(self) -> RateLimiter | None:
        if not self.rate_limit_per_second:
            return None
        burst = self.rate_limit_burst or max(1.0, self.rate_limit_per_second)
        return RateLimiter(self.rate_limit_per_second, max(1.0, burst))

    def secret(self) -> str | None:
        return None if self.cluster_secret_file is None else read_secret(
            self.cluster_secret_file)


@dataclass(frozen=True)
class Security:
    """A process's TLS (None: plaintext) and authentication settings;
    `insecure`: the operator accepts plaintext beyond loopback (--insecure)."""

    tls: TlsSettings | None = None
    auth: AuthSettings = AuthSettings()
    insecure: bool = False

    def policy(self) -> AccessPolicy:
        """Who is who. `insecure` changes nothing here: it lets a process
        serve plaintext beyond loopback, never lets a caller that presents
        nothing be more than a client."""
        secret = self.auth.secret()
        tokens = {} if self.auth.token_file is None else read_token_file(self.auth.token_file)
        if secret is not None:
            tokens[secret] = Identity("the cluster secret", ADMIN_ROLES)
        names = self.tls.names if self.tls is not None else NamePatterns()
        # With a token file, clients must say who they are.
        anonymous = None if self.auth.token_file is not None else ANONYMOUS
        return AccessPolicy(TokenTable(tokens), names, anonymous=anonymous)

    def peer_credentials(self) -> Credentials:
        """What this process presents when it calls its peers: its
        certificate with TLS, else the cluster secret (if any)."""
        if self.tls is not None:
            return Credentials(tls=self.tls.client_tls)
        return Credentials(token=self.auth.secret())


_TLS_FLAGS = {"tls_ca": "ca", "tls_cert": "cert", "tls_key": "key",
              "tls_require_client_cert": "require_client_cert"}
_AUTH_FLAGS = {"cluster_secret_file": "cluster_secret_file", "token_file": "token_file",
               "rate_limit_per_second": "rate_limit_per_second",
               "rate_limit_burst": "rate_limit_burst"}
FLAGS = frozenset(_TLS_FLAGS) | frozenset(_AUTH_FLAGS) | {"insecure"}


def load_security(tls_table: Mapping[str, Any] | None, auth_table: Mapping[str, Any] | None,
                  flags: Mapping[str, Any], insecure: bool = False) -> Security:
    """The [tls] and [auth] tables, flags winning. TLS is on when a CA, a
    certificate or a key is given anywhere; then all three are needed.
    `insecure`: the process's own table said so (the --insecure flag wins)."""
    tls_values = dict(tls_table or {})
    tls_values.update({_TLS_FLAGS[k]: v for k, v in flags.items()
                       if k in _TLS_FLAGS and v is not None})
    auth_values = dict(auth_table or {})
    auth_values.update({_AUTH_FLAGS[k]: v for k, v in flags.items()
                        if k in _AUTH_FLAGS and v is not None})
    if flags.get("insecure") is not None:
        insecure = flags["insecure"]
    if not isinstance(insecure, bool):
        raise SecuritySettingError(f"insecure must be true or false, got {insecure!r}")
    return Security(_tls(tls_values), _auth(auth_values), insecure)


def is_loopback(host: str) -> bool:
    """Whether `host` (of a listen address) reaches only this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def exposure_refusal(listen_host: str, security: Security, has_peers: bool) -> str | None:
    """Why a process must not start on `listen_host` with these settings, if
    it must not: plaintext beyond loopback needs an explicit --insecure,
    and, for a process with peers (a node of a cluster of several, a
    coordinator), the cluster secret: without it nothing tells its peers'
    calls to the internal service from anyone else's, so they would be
    refused (a caller that presents nothing is a client)."""
    if security.tls is not None or is_loopback(listen_host):
        return None
    if not security.insecure:
        return (f"refusing to serve plaintext on {listen_host}, which is not a loopback "
                "address: anyone who can reach it could read and write every key. Give it "
                "TLS (--tls-ca, --tls-cert, --tls-key) or say --insecure to accept plaintext")
    if has_peers and security.auth.cluster_secret_file is None:
        return (f"refusing to serve plaintext on {listen_host} without a cluster secret: its "
                "peers present the secret to tell their internal calls from anyone else's. "
                "Give every node and coordinator the same --cluster-secret-file, or TLS")
    return None


def _tls(values: dict[str, Any]) -> TlsSettings | None:
    _refuse_unknown("tls", values, {"ca", "cert", "key", "require_client_cert",
                                    "peer_names", "admin_names"})
    if not {"ca", "cert", "key"} & set(values):
        if values:
            raise SecuritySettingError("[tls] settings given without ca, cert and key")
        return None
    missing = [name for name in ("ca", "cert", "key") if not values.get(name)]
    if missing:
        raise SecuritySettingError(f"TLS needs ca, cert and key; missing: {', '.join(missing)} "
                                   "(--tls-ca, --tls-cert, --tls-key or the [tls] table)")
    if not isinstance(values.get("require_client_cert", True), bool):
        raise SecuritySettingError("[tls] require_client_cert must be true or false")
    for name in ("peer_names", "admin_names"):
        if name in values:
            if isinstance(values[name], str) or not isinstance(values[name], (list, tuple)):
                raise SecuritySettingError(f"[tls] {name} must be a list of name patterns")
            values[name] = tuple(values[name])
    for name in ("ca", "cert", "key"):
        values[name] = Path(values[name])
    return TlsSettings(**values)


def _auth(values: dict[str, Any]) -> AuthSettings:
    _refuse_unknown("auth", values, {"cluster_secret_file", "token_file",
                                     "rate_limit_per_second", "rate_limit_burst"})
    for name in ("cluster_secret_file", "token_file"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    return AuthSettings(**values)


def _refuse_unknown(table: str, values: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise SecuritySettingError(f"unknown [{table}] setting(s): {', '.join(unknown)}; "
                                   f"known: {', '.join(sorted(known))}")
