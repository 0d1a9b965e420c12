"""What a channel presents to a kvstore process: TLS (the CA to check the
server against, and a client certificate for mTLS) and a bearer token.

`TLS` takes each of its parts as PEM bytes or as the path of a PEM file; a
path is read each time a channel opens, so a certificate rotated on disk is
used by the next connection. `Credentials` is what `kvclient.channels`
needs to open a channel; the token goes in `authorization: Bearer TOKEN`
metadata on every call (gRPC's access-token credentials over TLS, an
interceptor over plaintext, where gRPC refuses call credentials). Pure but
for reading the files; never logs or shows a token or a key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Union

from kvclient import errors

PemSource = Union[bytes, str, "os.PathLike[str]"]

AUTHORIZATION = "authorization"  # the metadata key of the bearer token


def _check_source(name: str, value: PemSource | None) -> None:
    if value is not None and not isinstance(value, (bytes, str, os.PathLike)):
        raise TypeError(f"TLS {name} must be PEM bytes or a file path, "
                        f"got {type(value).__name__}")


def read_pem(name: str, value: PemSource) -> bytes:
    """`value` itself when bytes, else the content of the file it names."""
    if isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as file:
            return file.read()
    except OSError as exc:
        raise errors.InvalidArgument(f"cannot read the TLS {name} file {value}: "
                                     f"{exc.strerror or exc}") from None


@dataclass(frozen=True)
class TLS:
    """TLS settings of a client: `ca`, the certificate(s) of the authority
    that signed the servers' certificates (None: the system's roots);
    `cert` and `key`, this client's certificate and private key, for
    servers that require one (mTLS); `server_name`, the name to check the
    server's certificate against when it is not the address dialled."""

    ca: PemSource | None = None
    cert: PemSource | None = None
    key: PemSource | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            _check_source(name, getattr(self, name))
        if (self.cert is None) != (self.key is None):
            raise errors.InvalidArgument("TLS needs both cert and key for a client "
                                         "certificate, or neither")
        if self.server_name is not None and not isinstance(self.server_name, str):
            raise TypeError("TLS server_name must be a str")

    def load(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(ca, key, cert) as PEM bytes, as gRPC's ssl credentials take them."""
        return (None if self.ca is None else read_pem("ca", self.ca),
                None if self.key is None else read_pem("key", self.key),
                None if self.cert is None else read_pem("cert", self.cert))


def check_token(token: str | None) -> str | None:
    """A token must be visible ASCII (it travels as a metadata value)."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    if not token or not all(33 <= ord(c) <= 126 for c in token):
        raise errors.InvalidArgument("token must be non-empty visible ASCII, "
                                     "without spaces")
    return token


@dataclass(frozen=True)
class Credentials:
    """What a channel presents: TLS (None: plaintext) and a bearer token."""

    tls: TLS | None = None
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tls is not None and not isinstance(self.tls, TLS):
            raise TypeError(f"tls must be a kvclient.TLS, got {type(self.tls).__name__}")
        check_token(self.token)


PLAINTEXT = Credentials()
