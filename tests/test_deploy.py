"""The deployment files in deploy/, checked offline: the Dockerfile by
hadolint, every YAML file by yamllint, the Kubernetes manifests against the
Kubernetes schemas (kubernetes-validate, strict), and the compose file and
manifests against the cluster they describe. No image is built here (no
container engine runs on the development machines); the image's
entrypoint is run as a plain process instead: a node configured only by the
environment the image sets, answering the image's health check."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvstore.ops.ports import free_port
from kvstore.ops.probe import wait_serving
from kvstore.placement.membership import ClusterSpec

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
TOOLS = Path(sys.executable).parent  # the venv's hadolint, yamllint, kubernetes-validate


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TOOLS / name), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "kvstore.yaml").read_text())
            if doc]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    return loaded


@pytest.mark.process
def test_hadolint_passes_the_dockerfile() -> None:
    run = tool("hadolint", "deploy/Dockerfile")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.process
def test_shellcheck_passes_the_shell_scripts() -> None:
    run = tool("shellcheck", "deploy/container-check", ".ci/run")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.process
def test_yamllint_passes_every_yaml_file_of_deploy() -> None:
    run = tool("yamllint", "-c", "deploy/.yamllint", "--strict", "deploy/")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.process
def test_the_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    run = tool("kubernetes-validate", "--strict", "deploy/kubernetes/kvstore.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("passed") == len(manifests())


def test_the_statefulset_pods_are_the_clusters_members() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}
    config = docs[("ConfigMap", "kvstore-cluster")]["data"]["cluster.toml"]
    spec = ClusterSpec.from_table(tomllib.loads(config)["cluster"])
    nodes = docs[("StatefulSet", "kvstore")]["spec"]
    service = nodes["serviceName"]
    assert docs[("Service", service)]["spec"]["clusterIP"] == "None"
    assert [(m.node_id, m.address) for m in spec.members] == [
        (f"kvstore-{i}", f"kvstore-{i}.{service}:7101") for i in range(nodes["replicas"])]
    container = nodes["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["KVSTORE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["args"] == ["node", "--insecure"]  # plaintext, in plain sight
    assert container["readinessProbe"]["grpc"]["port"] == 7101
    assert docs[("PodDisruptionBudget", "kvstore-nodes")]["spec"]["maxUnavailable"] == 1


def test_the_compose_file_runs_the_cluster_its_config_lists() -> None:
    services = compose()["services"]
    spec = ClusterSpec.from_table(
        tomllib.loads((DEPLOY / "compose" / "cluster.toml").read_text())["cluster"])
    for member in spec.members:
        service = services[member.node_id]
        assert service["command"] == ["node", "--insecure"]  # plaintext, in plain sight
        assert service["environment"]["KVSTORE_ID"] == member.node_id
        assert member.address == f"{member.node_id}:7101"
    assert services["c1"]["command"] == ["coordinator", "--insecure"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is missing"


def dockerfile_setting(instruction: str) -> str:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.search(rf"^{instruction} (.+)$", text, re.MULTILINE)
    assert found is not None, instruction
    return found.group(1)


@pytest.mark.process
@pytest.mark.timeout(90)
def test_the_images_entrypoint_runs_a_node_from_the_environment_and_passes_its_health_check(
        tmp_path: Path) -> None:
    env_line = dockerfile_setting("ENV")
    image_env = dict(re.findall(r"(KVSTORE_\w+)=(\S+)", env_line))
    assert set(image_env) == {"KVSTORE_LISTEN", "KVSTORE_DATA_DIR", "KVSTORE_METRICS_PORT"}
    port, metrics = free_port(), free_port()
    # The image's settings, moved to this test's loopback ports and scratch dir.
    env = {**os.environ, "KVSTORE_ID": "n1", "KVSTORE_LISTEN": f"127.0.0.1:{port}",
           "KVSTORE_DATA_DIR": str(tmp_path / "data"), "KVSTORE_METRICS_PORT": str(metrics)}
    entrypoint = json.loads(dockerfile_setting("ENTRYPOINT"))
    command = json.loads(dockerfile_setting("CMD"))
    assert entrypoint == ["kvstore"] and command == ["node", "--insecure"]
    with open(tmp_path / "n1.log", "wb") as log:
        node = subprocess.Popen([sys.executable, "-m", "kvstore", *command], env=env,
                                stdout=log, stderr=log)
    try:
        wait_serving(f"127.0.0.1:{port}", 30, alive=lambda: node.poll() is None)
        check = json.loads(dockerfile_setting("HEALTHCHECK").split(" CMD ", 1)[1])
        assert check[:2] == ["kvstore", "health"]
        check = [sys.executable, "-m", "kvstore", *check[1:]]
        check[check.index("127.0.0.1:7101")] = f"127.0.0.1:{port}"
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
    finally:
        node.terminate()
        node.wait(30)
    assert node.returncode == 0
    assert (tmp_path / "data" / "data.mdb").exists()
