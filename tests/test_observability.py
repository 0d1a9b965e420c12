"""What operators watch: the Grafana dashboard, the Prometheus alert rules
and local scrape config in deploy/, and a real Prometheus scraping a local
cluster through the targets file `cluster up` writes.

The Prometheus tests need Debian's `prometheus` package (prometheus and
promtool on PATH). Without it they skip, saying so, unless
KVSTORE_REQUIRE_PROMETHEUS=1 (as `.ci/run` sets, after installing it), when
a missing binary fails them.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kvstore.health.failure_detector import NodeStatus
from kvstore.ops.cluster_layout import prometheus_targets
from kvstore.ops.ports import free_port
from kvstore.ops.processes import launch
from kvstore.server.cache import LruCache
from kvstore.server.metrics import CoordinatorMetrics, NodeMetrics
# `clusters` is test_cluster_up's fixture, shared by importing it.
from tests.test_cluster_up import ClusterUp, clusters, free_base_port, wait_for  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "kvstore.json"
PROMETHEUS = DEPLOY / "prometheus"


def dashboard_builder() -> Any:
    spec = importlib.util.spec_from_file_location("dashboard", DEPLOY / "grafana" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard_exprs() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in document["panels"]
            for target in panel.get("targets", [])]


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("KVSTORE_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{name} is not installed (apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus to run this test)")
    return found


# -- the dashboard --------------------------------------------------------------------


def test_the_dashboard_file_is_what_its_builder_writes() -> None:
    assert json.loads(DASHBOARD.read_text()) == dashboard_builder().dashboard_json(), (
        "regenerate: .venv/bin/python deploy/grafana/dashboard.py > deploy/grafana/kvstore.json")


def test_grafanas_dashboard_model_reads_the_file_back_whole() -> None:
    document = json.loads(DASHBOARD.read_text())
    again = json.loads(JSONEncoder(sort_keys=True).encode(Dashboard.from_json(document)))
    assert again == document  # no key the schema's model does not know
    ids = [panel["id"] for panel in document["panels"]]
    assert len(set(ids)) == len(ids) and all(ids)
    for panel in document["panels"]:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert all(refs) and len(set(refs)) == len(refs), panel["title"]


def exported_series() -> set[str]:
    """Every series name a node's and a coordinator's registry can export."""
    node = NodeMetrics(lambda: 1, lambda: 1, lambda: 1, 2)
    node.watch_peers(["n2"], lambda: {"n2": NodeStatus(up=True, phi=0.0)})
    node.watch_hints(["n2"], lambda target: (0, 0))
    node.watch_anti_entropy()
    node.observe_peer_transition("n2", up=True)
    node.observe_request("Get", "OK", 0.001)
    node.observe_commit(1, 0.001)
    coordinator = CoordinatorMetrics(LruCache(1, 1.0, time.monotonic))
    names = {"up"}
    for registry in (node.registry, coordinator.registry):
        text = generate_latest(registry).decode()
        names |= {sample.name for family in text_string_to_metric_families(text)
                  for sample in family.samples}
    return names


def test_every_dashboard_query_names_only_series_kvstore_exports() -> None:
    exported = exported_series()
    words = {"sum", "by", "rate", "histogram_quantile", "count", "min", "max", "or", "vector",
             "le", "method", "code", "member", "node", "job", "kvstore"}
    for expr in dashboard_exprs():
        names = set(re.findall(r"[a-z_][a-z0-9_]*", re.sub(r'"[^"]*"|\[[^]]*\]', "", expr)))
        unknown = names - words - exported
        assert not unknown, f"{expr}: {sorted(unknown)}"


def test_the_targets_file_lists_every_process_with_its_id_and_role() -> None:
    document = {"processes": [
        {"role": "node", "id": "n1", "address": "127.0.0.1:7101", "metrics": "127.0.0.1:9101"},
        {"role": "coordinator", "id": "c1", "address": "127.0.0.1:7201",
         "metrics": "127.0.0.1:9201"}]}
    assert prometheus_targets(document) == [
        {"targets": ["127.0.0.1:9101"], "labels": {"member": "n1", "role": "node"}},
        {"targets": ["127.0.0.1:9201"], "labels": {"member": "c1", "role": "coordinator"}}]


# -- Prometheus (process tests) ---------------------------------------------------------


@pytest.mark.process
@pytest.mark.timeout(60)
def test_promtool_accepts_the_rules_their_unit_tests_and_the_scrape_config() -> None:
    promtool = binary("promtool")
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                 ["check", "config", "local.yml"]):
        run = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                             timeout=30)
        assert run.returncode == 0, f"promtool {' '.join(args)}:\n{run.stdout}{run.stderr}"


@pytest.mark.process
@pytest.mark.timeout(60)
def test_every_dashboard_query_is_promql_prometheus_accepts(tmp_path: Path) -> None:
    promtool = binary("promtool")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr}
        for i, expr in enumerate(dashboard_exprs())]}]}
    (tmp_path / "dashboard.yml").write_text(json.dumps(rules))  # JSON is YAML
    run = subprocess.run([promtool, "check", "rules", "dashboard.yml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.process
@pytest.mark.timeout(120)
def test_prometheus_scrapes_every_process_of_a_local_cluster(
        tmp_path: Path, clusters: Callable[..., ClusterUp]) -> None:  # noqa: F811 (fixture)
    prometheus = binary("prometheus")
    # The shipped config, unchanged, at the same place relative to the data
    # dir it expects (deploy/prometheus/ -> ../../data).
    config_dir = tmp_path / "deploy" / "prometheus"
    config_dir.mkdir(parents=True)
    for name in ("local.yml", "alerts.yml"):
        shutil.copy(PROMETHEUS / name, config_dir / name)
    cluster = clusters(tmp_path / "data", "--nodes", "3", "--coordinators", "1",
                       "--base-port", str(free_base_port()))
    document = cluster.wait_up()
    targets = json.loads((tmp_path / "data" / "prometheus" / "targets.json").read_text())
    assert sorted(t["labels"]["member"] for t in targets) == ["c1", "n1", "n2", "n3"]
    port = free_port()
    server = launch([prometheus, f"--config.file={config_dir / 'local.yml'}",
                     f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{port}"], tmp_path / "prometheus.log")
    try:
        def all_up() -> list[dict[str, Any]] | None:
            assert server.exit_code() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/v1/targets", timeout=2) as answer:
                    active = json.load(answer)["data"]["activeTargets"]
            except OSError:
                return None
            if len(active) == len(document["processes"]) and all(
                    t["health"] == "up" for t in active):
                return active
            return None

        active = wait_for(all_up, 60, "every target up in Prometheus")
        assert {t["labels"]["member"]: t["labels"]["role"] for t in active} == {
            "n1": "node", "n2": "node", "n3": "node", "c1": "coordinator"}
        assert {t["scrapeUrl"].split("/")[2] for t in active} == {
            p["metrics"] for p in document["processes"]}
    finally:
        server.stop(10)
