"""Real clusters on loopback for the tests: `make_cluster` (a fixture,
registered in conftest.py) starts 3 nodes and coordinators, each test its
own, and stops them by pid; and the helpers that wait on them."""

import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvclient.security import Credentials
from kvstore.ops.ports import free_port
from kvstore.ops.processes import NodeProcess, coordinator_command, launch, node_command
from kvstore.placement.membership import ClusterMember, ClusterSpec
from kvstore.security.secret import ensure_secret, read_secret


@dataclass
class Cluster:
    nodes: dict[str, NodeProcess]
    coordinators: list[NodeProcess]
    config: Path
    log_dir: Path
    admin: Credentials  # the cluster secret: what peers and admins present

    def restart(self, node_id: str) -> NodeProcess:
        old = self.nodes[node_id]
        old.kill()
        process = launch(old.process.command, self.log_dir / f"{node_id}.log")
        node = NodeProcess(node_id, old.address, old.metrics_port, old.data_dir, process,
                           old.credentials)
        node.wait_serving(30)
        self.nodes[node_id] = node
        return node

    def stop_all(self) -> None:
        for server in [*self.coordinators, *self.nodes.values()]:
            server.kill()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def _make(nodes: int = 3, coordinators: int = 1, cache_ttl_ms: int = 1000,
              anti_entropy: bool = True, node_settings: str = "",
              mode: str = "leaderless") -> Cluster:
        ports = {f"n{i}": free_port() for i in range(1, nodes + 1)}
        spec = ClusterSpec(
            tuple(ClusterMember(node_id, f"127.0.0.1:{port}") for node_id, port in ports.items()),
            replicas=3, partitions=16, mode=mode,
        )
        config = tmp_path / "cluster.toml"
        # Without anti-entropy, only reads repair (so a test can watch them do it).
        node_table = "[node]\n" + node_settings + (
            "" if anti_entropy else "anti_entropy_interval_seconds = 3600\n") + "\n"
        config.write_text(node_table + spec.to_toml())
        secret_file = ensure_secret(tmp_path)
        admin = Credentials(token=read_secret(secret_file))
        security = ["--cluster-secret-file", str(secret_file)]
        started: dict[str, NodeProcess] = {}
        for node_id, port in ports.items():
            address, metrics = f"127.0.0.1:{port}", free_port()
            command = node_command(node_id, address, tmp_path / node_id, metrics,
                                   ["--config", str(config), "--log-level", "warning",
                                    *security])
            started[node_id] = NodeProcess(node_id, address, metrics, tmp_path / node_id,
                                           launch(command, tmp_path / f"{node_id}.log"), admin)
        routers = []
        for index in range(1, coordinators + 1):
            address, metrics = f"127.0.0.1:{free_port()}", free_port()
            command = coordinator_command(f"c{index}", address, metrics, config,
                                          ["--cache-ttl-ms", str(cache_ttl_ms),
                                           "--log-level", "warning", *security])
            routers.append(NodeProcess(f"c{index}", address, metrics, config,
                                       launch(command, tmp_path / f"c{index}.log"), admin))
        cluster = Cluster(started, routers, config, tmp_path, admin)
        clusters.append(cluster)
        for server in [*started.values(), *routers]:
            server.wait_serving(30)
        # Serving is not yet connected: a peer that started after this one is
        # reached once its channel's reconnect backoff (at most 1 s) is over,
        # and until then calls to it fail at once. A heartbeat answered on a
        # link shows that its channel is connected.
        for server in [*started.values(), *routers]:
            peers = [node_id for node_id in started if node_id != server.node_id]
            poll(lambda s=server, p=peers: heard_from(s, p), 15,
                 f"{server.node_id} hears every peer")
        return cluster

    yield _make
    for cluster in clusters:
        cluster.stop_all()


def heard_from(server: NodeProcess, peers: list[str]) -> bool:
    """Whether every one of `peers` has answered a heartbeat from `server`."""
    return all((metric(server, f'kvstore_peer_heartbeats_answered_total{{node="{peer}"}}')
                or 0) >= 1 for peer in peers)


def poll(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Wait for `condition` with a deadline; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(0.02)  # polling interval, not synchronisation
    return time.monotonic() - start


def metric(server: NodeProcess, sample: str) -> float | None:
    """One sample (name with labels) of a process's metrics; None if absent."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                  timeout=5).read().decode()
    line = next((l for l in text.splitlines() if l.startswith(sample + " ")), None)
    return None if line is None else float(line.split()[1])
