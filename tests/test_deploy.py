"""The deployment files in deploy/, checked offline: the Dockerfile by
hadolint, every YAML file by yamllint, the Kubernetes manifests against the
Kubernetes schemas (kubernetes-validate, strict), and the compose file and
manifests against the cluster they describe: the members they run, TLS on
every pod and service, probes on the health-only listener, and the
certificates `kvstore certs create` makes as documented holding what each
pod and service names. No image is built here (`make container-check`
does, where podman runs); the image's entrypoint is run as a plain process
instead: a node configured only by the environment the image sets,
answering the image's health check."""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from kvstore.ops.ports import free_port
from kvstore.ops.probe import wait_serving
from kvstore.placement.membership import ClusterSpec
from kvstore.security.certificates import names
from kvstore.security.identity import NamePatterns

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
    assert docs[("PodDisruptionBudget", "kvstore-nodes")]["spec"]["maxUnavailable"] == 1


def test_every_pod_serves_tls_and_is_probed_on_the_health_only_listener() -> None:
    health = int(dict(re.findall(r"(KVSTORE_\w+)=(\S+)", dockerfile_setting("ENV")))[
        "KVSTORE_HEALTH_LISTEN"].rsplit(":", 1)[1])
    for kind, name in (("StatefulSet", "kvstore"), ("Deployment", "kvstore-coordinator")):
        pod = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}[(kind, name)][
            "spec"]["template"]["spec"]
        container = pod["containers"][0]
        flags = tls_flags(container["args"])
        assert set(flags) == {"--tls-ca", "--tls-cert", "--tls-key"}, name
        assert "--insecure" not in container["args"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == health, (name, probe)
        assert {p["containerPort"] for p in container["ports"]} >= {7101, health}


def tls_flags(command: list[str]) -> dict[str, str]:
    return {flag: command[command.index(flag) + 1] for flag in ("--tls-ca", "--tls-cert",
                                                                 "--tls-key") if flag in command}


def test_the_compose_file_runs_the_cluster_its_config_lists() -> None:
    services = compose()["services"]
    spec = ClusterSpec.from_table(
        tomllib.loads((DEPLOY / "compose" / "cluster.toml").read_text())["cluster"])
    for member in spec.members:
        service = services[member.node_id]
        assert service["command"][0] == "node"
        assert service["environment"]["KVSTORE_ID"] == member.node_id
        assert member.address == f"{member.node_id}:7101"
    assert services["c1"]["command"][0] == "coordinator"
    for name in (*(m.node_id for m in spec.members), "c1"):
        assert "--insecure" not in services[name]["command"], name
        assert set(tls_flags(services[name]["command"])) == {"--tls-ca", "--tls-cert",
                                                             "--tls-key"}, name
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
    assert set(image_env) == {"KVSTORE_LISTEN", "KVSTORE_HEALTH_LISTEN", "KVSTORE_DATA_DIR",
                              "KVSTORE_METRICS_PORT"}
    port, health, metrics = free_port(), free_port(), free_port()
    # The image's settings, moved to this test's loopback ports and scratch dir.
    env = {**os.environ, "KVSTORE_ID": "n1", "KVSTORE_LISTEN": f"127.0.0.1:{port}",
           "KVSTORE_HEALTH_LISTEN": f"127.0.0.1:{health}",
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
        assert image_env["KVSTORE_HEALTH_LISTEN"] == "0.0.0.0:7102"
        check[check.index("127.0.0.1:7102")] = f"127.0.0.1:{health}"  # the health listener
        assert subprocess.run(check, capture_output=True, timeout=30).returncode == 0
    finally:
        node.terminate()
        node.wait(30)
    assert node.returncode == 0
    assert (tmp_path / "data" / "data.mdb").exists()


# -- certificates: what the Secrets and the compose volume hold -------------------------


def _run_kvstore(words: list[str], cwd: Path) -> None:
    assert words[0] == "kvstore"
    run = subprocess.run([sys.executable, "-m", "kvstore", *words[1:]], cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def _served_names(cert: Path) -> set[str]:
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    san = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def _kind(cert: Path) -> str:
    return NamePatterns().identity(names(cert.read_bytes())).kind


def readme_commands() -> list[list[str]]:
    """The commands of deploy/README.md's block that makes the Secrets."""
    text = (DEPLOY / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
                 if "kubectl create secret" in b)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
            if line.strip()]


@pytest.mark.process
@pytest.mark.timeout(120)
def test_the_secrets_made_as_documented_hold_what_each_pod_names(tmp_path: Path) -> None:
    secrets: dict[str, set[str]] = {}
    for command in readme_commands():
        if command[0] == "kvstore":
            _run_kvstore(command, tmp_path)
            continue
        assert command[:4] == ["kubectl", "create", "secret", "generic"]
        files = [w.split("=", 1)[1] for w in command[5:] if w.startswith("--from-file=")]
        assert all((tmp_path / f).is_file() for f in files), files
        secrets[command[4]] = {Path(f).name for f in files}
    assert not any(name.startswith(("app", "operator")) or name == "ca-key.pem"
                   for held in secrets.values() for name in held)  # out of the cluster
    docs = {(d["kind"], d["metadata"]["name"]): d for d in manifests()}
    spec = ClusterSpec.from_table(tomllib.loads(
        docs[("ConfigMap", "kvstore-cluster")]["data"]["cluster.toml"])["cluster"])
    nodes = docs[("StatefulSet", "kvstore")]["spec"]
    coordinators = docs[("Deployment", "kvstore-coordinator")]["spec"]
    pods = [(f"kvstore-{i}", nodes["template"]["spec"]) for i in range(nodes["replicas"])]
    pods.append(("any coordinator", coordinators["template"]["spec"]))
    for pod_name, pod in pods:
        container = pod["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")["mountPath"]
        secret = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]["secretName"]
        for flag, path in tls_flags(container["args"]).items():
            path = path.replace("$(KVSTORE_ID)", pod_name)
            assert Path(path).parent == Path(mount), (pod_name, flag)
            assert Path(path).name in secrets[secret], (pod_name, flag, secret)
        cert = tmp_path / "tls" / Path(tls_flags(container["args"])["--tls-cert"].replace(
            "$(KVSTORE_ID)", pod_name)).name
        assert _kind(cert) == "peer", pod_name
    for member in spec.members:  # each node serves the name its peers dial
        host = member.address.rsplit(":", 1)[0]
        assert host in _served_names(tmp_path / "tls" / f"{member.node_id}.pem")
    service = docs[("Service", "kvstore-coordinator")]["metadata"]["name"]
    assert service in _served_names(tmp_path / "tls" / "coordinator.pem")
    assert (_kind(tmp_path / "tls" / "app.pem"), _kind(tmp_path / "tls" / "operator.pem")) == (
        "client", "admin")


@pytest.mark.process
@pytest.mark.timeout(120)
def test_the_compose_certs_service_makes_what_every_service_names(tmp_path: Path) -> None:
    services = compose()["services"]
    certs = services["certs"]
    out = certs["command"][certs["command"].index("--out") + 1]
    assert f"tls:{out}" in certs["volumes"]
    # The service's command, with its volumes' paths moved under tmp_path.
    command = [w.replace(out, str(tmp_path / "tls")).replace("/data", str(tmp_path / "ca"))
               for w in certs["command"]]
    _run_kvstore(["kvstore", *command], tmp_path)
    spec = ClusterSpec.from_table(
        tomllib.loads((DEPLOY / "compose" / "cluster.toml").read_text())["cluster"])
    for name in (*(m.node_id for m in spec.members), "c1"):
        service = services[name]
        assert f"tls:{out}:ro" in service["volumes"], name
        assert service["depends_on"]["certs"]["condition"] == "service_completed_successfully"
        for flag, path in tls_flags(service["command"]).items():
            assert (tmp_path / "tls" / Path(path).relative_to(out)).is_file(), (name, flag)
        cert = tmp_path / "tls" / Path(tls_flags(service["command"])["--tls-cert"]).name
        assert _kind(cert) == "peer" and name in _served_names(cert), name
    assert not (tmp_path / "tls" / "private").exists()  # the CA's key: in the `ca` volume
    assert (tmp_path / "ca" / "ca-key.pem").is_file()
    assert _kind(tmp_path / "tls" / "client.pem") == "client"
