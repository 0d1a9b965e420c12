"""The certificates of a local cluster (`kvstore cluster up --tls`), under
DATA_DIR/tls/: a CA made for this cluster alone, a certificate for each
node and coordinator (a peer: "<id>.peer.kvstore", also valid for serving
127.0.0.1 and localhost), one for clients ("client.kvstore") and one for
its operators ("operator.admin.kvstore").

Owns which files exist and what each certificate is called; made once and
reused on a restart (a missing one is issued by the same CA). Keys are
readable by their owner only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kvstore.security.certificates import write_issued
from kvstore.security.deployment_pki import load_or_create_authority

TLS_DIR = "tls"
CLIENT = "client"
ADMIN = "admin"
PEER_DOMAIN = "peer.kvstore"
_NAMES = {CLIENT: "client.kvstore", ADMIN: "operator.admin.kvstore"}


@dataclass(frozen=True)
class Pair:
    """Paths of a certificate (PEM) and its key."""

    cert: Path
    key: Path

    def as_json(self, ca: Path) -> dict[str, str]:
        """The shape of cluster.json's "tls" and "admin_tls"."""
        return {"ca": str(ca.resolve()), "cert": str(self.cert.resolve()),
                "key": str(self.key.resolve())}


@dataclass(frozen=True)
class LocalPki:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def _ca_key(self) -> Path:
        return self.directory / "ca-key.pem"

    def pair(self, name: str) -> Pair:
        """The files of process id `name`, or of CLIENT or ADMIN."""
        return Pair(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")

    def ensure(self, process_ids: list[str]) -> None:
        """The CA and every certificate, made where missing."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        authority, _ = load_or_create_authority(self.ca, self._ca_key, "kvstore local CA")
        for name in [*process_ids, CLIENT, ADMIN]:
            pair = self.pair(name)
            if pair.cert.exists() and pair.key.exists():
                continue
            common_name = _NAMES.get(name, f"{name}.{PEER_DOMAIN}")
            write_issued(self.directory, name, authority.issue(
                common_name, server=name not in _NAMES))
