"""The health-only listener (`--health-listen`): on a TLS cluster whose
ports require client certificates, a plaintext caller without any gets the
processes' health there, and nothing else (KV, Replica, Admin and
reflection answer UNIMPLEMENTED), while the main ports still refuse it."""

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import kvclient
from kvclient.pb import admin_pb2, admin_pb2_grpc, kv_pb2, kv_pb2_grpc
from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvclient.security import TLS, Credentials
from kvstore.ops.ports import free_port
from kvstore.ops.probe import health_status
from kvstore.ops.processes import NodeProcess, start_coordinator, start_node
from kvstore.rpc.channels import open_channel
from kvstore.server.config import ConfigError, load_node_config
from tests.conftest import StartNode
from tests.test_tls import _code


def test_the_health_listener_needs_a_port_of_its_own() -> None:
    with pytest.raises(ConfigError, match="another port than listen"):
        load_node_config(None, {"node_id": "n1", "listen": "127.0.0.1:7101",
                                "health_listen": "127.0.0.1:7101"})
    with pytest.raises(ConfigError, match="health_listen must be HOST:PORT"):
        load_node_config(None, {"node_id": "n1", "health_listen": "7102"})
    # Plaintext beyond loopback is no reason to refuse it: it serves health alone.
    assert load_node_config(None, {"node_id": "n1", "health_listen": "0.0.0.0:7102"}
                            ).health_listen == "0.0.0.0:7102"


@dataclass
class Secured:
    processes: dict[str, NodeProcess]
    health: dict[str, str]  # process id -> its health listener
    client: TLS


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("health")
    tls = root / "tls"
    made = subprocess.run([sys.executable, "-m", "kvstore", "certs", "create", "--out", str(tls),
                           "--peer", "n1", "--peer", "n2", "--peer", "c1", "--client", "app",
                           "--admin", "operator"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    ports = {name: free_port() for name in ("n1", "n2", "c1")}
    config = root / "cluster.toml"
    config.write_text("[cluster]\nreplicas = 2\npartitions = 16\nmembers = [\n" + "".join(
        f'  {{ id = "{n}", address = "127.0.0.1:{ports[n]}" }},\n' for n in ("n1", "n2")) + "]\n")
    health = {name: f"127.0.0.1:{free_port()}" for name in ports}
    admin = Credentials(tls=TLS(ca=tls / "ca.pem", cert=tls / "operator.pem",
                                key=tls / "operator-key.pem"))

    def flags(name: str) -> list[str]:
        return ["--config", str(config), "--tls-ca", str(tls / "ca.pem"),
                "--tls-cert", str(tls / f"{name}.pem"), "--tls-key", str(tls / f"{name}-key.pem"),
                "--health-listen", health[name], "--log-level", "warning"]

    processes: dict[str, NodeProcess] = {}
    try:
        for name in ("n1", "n2"):
            processes[name] = start_node(name, root / name, port=ports[name], extra=flags(name),
                                         log_file=root / f"{name}.log", credentials=admin)
        processes["c1"] = start_coordinator(
            "c1", config, port=ports["c1"], extra=flags("c1")[2:], log_file=root / "c1.log",
            credentials=admin)
        yield Secured(processes, health, TLS(ca=tls / "ca.pem", cert=tls / "app.pem",
                                             key=tls / "app-key.pem"))
    finally:
        for process in processes.values():
            process.kill()


@pytest.mark.process
@pytest.mark.timeout(120)
def test_health_answers_serving_without_certificates_on_the_health_port_only(
        secured: Secured) -> None:
    for name, process in secured.processes.items():
        assert health_status(secured.health[name], 5) == "SERVING", name
        assert health_status(process.address, 5) == "unreachable", name  # TLS, mTLS required
    # The cluster behind it runs on mTLS: a client certificate writes at w=all.
    with kvclient.Client([secured.processes["c1"].address], tls=secured.client,
                         timeout=20) as client:
        client.put(b"probed", b"yes", w="all")
        assert client.get(b"probed", r="all").value == b"yes"


def _refusals(channel: grpc.Channel) -> dict[str, grpc.StatusCode]:
    """What a KV read and write, a Replica ping, Admin.Status and a
    reflection listing get over `channel`."""
    kv = kv_pb2_grpc.KVStub(channel)
    replica = replica_pb2_grpc.ReplicaStub(channel)
    admin = admin_pb2_grpc.AdminStub(channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    ping = replica_pb2.ReplicaOp(ping=replica_pb2.ReplicaPing())
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    return {
        "KV.Get": _code(lambda: kv.Get(kv_pb2.GetRequest(key=b"probed"), timeout=5)),
        "KV.Put": _code(lambda: kv.Put(kv_pb2.PutRequest(key=b"k", value=b"v"), timeout=5)),
        "Replica.Batch": _code(lambda: replica.Batch(
            replica_pb2.ReplicaBatchRequest(ops=[ping]), timeout=5)),
        "Admin.Status": _code(lambda: admin.Status(admin_pb2.StatusRequest(), timeout=5)),
        "reflection": _code(lambda: next(iter(reflection.ServerReflectionInfo(
            iter([listing]), timeout=5)))),
    }


@pytest.mark.process
@pytest.mark.timeout(120)
def test_nothing_but_health_is_served_on_the_health_port(secured: Secured) -> None:
    for name in ("n1", "c1"):
        with open_channel(secured.health[name]) as channel:
            codes = _refusals(channel)
        assert set(codes.values()) == {grpc.StatusCode.UNIMPLEMENTED}, (name, codes)


@pytest.mark.timeout(60)
def test_the_health_port_serves_with_the_process_and_closes_with_it(start: StartNode) -> None:
    health = f"127.0.0.1:{free_port()}"
    node = start(extra=["--health-listen", health])
    assert health_status(health, 5) == "SERVING"
    assert node.stop(30) == 0
    assert health_status(health, 2) == "unreachable"
