"""The cluster secret of a plaintext cluster: a random token that peer links,
coordinators and operator tools present as `authorization: Bearer SECRET`,
and that makes its bearer an admin (see `kvstore.security.identity`).

`kvstore cluster up` creates it once, in DATA_DIR/cluster.secret (readable
by its owner only), and hands its path to every child; tools find it with
--data-dir. Owns creating and reading that file; never logs the secret.
"""

import secrets
import stat
from pathlib import Path

from kvstore.security.certificates import write_private

SECRET_FILE = "cluster.secret"
_BYTES = 32  # 256 bits: unguessable


class SecretError(ValueError):
    """The secret file is missing, empty, unreadable or readable by others."""


def ensure_secret(data_dir: Path) -> Path:
    """DATA_DIR/cluster.secret, created with a new secret if absent."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        write_private(path, (secrets.token_urlsafe(_BYTES) + "\n").encode())
    return path


def read_secret(path: Path) -> str:
    """The secret in `path`. Refused when others may read the file: a secret
    anyone on the machine can read keeps no one out."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretError(f"cannot read the cluster secret file {path}: "
                          f"{exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"the cluster secret file {path} is readable by others; "
                          f"chmod 600 {path}")
    if not text or not all(33 <= ord(c) <= 126 for c in text):
        raise SecretError(f"the cluster secret file {path} must hold one line of visible "
                          "ASCII (kvstore cluster up writes one)")
    return text


def secret_in(data_dir: Path) -> str | None:
    """The secret of the cluster `data_dir` holds, or None when it has none."""
    path = data_dir / SECRET_FILE
    return read_secret(path) if path.exists() else None

