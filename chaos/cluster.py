"""The cluster under test: `kvstore cluster up` run as a subprocess on free
ports, and each of its server processes as a `Server` the nemesis can kill,
pause, resume and restart.

Owns every process a chaos run starts, each started by
`kvstore.ops.processes.launch` to die with the run, and stops them all, by
pid, in `LocalCluster.stop` (called from a `finally`): SIGTERM to `cluster
up` (which stops its own children) and to the processes restarted here. A
restarted process runs the exact command line its predecessor ran (read from
/proc/PID/cmdline), so it comes back on the same ports and data. It never
decides when to inject a fault (that is `chaos.nemesis`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvstore.ops.cluster_layout import (CLUSTER_JSON, CLUSTER_TOML, LayoutError, free_base_port,
                                    load_saved)
from kvstore.ops.processes import ServerProcess, cluster_up_command, launch, stop_all
from kvstore.placement.membership import ClusterSpec
from kvclient.security import PLAINTEXT, Credentials
from kvstore.ops.credentials import client_credentials, operator_credentials
from kvstore.rpc.channels import open_aio_channel

START_TIMEOUT = 90.0  # cluster up waits up to 60 s for its children, then gives up
HEALTHY_TIMEOUT = 60.0  # a restarted process must serve within this
STOP_TIMEOUT = 30.0  # cluster up allows its children 15 s to stop
PROBE_TIMEOUT = 0.5
POLL_INTERVAL = 0.05

class ClusterError(RuntimeError):
    """The cluster could not be started, healed or stopped; the message says why."""


@dataclass
class Server:
    """One node or coordinator of the running cluster."""

    role: str  # "node" or "coordinator"
    server_id: str
    address: str
    metrics: str  # host:port of its Prometheus /metrics
    pid: int
    command: list[str]
    log_file: Path
    process: ServerProcess | None = None  # set once restarted here: ours to stop
    down: bool = False  # killed by the nemesis, not yet restarted
    paused: bool = False
    restarts: int = 0

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.exit_code() is None
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Running (or stopped): not gone and not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


async def is_serving(address: str, timeout: float = PROBE_TIMEOUT,
                     credentials: Credentials = PLAINTEXT) -> bool:
    async with open_aio_channel(address, credentials=credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class LocalCluster:
    """`with LocalCluster(...) as cluster:` a running cluster in `data_dir`."""

    data_dir: Path
    nodes: int = 5
    coordinators: int = 1
    replicas: int = 3
    node_settings: dict[str, float] = field(default_factory=dict)  # cluster up --node-setting
    servers: dict[str, Server] = field(default_factory=dict)
    tls: bool = False  # cluster up --tls
    mode: str = "leaderless"  # cluster up --mode
    base_port: int = 0
    _supervisor: ServerProcess | None = None  # `cluster up`

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- starting ----------------------------------------------------------------

    def start(self, attempts: int = 3) -> None:
        """Start `cluster up` and wait for cluster.json. A port taken between
        the check and the start makes `cluster up` exit; the next attempt
        picks other ports."""
        rng = random.Random()  # not the run's seed: parallel runs must not collide
        for attempt in range(1, attempts + 1):
            try:
                self.base_port = free_base_port(self.nodes, self.coordinators, rng)
            except LayoutError as exc:
                raise ClusterError(str(exc)) from exc
            self._start_supervisor()
            try:
                self._wait_for_cluster_json()
                break
            except ClusterError:
                exited = self._supervisor is not None and self._supervisor.exit_code() is not None
                self._stop_supervisor()
                if attempt == attempts or not exited:
                    raise
        self._load_servers()

    def _start_supervisor(self) -> None:
        command = cluster_up_command(self.data_dir, [
            "--nodes", str(self.nodes), "--coordinators", str(self.coordinators),
            "--replicas", str(self.replicas), "--base-port", str(self.base_port),
            "--mode", self.mode,
            *(arg for key, value in self.node_settings.items()
              for arg in ("--node-setting", f"{key}={value}")),
            *(["--tls"] if self.tls else [])])
        self._supervisor = launch(command, self.supervisor_log, die_with_parent=True)

    @property
    def supervisor_log(self) -> Path:
        return self.data_dir / "logs" / "cluster-up.log"

    def _wait_for_cluster_json(self) -> None:
        assert self._supervisor is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.data_dir / CLUSTER_JSON).exists():
            code = self._supervisor.exit_code()
            if code is not None:
                raise ClusterError(f"`kvstore cluster up` exited with code {code} before the "
                                   f"cluster was up:\n{_log_tail(self.supervisor_log)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"no {CLUSTER_JSON} within {START_TIMEOUT:.0f} s:\n"
                                   f"{_log_tail(self.supervisor_log)}")
            time.sleep(POLL_INTERVAL)  # polling interval, not synchronisation

    def _load_servers(self) -> None:
        document = json.loads((self.data_dir / CLUSTER_JSON).read_text())
        layout = load_saved(self.data_dir)
        plans = {plan.process_id: plan for plan in layout.plans(self.data_dir.resolve())} \
            if layout is not None else {}
        for entry in document["processes"]:
            pid, server_id = int(entry["pid"]), entry["id"]
            plan = plans.get(server_id)
            command = _cmdline(pid) or (plan.command if plan else None)
            if command is None:
                raise ClusterError(f"cannot tell how {server_id} (pid {pid}) was started")
            log_file = plan.log_file if plan else self.data_dir / "logs" / f"{server_id}.log"
            self.servers[server_id] = Server(entry["role"], server_id, entry["address"],
                                             entry["metrics"], pid, command, log_file)

    @property
    def admin_credentials(self) -> Credentials:
        """What the checkers present: the cluster's admin certificate or secret."""
        return operator_credentials(self.data_dir)

    @property
    def client_credentials(self) -> Credentials:
        """What the workload presents: the cluster's client certificate, if any."""
        return client_credentials(self.data_dir)

    @property
    def spec(self) -> ClusterSpec:
        table = tomllib.loads((self.data_dir / CLUSTER_TOML).read_text())["cluster"]
        return ClusterSpec.from_table(table)

    def addresses(self, role: str | None = None) -> list[str]:
        return [s.address for s in self.servers.values() if role in (None, s.role)]

    def of_role(self, role: str) -> list[Server]:
        return [s for s in self.servers.values() if s.role == role]

    # -- faults ------------------------------------------------------------------

    def kill(self, server: Server) -> None:
        """SIGKILL; `wait_gone` tells when its ports are free."""
        self._signal(server, signal.SIGKILL)
        server.down = True

    async def wait_gone(self, server: Server, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        # cluster up reaps its own children; until then they are zombies,
        # which hold no ports.
        while server.alive():
            if time.monotonic() > deadline:
                raise ClusterError(f"{server.server_id} (pid {server.pid}) outlived SIGKILL "
                                   f"by {timeout:.0f} s")
            await asyncio.sleep(0.01)  # polling interval, not synchronisation
        if server.process is not None:
            server.process.wait()  # reap our own child

    def pause(self, server: Server) -> None:
        self._signal(server, signal.SIGSTOP)
        server.paused = True

    def resume(self, server: Server) -> None:
        self._signal(server, signal.SIGCONT)
        server.paused = False

    def restart(self, server: Server) -> None:
        """Start the killed `server` again with its exact command line."""
        assert server.down, f"{server.server_id} is running"
        server.process = launch(server.command, server.log_file, die_with_parent=True)
        server.pid = server.process.pid
        server.down = False
        server.restarts += 1

    def _signal(self, server: Server, signum: int) -> None:
        try:
            os.kill(server.pid, signum)
        except ProcessLookupError:
            raise ClusterError(f"{server.server_id} (pid {server.pid}) is not running; "
                               f"its log:\n{_log_tail(server.log_file)}") from None

    async def wait_healthy(self, server: Server, timeout: float = HEALTHY_TIMEOUT) -> float:
        """Poll `server`'s health until SERVING; the seconds it took."""
        start = time.monotonic()
        while not await is_serving(server.address, credentials=self.admin_credentials):
            if not server.alive():
                raise ClusterError(f"{server.server_id} exited before it was healthy; "
                                   f"its log:\n{_log_tail(server.log_file)}")
            if time.monotonic() - start > timeout:
                raise ClusterError(f"{server.server_id} was not healthy within {timeout:.0f} s")
            await asyncio.sleep(POLL_INTERVAL)  # polling interval, not synchronisation
        return time.monotonic() - start

    def heal_all(self) -> None:
        """Resume every paused process and restart every killed one."""
        for server in self.servers.values():
            if server.paused:
                self.resume(server)
            if server.down:
                self.restart(server)

    async def wait_all_healthy(self, timeout: float = HEALTHY_TIMEOUT) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                for server in self.servers.values():
                    tasks.create_task(self.wait_healthy(server, timeout))
        except* ClusterError as group:
            raise group.exceptions[0] from None

    def collect_crashed(self) -> list[str]:
        """Processes that exited although no fault holds them down: crashes
        (bugs). They are marked down, so `heal_all` restarts them."""
        crashed = [s for s in self.servers.values() if not s.down and not s.alive()]
        for server in crashed:
            server.down = True
            if server.process is not None:
                server.process.wait()
        return [f"{s.server_id} (pid {s.pid}, see {s.log_file})" for s in crashed]

    # -- stopping ----------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this run started: resume paused processes, SIGTERM
        `cluster up` (which stops its children) and the processes restarted
        here; SIGKILL whatever is still running after the deadline."""
        for server in self.servers.values():
            if server.paused and server.alive():
                try:
                    os.kill(server.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                server.paused = False
        ours = [s.process for s in self.servers.values() if s.process is not None]
        supervisor, self._supervisor = self._supervisor, None
        # A killed `cluster up`'s children get SIGTERM (their parent-death signal).
        stop_all([*ours, *([supervisor] if supervisor else [])], STOP_TIMEOUT)

    def _stop_supervisor(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.stop(STOP_TIMEOUT)


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode() for part in raw.split(b"\0") if part] or None
