"""Certificates that rotate without a restart: the TLS files a process
serves with and presents to its peers, re-read when they change on disk or
when the process gets SIGHUP.

`CertificateFiles` holds the material last loaded (CA, key, certificate)
and a generation that grows with each reload. gRPC asks `server_fetcher`
for the server's configuration at every handshake (from a thread of its
own, hence the lock): it answers with the new material once per
generation, so new connections get the new certificate while established
ones carry on. Files that cannot be read or parsed leave the old material
in place (and say why): a half-written rotation never takes the server
down. Never logs a key.

`CertificateWatcher` is the background loop that looks at the files every
`interval` seconds or on a reload request, and calls `on_reloaded` (the
peer links then reconnect with the new files).
"""

from __future__ import annotations

import asyncio
import logging

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from kvstore.background import Background
from kvstore.security.certificates import expiry, key_matches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Material:
    ca: bytes
    key: bytes
    cert: bytes
    expiries: dict[str, float]  # "ca", "cert" -> Unix time


def _stamp(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class CertificateFiles:
    def __init__(self, ca: Path, cert: Path, key: Path, *, require_client_cert: bool) -> None:
        self._paths = {"ca": ca, "cert": cert, "key": key}
        self.require_client_cert = require_client_cert
        self._lock = threading.Lock()
        self._stamps = self._read_stamps()
        self.material = self._load()  # raises at start: the files must be good then
        self.generation = 0
        self._served = 0  # the generation gRPC was last given

    def _read_stamps(self) -> dict[str, tuple[int, int, int]]:
        return {name: _stamp(path) for name, path in self._paths.items()}

    def _load(self) -> Material:
        data = {name: path.read_bytes() for name, path in self._paths.items()}
        if not key_matches(data["key"], data["cert"]):
            # E.g. caught between writing the new key and the new certificate.
            raise ValueError(f"the key in {self._paths['key']} is not the key of the "
                             f"certificate in {self._paths['cert']}")
        return Material(data["ca"], data["key"], data["cert"],
                        {"ca": expiry(data["ca"]).timestamp(),
                         "cert": expiry(data["cert"]).timestamp()})

    def reload_if_changed(self, force: bool = False) -> bool:
        """Re-read the files if any changed since the last look (or `force`);
        True when new material was loaded."""
        try:
            stamps = self._read_stamps()
            if stamps == self._stamps and not force:
                return False
            material = self._load()
        except (OSError, ValueError) as exc:
            log.error("cannot reload the TLS certificate files; keeping the ones loaded",
                      extra={"error": str(exc)})
            return False
        with self._lock:
            self._stamps = stamps
            if material == self.material:
                return False
            self.material = material
            self.generation += 1
        log.info("reloaded the TLS certificate files", extra={
            "cert": str(self._paths["cert"]), "cert_expires": material.expiries["cert"]})
        return True

    def server_configuration(self) -> grpc.ServerCertificateConfiguration:
        material = self.material
        return grpc.ssl_server_certificate_configuration(
            [(material.key, material.cert)], root_certificates=material.ca)

    def server_fetcher(self) -> grpc.ServerCertificateConfiguration | None:
        """For grpc.dynamic_ssl_server_credentials: the new configuration
        once per reload, else None (keep the current one)."""
        with self._lock:
            if self._served == self.generation:
                return None
            self._served = self.generation
        return self.server_configuration()

    def server_credentials(self) -> grpc.ServerCredentials:
        with self._lock:
            self._served = self.generation
        return grpc.dynamic_ssl_server_credentials(
            # gRPC's stub leaves out that None means "keep the current one".
            self.server_configuration(), self.server_fetcher,  # type: ignore[arg-type]
            require_client_authentication=self.require_client_cert)


class CertificateWatcher(Background):
    """`async with CertificateWatcher(files, reload_requested, ...)`: looks
    at the files every `interval` seconds, and at once when
    `reload_requested` is set (SIGHUP); `on_reloaded()` after each reload."""

    def __init__(self, files: CertificateFiles, reload_requested: asyncio.Event,
                 on_reloaded: Callable[[], None], interval: float = 2.0) -> None:
        super().__init__()
        self._files = files
        self._requested = reload_requested
        self._on_reloaded = on_reloaded
        self._interval = interval

    def _start(self) -> None:
        self._tasks.create_task(self._watch())

    async def _stop(self) -> None:
        self._requested.set()  # wakes the loop, which then sees the stop

    async def _watch(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._interval):  # a schedule, not synchronisation
                    await self._requested.wait()
            except TimeoutError:
                pass
            if self._stopping.is_set():
                return
            forced = self._requested.is_set()
            self._requested.clear()
            await self._check(forced)

    async def _check(self, force: bool) -> None:
        # Off the event loop: a few stats, and reads when something changed.
        if await asyncio.to_thread(self._files.reload_if_changed, force):
            self._on_reloaded()



