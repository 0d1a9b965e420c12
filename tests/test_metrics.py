"""The metrics' shapes: counters are counters, one label names a node, and
the standard process series and build info are there (no process started:
the registries are rendered in place)."""

import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kvstore.health.failure_detector import NodeStatus
from kvstore.server.cache import LruCache
from kvstore.server.metrics import CoordinatorMetrics, NodeMetrics, build_version


def families(registry: object) -> dict[str, object]:
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def node_metrics() -> NodeMetrics:
    metrics = NodeMetrics(lambda: 4096, lambda: 3, lambda: 1024, 8192)
    status = {"n2": NodeStatus(up=True, phi=0.5)}
    metrics.watch_peers(["n2"], lambda: status)
    metrics.watch_hints(["n2"], lambda node: (2, 200))
    metrics.watch_anti_entropy()
    metrics.observe_peer_transition("n2", up=False)
    return metrics


def test_a_label_that_names_another_node_is_node_everywhere() -> None:
    found = families(node_metrics().registry)
    for name in ("kvstore_peer_up", "kvstore_peer_phi", "kvstore_peer_heartbeats_answered",
                 "kvstore_peer_transitions", "kvstore_hints_pending",
                 "kvstore_hints_pending_bytes"):
        samples = found[name].samples
        assert samples and all(sample.labels.get("node") == "n2" for sample in samples), name
        assert not any({"peer", "target"} & set(sample.labels) for sample in samples), name


def test_the_map_gauges_say_how_full_the_store_is() -> None:
    found = families(node_metrics().registry)
    assert found["kvstore_db_map_size_bytes"].samples[0].value == 8192
    assert found["kvstore_db_map_used_ratio"].samples[0].value == 0.125


def test_the_cache_counts_are_counters_and_its_size_gauges() -> None:
    cache = LruCache(1 << 20, 60.0, time.monotonic)
    cache.put(b"k", b"v", 10)
    cache.get(b"k")
    cache.get(b"missing")
    found = families(CoordinatorMetrics(cache).registry)
    kinds = {name: found[name].type for name in found
             if name.startswith("kvstore_cache")}
    assert kinds == {"kvstore_cache_hits": "counter", "kvstore_cache_misses": "counter",
                     "kvstore_cache_evictions": "counter", "kvstore_cache_expirations": "counter",
                     "kvstore_cache_bytes": "gauge", "kvstore_cache_entries": "gauge"}
    hits = found["kvstore_cache_hits"].samples
    assert [(s.name, s.value) for s in hits] == [("kvstore_cache_hits_total", 1.0)]


def test_every_process_exports_its_build_and_process_series() -> None:
    for registry in (node_metrics().registry,
                     CoordinatorMetrics(LruCache(1, 1.0, time.monotonic)).registry):
        found = families(registry)
        build = found["kvstore_build_info"].samples
        assert build[0].labels == {"version": build_version()}
        assert {"process_resident_memory_bytes", "process_cpu_seconds_total",
                "python_info"} <= {s.name for f in found.values()
                                   for s in f.samples}
