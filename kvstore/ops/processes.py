"""Starting, watching and stopping kvstore's server processes: the one
launcher that `kvstore cluster up`, the tests, the chaos suite and the
benchmark share.

Owns the command lines of `kvstore node`, `kvstore coordinator` and
`kvstore cluster up`; how a process starts (its output appended to its log
file, and, when asked, tied to the life of the process that started it); the
wait until it serves; and how it stops, by pid: SIGTERM, then SIGKILL after a
timeout. It never restarts a process on its own: whoever started one decides
(`cluster up` reports a death, the chaos suite restarts with the same
command line).
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kvclient.security import PLAINTEXT, Credentials
from kvstore.ops.ports import free_port
from kvstore.ops.probe import wait_serving

STOP_TIMEOUT_SECONDS = 30.0

# Run before the real command: PR_SET_PDEATHSIG survives exec, so the process
# gets SIGTERM when the one that started it dies (even by SIGKILL) instead of
# holding on to its ports. A wrapper rather than preexec_fn, which is unsafe
# once gRPC's threads run; after the exec the pid is the same and the command
# line is exactly the command.
_DIE_WITH_PARENT = ("import ctypes, os, signal, sys; "
                    "ctypes.CDLL(None).prctl(1, signal.SIGTERM); "
                    "os.execv(sys.argv[1], sys.argv[1:])")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(eq=False)
class ServerProcess:
    """A process started by `launch`: its command line, its log file and
    where this run's output starts in it, its pid. Ours to reap."""

    command: list[str]
    log_file: Path | None
    log_start: int  # offset in log_file where this run's output begins
    _popen: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def exit_code(self) -> int | None:
        """None while it runs (negative: the signal that killed it)."""
        return self._popen.poll()

    def send_signal(self, signum: int) -> None:
        """Signal it by pid, unless it has exited (its pid may be reused)."""
        self._popen.send_signal(signum)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code once it exits; subprocess.TimeoutExpired after `timeout`."""
        return self._popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL it if it still runs, and reap it."""
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after `timeout`); exit code."""
        stop_all([self], timeout)
        return self.wait()


def launch(command: Sequence[str], log_file: Path | None, *,
           die_with_parent: bool = False) -> ServerProcess:
    """Start `command` with its output appended to `log_file` (None: discarded).

    `die_with_parent`: the process is this one's alone to stop. It gets
    SIGTERM when this process dies (Linux), and runs in a session of its
    own, so that Ctrl-C in a terminal signals only this process, which then
    stops it itself."""
    argv = list(command)
    wrapped = [sys.executable, "-c", _DIE_WITH_PARENT, *argv] \
        if die_with_parent and sys.platform.startswith("linux") else argv
    if log_file is None:
        popen = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=die_with_parent)
        return ServerProcess(argv, None, 0, popen)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        log_start = log.tell()
        popen = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=die_with_parent)
    return ServerProcess(argv, log_file, log_start, popen)


def stop_all(processes: Sequence[ServerProcess], timeout: float = STOP_TIMEOUT_SECONDS, *,
             pause: Callable[[float], object] = time.sleep,
             cut_short: Callable[[], bool] = lambda: False) -> list[ServerProcess]:
    """SIGTERM every one of `processes` still running and wait for all of them
    at once; SIGKILL (and reap) those still running after `timeout`, or as
    soon as `cut_short()` is true. `pause(seconds)` waits between two looks
    (one that a signal ends early lets the caller react at once). Returns
    the processes that had to be killed."""
    running = [p for p in processes if p.exit_code() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while running and not cut_short():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pause(min(delay, left))  # polling back-off between looks, not synchronisation
        delay = min(delay * 2, 0.1)
        running = [p for p in running if p.exit_code() is None]
    # Look once more: one may have exited between the last look and cut_short().
    running = [p for p in running if p.exit_code() is None]
    for process in running:
        process.kill()
    return running


@dataclass
class NodeProcess:
    """A started `kvstore node` or `kvstore coordinator`, where it serves
    (a coordinator's data_dir is its config file) and what to present to it
    (the health checks use it; tests reach its internal service with it)."""

    node_id: str
    address: str
    metrics_port: int
    data_dir: Path
    process: ServerProcess
    credentials: Credentials = PLAINTEXT

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Return once it serves; RuntimeError as soon as it exits,
        TimeoutError after `timeout`."""
        wait_serving(self.address, timeout, alive=lambda: self.process.exit_code() is None,
                     credentials=self.credentials)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after timeout); exit code."""
        return self.process.stop(timeout)

    def kill(self) -> None:
        self.process.kill()


def node_command(node_id: str, address: str, data_dir: Path, metrics_port: int,
                 extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "kvstore", "node", "--id", node_id, "--listen", address,
            "--data-dir", str(data_dir), "--metrics-port", str(metrics_port), *(extra or [])]


def coordinator_command(coordinator_id: str, address: str, metrics_port: int, config: Path,
                        extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "kvstore", "coordinator", "--id", coordinator_id,
            "--listen", address, "--metrics-port", str(metrics_port), "--config", str(config),
            *(extra or [])]


def cluster_up_command(data_dir: Path, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "kvstore", "cluster", "up", "--data-dir", str(data_dir),
            *extra]


def start_node(node_id: str, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None,
               metrics_port: int | None = None, extra: list[str] | None = None,
               log_file: Path | None = None, ready_timeout: float = 30.0,
               credentials: Credentials = PLAINTEXT) -> NodeProcess:
    """Start `kvstore node` and return once it serves."""
    address = f"{host}:{port or free_port(host)}"
    metrics = metrics_port if metrics_port is not None else free_port(host)
    process = launch(node_command(node_id, address, data_dir, metrics, extra), log_file)
    return _started(NodeProcess(node_id, address, metrics, data_dir, process, credentials),
                    ready_timeout)


def start_coordinator(coordinator_id: str, config: Path, *, host: str = "127.0.0.1",
                      port: int | None = None, metrics_port: int | None = None,
                      extra: list[str] | None = None, log_file: Path | None = None,
                      ready_timeout: float = 30.0,
                      credentials: Credentials = PLAINTEXT) -> NodeProcess:
    """Start `kvstore coordinator` and return once it serves (data_dir: its config)."""
    address = f"{host}:{port or free_port(host)}"
    metrics = metrics_port if metrics_port is not None else free_port(host)
    process = launch(coordinator_command(coordinator_id, address, metrics, config, extra),
                     log_file)
    return _started(NodeProcess(coordinator_id, address, metrics, config, process, credentials),
                    ready_timeout)


def _started(server: NodeProcess, ready_timeout: float) -> NodeProcess:
    try:
        server.wait_serving(ready_timeout)
    except BaseException:
        server.kill()
        raise
    return server
