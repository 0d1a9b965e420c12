"""`kvstore cluster up`: run every process of a local cluster as a child,
in the foreground, until SIGINT/SIGTERM.

It owns the child processes: starts them with the command lines from the
layout (`kvstore.ops.cluster_layout`) through the launcher of
`kvstore.ops.processes`, waits until every one serves, publishes
DIR/cluster.json, reports a child that dies, and stops them all on a stop
signal. It must never restart a child behind the operator's back: chaos
tests kill and restart processes themselves, with the same command line and
ports.
"""

import fcntl
import json
import os
import select
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvstore.ops.cluster_layout import (CLUSTER_JSON, PROMETHEUS_TARGETS, Layout, LayoutError,
                                    ProcessPlan, Requested, cluster_document, load_saved,
                                    prometheus_targets, resolve, save_layout,
                                    write_atomically, write_config)
from kvstore.placement.membership import ClusterSpec
from kvstore.ops.probe import is_serving
from kvstore.ops.processes import ServerProcess, launch, stop_all
from kvclient.security import PLAINTEXT, TLS, Credentials
from kvstore.security.deployment_pki import CertificateRequestError
from kvstore.security.local_pki import ADMIN
from kvstore.security.certificates import write_private
from kvstore.security.secret import ensure_secret
from kvstore.security.tokens import TOKEN_FILE, write_token_file

LOCK_FILE = "cluster.lock"
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
LOG_TAIL_LINES = 15


class StartupFailed(RuntimeError):
    """A child did not come up; the message says which and why."""


class Child:
    """One running process of the cluster; its output goes to its log file."""

    def __init__(self, plan: ProcessPlan) -> None:
        self.plan = plan
        self.process: ServerProcess | None = None
        self.reported = False  # its death has been reported

    @property
    def name(self) -> str:
        pid = "not started" if self.process is None else f"pid {self.process.pid}"
        return f"{self.plan.role} {self.plan.process_id} ({pid})"

    def start(self) -> None:
        # Tied to the supervisor: no cluster outlives its `cluster up`
        # unnoticed, and Ctrl-C in a terminal signals only the supervisor,
        # which then stops every child itself.
        self.process = launch(self.plan.command, self.plan.log_file, die_with_parent=True)

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.exit_code()

    def log_tail(self) -> list[str]:
        """The last lines this run of the child wrote to its log."""
        start = 0 if self.process is None else self.process.log_start
        try:
            with open(self.plan.log_file, "rb") as log:
                log.seek(start)
                text = log.read().decode(errors="replace")
        except OSError:
            return []
        return [f"  {line}" for line in text.splitlines()[-LOG_TAIL_LINES:]]


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Signals:
    """SIGINT, SIGTERM and SIGHUP ask to stop; SIGCHLD wakes the watcher.

    The handlers only count; waking goes through `signal.set_wakeup_fd` (a
    pipe the interpreter writes to from its C-level handler), never through
    a lock. A `threading.Event` set from a handler deadlocks when the signal
    lands while the main thread holds the event's own lock, inside `wait`:
    `cluster up` then hung on its way out when its children exited together.
    """

    STOP = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.stops = 0
        self._read = self._write = -1

    def _on_stop(self, signum: int, frame: object) -> None:
        self.stops += 1

    @contextmanager
    def installed(self) -> Iterator["Signals"]:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        previous = {sig: signal.signal(sig, self._on_stop) for sig in self.STOP}
        # A handler of its own, so that the interpreter wakes the pipe for it.
        previous[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)
        previous_fd = signal.set_wakeup_fd(self._write)
        try:
            yield self
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._read)
            os.close(self._write)

    def wait(self, timeout: float) -> None:
        """Until a signal arrives or `timeout` passes."""
        readable, _, _ = select.select([self._read], [], [], max(timeout, 0))
        if readable:
            try:
                while os.read(self._read, 4096):
                    pass
            except BlockingIOError:
                pass


class Supervisor:
    """Starts the children, waits for them, watches them, stops them."""

    def __init__(self, children: list[Child], signals: Signals,
                 report: Callable[[str], None], credentials: Credentials = PLAINTEXT) -> None:
        self.children, self.signals, self.report = children, signals, report
        self.credentials = credentials  # what the health checks present

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> bool:
        """Start every child and wait until all serve: True; False if a stop
        signal came first. StartupFailed if one exits or the deadline passes."""
        for child in self.children:
            child.start()
        deadline = time.monotonic() + timeout
        waiting = list(self.children)
        delay = 0.02
        while waiting and not self.signals.stops:
            for child in self.children:
                code = child.exit_code()
                if code is not None:
                    raise StartupFailed(
                        self._failure(child, f"{describe_exit(code)} while starting"))
            waiting = [c for c in waiting
                       if not is_serving(c.plan.address, 0.5, self.credentials)]
            if waiting and time.monotonic() >= deadline:
                raise StartupFailed(self._failure(
                    waiting[0],
                    f"was not healthy on {waiting[0].plan.address} within {timeout:.0f} s"))
            if waiting:
                self.signals.wait(delay)  # polling back-off; a signal ends it early
                delay = min(delay * 2, 0.25)
        return not self.signals.stops

    def _failure(self, child: Child, what: str) -> str:
        return "\n".join([f"{child.name} {what}.", f"Last lines of {child.plan.log_file}:",
                          *child.log_tail()])

    def watch(self) -> None:
        """Until a stop signal: report each child that dies, once."""
        while not self.signals.stops:
            for child in self.children:
                code = child.exit_code()
                if code is not None and not child.reported:
                    child.reported = True
                    self.report(self._death(child, code))
            self.signals.wait(1.0)

    def _death(self, child: Child, code: int) -> str:
        alive = sum(c.exit_code() is None for c in self.children)
        return "\n".join([
            f"{child.name} {describe_exit(code)}; it is not restarted, the other {alive} "
            "process(es) keep running.",
            f"Last lines of {child.plan.log_file}:", *child.log_tail(),
            "To start it again by hand: " + " ".join(child.plan.command),
        ])

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> list[Child]:
        """SIGTERM every running child, wait for all of them at once, SIGKILL
        those still running after `timeout` or at another stop signal.
        Returns the children that had to be killed."""
        started = {c.process: c for c in self.children if c.process is not None}
        stops_before = self.signals.stops
        killed = stop_all(list(started), timeout,
                          pause=self.signals.wait,  # SIGCHLD ends a pause early
                          cut_short=lambda: self.signals.stops != stops_before)
        return [started[process] for process in killed]


@contextmanager
def locked(data_dir: Path) -> Iterator[None]:
    """One `cluster up` per data dir at a time (the lock dies with its holder)."""
    with open(data_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise LayoutError(f"{data_dir} is in use by another `kvstore cluster up` "
                              f"(pid {holder}); stop it first") from None
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def prepare(requested: Requested, data_dir: Path,
            node_settings: Mapping[str, Any]) -> tuple[Layout, bool]:
    """The layout to start and whether the data dir already held it. Call
    with the lock held. cluster.toml is written at the first start, and again
    when node settings are given; otherwise a restart keeps it as it is."""
    saved = load_saved(data_dir)
    layout = resolve(requested, saved, data_dir)
    if saved is None or node_settings:
        write_config(layout, data_dir, node_settings)
    if layout.tls:
        try:
            layout.pki(data_dir).ensure(layout.process_ids)
        except CertificateRequestError as exc:  # e.g. tls/ca.pem without its key
            raise LayoutError(str(exc)) from None
    else:
        ensure_secret(data_dir)
    if layout.auth_tokens and not (data_dir / TOKEN_FILE).exists():
        write_token_file(data_dir / TOKEN_FILE)
    # With the lock held, a cluster.json here is left by a run that was
    # killed; it must not pass for the processes about to start.
    (data_dir / CLUSTER_JSON).unlink(missing_ok=True)
    return layout, saved is not None


def publish(layout: Layout, children: list[Child], data_dir: Path, existed: bool) -> dict[str, Any]:
    """Every child serves: remember the cluster, then write cluster.json."""
    if not existed:
        save_layout(layout, data_dir)
    pids = [c.process.pid for c in children]  # type: ignore[union-attr]
    document = cluster_document(layout, [c.plan for c in children], pids, data_dir)
    targets = data_dir / PROMETHEUS_TARGETS
    targets.parent.mkdir(exist_ok=True)
    write_atomically(targets, json.dumps(prometheus_targets(document), indent=2) + "\n")
    text = json.dumps(document, indent=2) + "\n"
    if "tokens" in document:  # it holds secrets: for its owner's eyes only
        write_private(data_dir / CLUSTER_JSON, text.encode())
    else:
        write_atomically(data_dir / CLUSTER_JSON, text)
    return document


def _supervisor_credentials(layout: Layout, data_dir: Path) -> Credentials:
    """With TLS the health checks need a certificate: the admin's."""
    if not layout.tls:
        return PLAINTEXT
    pki = layout.pki(data_dir)
    admin = pki.pair(ADMIN)
    return Credentials(tls=TLS(ca=pki.ca, cert=admin.cert, key=admin.key))


def run_cluster(requested: Requested, data_dir: Path, *,
                node_settings: Mapping[str, Any] = {},
                on_up: Callable[[dict[str, Any], ClusterSpec, bool], None],
                say: Callable[[str], None], warn: Callable[[str], None]) -> int:
    """`kvstore cluster up`: start, publish, call `on_up(cluster.json's
    document, spec, whether the data dir held the cluster already)`, watch
    until a stop signal, stop. Returns the exit status; raises LayoutError
    when the flags cannot be used (before anything is written)."""
    resolve(requested, load_saved(data_dir), data_dir)  # bad flags: leave no trace
    data_dir.mkdir(parents=True, exist_ok=True)
    with locked(data_dir):
        layout, existed = prepare(requested, data_dir, node_settings)
        children = [Child(plan) for plan in layout.plans(data_dir.resolve())]
        signals = Signals()
        with signals.installed():
            supervisor = Supervisor(children, signals, warn, _supervisor_credentials(layout,
                                                                                    data_dir))
            try:
                if supervisor.start():
                    on_up(publish(layout, children, data_dir, existed), layout.spec, existed)
                    supervisor.watch()
                say("stopping the cluster ...")
            except StartupFailed as exc:
                warn(f"error: {exc}\nStopping the other processes.")
                return 1
            finally:
                killed = supervisor.stop()
                (data_dir / CLUSTER_JSON).unlink(missing_ok=True)
        for child in killed:
            warn(f"{child.name} did not stop within {STOP_TIMEOUT_SECONDS:.0f} s and was killed")
        say("stopped")
        return 0
