"""What the operator tools and the command-line client present to a
cluster: given flags (`--token`, `--ca`, `--cert`, `--key`, or their
environment variables) win; else what a local cluster's data dir
(`--data-dir`, default ./data) holds for its operators or clients:
cluster.json's "admin_tls" or "tls" (a `cluster up --tls` cluster), else the
cluster secret (operators of a plaintext cluster); else nothing.

Owns that choice only; never prints a token or a key.
"""

import json
from pathlib import Path
from typing import Any

from kvclient.security import TLS, Credentials
from kvstore.ops.cluster_layout import CLUSTER_JSON
from kvstore.security.secret import SecretError, secret_in


class CredentialsError(ValueError):
    """The given or found credentials cannot be used; the message says why."""


def given_tls(ca: Path | None, cert: Path | None, key: Path | None) -> TLS | None:
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise CredentialsError("--cert and --key go together (a client certificate "
                               "and its key)")
    return TLS(ca=ca, cert=cert, key=key)


def _tls_of(document: dict[str, Any], entry: str) -> TLS | None:
    paths = document.get(entry)
    if not isinstance(paths, dict):
        return None
    try:
        return TLS(ca=paths["ca"], cert=paths["cert"], key=paths["key"])
    except (KeyError, TypeError) as exc:
        raise CredentialsError(f"{CLUSTER_JSON}'s {entry!r} must have ca, cert and key "
                               f"paths ({exc})") from None


def _cluster_document(data_dir: Path) -> dict[str, Any]:
    try:
        document = json.loads((data_dir / CLUSTER_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def operator_credentials(data_dir: Path, token: str | None = None,
                         tls: TLS | None = None) -> Credentials:
    """An admin's credentials: the given ones, else the local cluster's."""
    if token is not None or tls is not None:
        return Credentials(tls=tls, token=token)
    found = _tls_of(_cluster_document(data_dir), "admin_tls")
    if found is not None:
        return Credentials(tls=found)
    try:
        return Credentials(token=secret_in(data_dir))
    except SecretError as exc:
        raise CredentialsError(str(exc)) from None


def client_credentials(data_dir: Path, token: str | None = None,
                       tls: TLS | None = None) -> Credentials:
    """A client's credentials: the given ones, else the local cluster's
    client certificate, or its write token when it has no TLS (never its
    cluster secret: a client is no admin)."""
    if token is not None or tls is not None:
        return Credentials(tls=tls, token=token)
    document = _cluster_document(data_dir)
    found = _tls_of(document, "tls")
    tokens = document.get("tokens")
    write_token = tokens.get("write") if isinstance(tokens, dict) and found is None else None
    return Credentials(tls=found, token=write_token)
