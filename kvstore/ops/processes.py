"""Starting and stopping kvstore server processes (bench, local clusters, tests)."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kvstore.ops.ports import free_port
from kvstore.ops.probe import wait_serving


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class NodeProcess:
    node_id: str
    address: str
    metrics_port: int
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for a graceful exit (SIGKILL after timeout); exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def node_command(node_id: str, address: str, data_dir: Path, metrics_port: int,
                 extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "kvstore", "node", "--id", node_id, "--listen", address,
            "--data-dir", str(data_dir), "--metrics-port", str(metrics_port), *(extra or [])]


def coordinator_command(coordinator_id: str, address: str, metrics_port: int, config: Path,
                        extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "kvstore", "coordinator", "--id", coordinator_id,
            "--listen", address, "--metrics-port", str(metrics_port), "--config", str(config),
            *(extra or [])]


def spawn(command: list[str], log_file: Path | None) -> subprocess.Popen[bytes]:
    """Start a server process with its output appended to `log_file`."""
    if log_file is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log_file, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log)


def start_node(node_id: str, data_dir: Path, *, host: str = "127.0.0.1", port: int | None = None,
               metrics_port: int | None = None, extra: list[str] | None = None,
               log_file: Path | None = None, ready_timeout: float = 30.0) -> NodeProcess:
    """Start `kvstore node` and return once it serves."""
    address = f"{host}:{port or free_port(host)}"
    metrics = metrics_port if metrics_port is not None else free_port(host)
    process = spawn(node_command(node_id, address, data_dir, metrics, extra), log_file)
    return _started(NodeProcess(node_id, address, metrics, data_dir, process), ready_timeout)


def start_coordinator(coordinator_id: str, config: Path, *, host: str = "127.0.0.1",
                      port: int | None = None, metrics_port: int | None = None,
                      extra: list[str] | None = None, log_file: Path | None = None,
                      ready_timeout: float = 30.0) -> NodeProcess:
    """Start `kvstore coordinator` and return once it serves (data_dir: its config)."""
    address = f"{host}:{port or free_port(host)}"
    metrics = metrics_port if metrics_port is not None else free_port(host)
    process = spawn(coordinator_command(coordinator_id, address, metrics, config, extra), log_file)
    return _started(NodeProcess(coordinator_id, address, metrics, config, process), ready_timeout)


def _started(server: NodeProcess, ready_timeout: float) -> NodeProcess:
    try:
        wait_serving(server.address, ready_timeout, alive=lambda: server.process.poll() is None)
    except BaseException:
        server.kill()
        raise
    return server
