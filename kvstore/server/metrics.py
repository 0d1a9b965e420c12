"""Prometheus metrics of one process, in a registry of its own.

`RequestMetrics` is what every server has (RPC counts and latencies by status
code, read repairs); `NodeMetrics` adds the storage node's commits and
database size; `CoordinatorMetrics` adds the cache. Label children are cached:
looking one up per request would cost more than the observation itself.
"""

import functools
from collections.abc import Callable
from typing import Any

from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from kvstore.rpc.admission import Gate
from kvstore.server.cache import LruCache

# Up to 10 s: under overload, whether admitted requests stay within seconds
# is the question (a request's deadline is 5 s by default).
_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def build_version() -> str:
    try:
        return metadata.version("kvstore")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


class RequestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # The standard process_* (CPU, resident memory, open fds), python_gc_*
        # and python_info series, as on prometheus_client's default registry.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("kvstore_build", "The kvstore build this process runs",
             registry=self.registry).info({"version": build_version()})
        self._requests = Counter(
            "kvstore_requests", "RPCs handled, by method and gRPC status code",
            ["method", "code"], registry=self.registry,
        )
        self._latency = Histogram(
            "kvstore_request_duration_seconds", "RPC latency, by method and gRPC status code",
            ["method", "code"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._read_repairs = Counter(
            "kvstore_read_repairs", "Replicas brought up to date by read repair",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._refusals = Counter(
            "kvstore_auth_refusals", "Calls refused by access control, by reason "
            "(no_credentials, bad_token, not_permitted, rate_limited)", ["reason"],
            registry=self.registry)
        for reason in ("no_credentials", "bad_token", "not_permitted", "rate_limited"):
            self._refusals.labels(reason)
        self._refused = Counter(
            "kvstore_requests_refused", "KV requests refused at once by admission control "
            "(RESOURCE_EXHAUSTED, OVERLOADED), by the bound they would have passed",
            ["bound"], registry=self.registry,
        )
        self._refused_children: dict[str, Counter] = {}
        self._stream_messages = Counter(
            "kvstore_stream_messages", "Messages of the KV.Session and Replica.Stream streams, "
            "by stream and direction (sent or received)", ["stream", "direction"],
            registry=self.registry,
        )
        self._stream_items = Counter(
            "kvstore_stream_items", "Operations (or their results) those messages carried: over "
            "kvstore_stream_messages_total, operations per message", ["stream", "direction"],
            registry=self.registry,
        )
        self._stream_children: dict[tuple[str, str], tuple[Counter, Counter]] = {}

    def watch_certificates(self, expiries: Callable[[], dict[str, float]]) -> None:
        """The expiry of the CA and the certificate this process serves, as
        loaded now (a reload moves it)."""
        gauge = Gauge("kvstore_tls_certificate_expiry_timestamp_seconds",
                      "When a TLS certificate this process uses expires (Unix time), by "
                      "certificate: cert (its own) or ca", ["certificate"],
                      registry=self.registry)
        for name in ("ca", "cert"):
            gauge.labels(name).set_function(functools.partial(lambda n: expiries()[n], name))

    def observe_refusal(self, reason: str) -> None:
        self._refusals.labels(reason).inc()

    def observe_stream_message(self, stream: str, direction: str, items: int) -> None:
        """One message of `stream` sent or received, carrying `items` operations or results."""
        children = self._stream_children.get((stream, direction))
        if children is None:
            children = (self._stream_messages.labels(stream, direction),
                        self._stream_items.labels(stream, direction))
            self._stream_children[(stream, direction)] = children
        children[0].inc()
        children[1].inc(items)

    def observe_overload(self, bound: str) -> None:
        child = self._refused_children.get(bound)
        if child is None:
            child = self._refused_children[bound] = self._refused.labels(bound)
        child.inc()

    def watch_admission(self, gate: Gate) -> None:
        """The process's KV requests in flight and their bytes, read at scrape
        time from its admission gate (`kvstore.rpc.admission.Gate`)."""
        Gauge("kvstore_requests_in_flight", "KV requests admitted and not yet answered",
              registry=self.registry).set_function(lambda: gate.requests)
        Gauge("kvstore_request_bytes_in_flight", "Bytes of the KV requests in flight",
              registry=self.registry).set_function(lambda: gate.bytes)

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        children = self._children.get((method, code))
        if children is None:
            children = (self._requests.labels(method, code), self._latency.labels(method, code))
            self._children[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_read_repairs(self, replicas: int) -> None:
        self._read_repairs.inc(replicas)

    def watch_peers(self, peers: list[str], status: Callable[[], dict[str, Any]]) -> None:
        """Per-peer gauges read from the failure detector at scrape time."""
        up = Gauge("kvstore_peer_up", "1 while the failure detector holds the peer up",
                   ["node"], registry=self.registry)
        phi = Gauge("kvstore_peer_phi", "The failure detector's suspicion of the peer (phi)",
                    ["node"], registry=self.registry)
        # A peer is held up from the start, before it has ever answered; this
        # tells "answering" from "not yet convicted".
        self._peer_answers = Counter(
            "kvstore_peer_heartbeats_answered", "Heartbeats the peer has answered",
            ["node"], registry=self.registry)
        for peer in peers:
            up.labels(peer).set_function(functools.partial(lambda p: float(status()[p].up), peer))
            phi.labels(peer).set_function(functools.partial(lambda p: status()[p].phi, peer))
            self._peer_answers.labels(peer)  # 0 until the first answer
        self._peer_transitions = Counter(
            "kvstore_peer_transitions", "Peers going down or coming back up",
            ["node", "to"], registry=self.registry)

    def observe_peer_transition(self, peer: str, up: bool) -> None:
        self._peer_transitions.labels(peer, "up" if up else "down").inc()

    def observe_peer_answer(self, peer: str) -> None:
        self._peer_answers.labels(peer).inc()


class NodeMetrics(RequestMetrics):
    def __init__(self, size_bytes: Callable[[], float], key_count: Callable[[], float],
                 used_bytes: Callable[[], float] | None = None,
                 map_size: int | None = None) -> None:
        super().__init__()
        self._batch_size = Histogram(
            "kvstore_commit_batch_size", "Writes sharing one LMDB transaction and fsync",
            buckets=_BATCH_BUCKETS, registry=self.registry,
        )
        self._commit_latency = Histogram(
            "kvstore_commit_duration_seconds", "Time to commit (and fsync) one transaction",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._duplicate_writes = Counter(
            "kvstore_duplicate_writes",
            "Retried writes recognised by request id and not applied again",
            registry=self.registry,
        )
        Gauge("kvstore_db_bytes", "Bytes the LMDB database occupies",
              registry=self.registry).set_function(size_bytes)
        Gauge("kvstore_keys", "Records stored (tombstones included)",
              registry=self.registry).set_function(key_count)
        if used_bytes is not None and map_size:
            # Writes fail with RESOURCE_EXHAUSTED once the pages in use reach
            # the map: alert well before the ratio reaches 1.
            Gauge("kvstore_db_map_size_bytes", "The LMDB map size: how large the database may "
                  "grow (map_size)", registry=self.registry).set(map_size)
            Gauge("kvstore_db_map_used_ratio", "Pages in use over the map size (1: full)",
                  registry=self.registry).set_function(lambda: used_bytes() / map_size)

    def observe_commit(self, batch_size: int, seconds: float) -> None:
        self._batch_size.observe(batch_size)
        self._commit_latency.observe(seconds)

    def observe_duplicate_write(self) -> None:
        self._duplicate_writes.inc()

    def watch_hints(self, targets: list[str], pending: Callable[[str], tuple[int, int]]) -> None:
        """Hinted handoff: hints held for each other node, read at scrape time."""
        count = Gauge("kvstore_hints_pending", "Hints this node holds for a node that was down",
                      ["node"], registry=self.registry)
        size = Gauge("kvstore_hints_pending_bytes", "Bytes of the hints held for a node",
                     ["node"], registry=self.registry)
        for target in targets:
            count.labels(target).set_function(functools.partial(lambda t: pending(t)[0], target))
            size.labels(target).set_function(functools.partial(lambda t: pending(t)[1], target))
        self._hints_written = Counter(
            "kvstore_hints_written", "Hints this node stored durably for a node that was down",
            registry=self.registry)
        self._hints_replayed = Counter(
            "kvstore_hints_replayed", "Hints handed over to their node once it was back",
            registry=self.registry)

    def observe_hint_written(self) -> None:
        self._hints_written.inc()

    def observe_hints_replayed(self, count: int) -> None:
        self._hints_replayed.inc(count)

    def watch_anti_entropy(self) -> None:
        self._rounds = Counter(
            "kvstore_anti_entropy_rounds", "Anti-entropy rounds (roots compared with every "
            "other replica that is up)", registry=self.registry)
        self._exchanges = Counter(
            "kvstore_anti_entropy_exchanges", "Partitions compared below the root with another "
            "replica (their roots differed)",
            registry=self.registry)
        self._keys_repaired = Counter(
            "kvstore_anti_entropy_keys_repaired", "Keys brought into agreement by anti-entropy",
            registry=self.registry)
        self._bytes_sent = Counter(
            "kvstore_anti_entropy_bytes_sent", "Bytes of keys and states sent to other replicas "
            "by anti-entropy", registry=self.registry)
        self._tombstones_purged = Counter(
            "kvstore_tombstones_purged", "Tombstones removed once every replica held them "
            "past the grace period", registry=self.registry)

    def observe_round(self) -> None:
        self._rounds.inc()

    def observe_exchange(self) -> None:
        self._exchanges.inc()

    def observe_keys_repaired(self, count: int) -> None:
        self._keys_repaired.inc(count)

    def observe_anti_entropy_bytes(self, count: int) -> None:
        self._bytes_sent.inc(count)

    def observe_tombstone_purged(self) -> None:
        self._tombstones_purged.inc()


    def watch_raft(self, groups: Callable[[], float], led: Callable[[], float],
                   quiesced: Callable[[], float], apply_lag: Callable[[], float],
                   without_leader: Callable[[], float]) -> None:
        """Leader mode: the Raft groups of this node, read at scrape time, and
        the counters its driver and links feed."""
        for name, help_text, read in (
            ("kvstore_raft_groups", "Raft groups (partitions) this node replicates", groups),
            ("kvstore_raft_groups_led", "Raft groups this node leads", led),
            ("kvstore_raft_groups_without_leader", "Raft groups of this node that know of no "
             "leader (electing one, or cut off from it): their writes fail meanwhile",
             without_leader),
            ("kvstore_raft_groups_quiesced", "Raft groups idle and quiesced (not ticked, "
             "sending nothing)", quiesced),
            ("kvstore_raft_apply_lag_entries", "Committed entries this node has not applied "
             "yet, over all its groups", apply_lag),
        ):
            Gauge(name, help_text, registry=self.registry).set_function(read)
        self._leader_changes = Counter(
            "kvstore_raft_leader_changes", "Leader changes seen by this node's groups (a new "
            "leader learnt, or the leader lost)", registry=self.registry)
        self._proposals = Counter(
            "kvstore_raft_proposals", "Writes proposed on this node, by result (applied, "
            "version_mismatch, or the refusal's reason)", ["result"], registry=self.registry)
        for result in ("applied", "version_mismatch"):  # 0 until the first, not absent
            self._proposals.labels(result)
        self._commit_latency = Histogram(
            "kvstore_raft_commit_duration_seconds", "From a write's proposal on its leader to "
            "its answer, once committed by a majority and applied", buckets=_LATENCY_BUCKETS,
            registry=self.registry)
        self._snapshots = Counter(
            "kvstore_raft_snapshots", "Raft snapshots sent to followers behind the log, or "
            "received from a leader", ["direction"], registry=self.registry)
        self._snapshots.labels("sent")
        self._snapshots.labels("received")

    def observe_leader_change(self) -> None:
        self._leader_changes.inc()

    def observe_proposal(self, result: str, seconds: float) -> None:
        self._proposals.labels(result).inc()
        if result in ("applied", "version_mismatch"):
            self._commit_latency.observe(seconds)

    def observe_snapshot_sent(self) -> None:
        self._snapshots.labels("sent").inc()

    def observe_snapshot_received(self) -> None:
        self._snapshots.labels("received").inc()


class CoordinatorMetrics(RequestMetrics):
    def __init__(self, cache: LruCache) -> None:
        super().__init__()
        self.registry.register(_CacheCollector(cache))


class _CacheCollector(Collector):
    """The cache's counts, read at scrape time: counters for what only grows,
    gauges for its size."""

    def __init__(self, cache: LruCache) -> None:
        self._cache = cache

    def collect(self) -> list[Metric]:
        cache = self._cache
        metrics: list[Metric] = [
            CounterMetricFamily(name, help_text, value=value)
            for name, help_text, value in (
                ("kvstore_cache_hits", "Reads answered from the cache", cache.hits),
                ("kvstore_cache_misses", "Reads the cache could not answer", cache.misses),
                ("kvstore_cache_evictions", "Entries dropped to make room", cache.evictions),
                ("kvstore_cache_expirations", "Entries dropped for being older than the ttl",
                 cache.expirations),
            )
        ]
        metrics.append(GaugeMetricFamily("kvstore_cache_bytes",
                                         "Bytes the cached entries account for", cache.bytes))
        metrics.append(GaugeMetricFamily("kvstore_cache_entries", "Entries in the cache",
                                         cache.entries))
        return metrics
