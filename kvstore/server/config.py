"""Typed configuration of a storage node, with defaults and validation.

One frozen object; a TOML file (`--config FILE`) and command-line flags fill it,
flags winning. Nothing else in the code reads the environment or globals.
"""

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from kvclient import framing
from kvstore.placement.membership import ClusterSpec, MembershipError
from kvstore.rpc.admission import AdmissionLimits
from kvstore.placement.ring import DEFAULT_PARTITIONS, validate_partition_count
from kvstore.security.settings import FLAGS as SECURITY_FLAGS
from kvstore.security.settings import (Security, SecuritySettingError, exposure_refusal,
                                       load_security)
from kvstore.server.tracing import FLAGS as TRACING_FLAGS
from kvstore.server.tracing import TracingSettingError, TracingSettings

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# gRPC frames carry a batch of values plus protobuf overhead; leave room for it.
_MESSAGE_OVERHEAD_BYTES = 64 * KIB


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the setting."""


@dataclass(frozen=True)
class NodeConfig:
    node_id: str
    listen: str = "127.0.0.1:7101"
    # Where clients and peers reach it, when that is not where it listens
    # (0.0.0.0, NAT, a Kubernetes Service): its [cluster] member address when
    # it has one, else this, else `listen`.
    advertise: str | None = None
    data_dir: Path = Path("data/n1")
    metrics_port: int = 0  # 0: no metrics HTTP server
    # A second, plaintext gRPC listener serving only grpc.health.v1 (None:
    # none), for probes that cannot present certificates (Kubernetes').
    health_listen: str | None = None
    partitions: int = DEFAULT_PARTITIONS
    map_size: int = 1 * GIB  # LMDB map size: the most the database can grow to
    durability: str = "sync"  # "sync": fsync every commit; "nosync": unsafe, OS decides
    max_key_bytes: int = 1 * KIB
    max_value_bytes: int = 1 * MIB
    max_batch_items: int = 1000
    max_commit_batch: int = 1024  # writes sharing one LMDB transaction at most
    # Under concurrent load, how long a commit waits for more writes to share
    # its fsync (0: never wait). Adds at most this much write latency.
    commit_delay_ms: float = 1.0
    request_id_ttl_seconds: float = 600.0  # how long a retried write is recognised
    shutdown_grace_seconds: float = 10.0
    request_timeout_seconds: float = 5.0  # a client request without a deadline gets this
    replica_timeout_seconds: float = 2.0  # one call to another replica
    # Admission control: KV requests (and bytes of them) in flight at once,
    # in the process and on one KV.Session stream; one more is refused at
    # once with RESOURCE_EXHAUSTED OVERLOADED and a retry delay.
    max_requests_in_flight: int = AdmissionLimits.max_requests
    max_request_bytes_in_flight: int = AdmissionLimits.max_bytes
    session_max_in_flight: int = AdmissionLimits.session_max_requests
    session_max_bytes_in_flight: int = AdmissionLimits.session_max_bytes
    overload_retry_after_ms: float = AdmissionLimits.retry_after * 1000
    # What one message of a stream carries at most, on every hop this process
    # sends (KV.Session answers, Replica.Stream operations and answers, hint
    # replay): one item larger than the bytes goes alone, so a value at the
    # size limit always goes through.
    message_batch_bytes: int = framing.MESSAGE_BUDGET_BYTES
    message_batch_operations: int = framing.MESSAGE_MAX_ITEMS
    # Bytes of another process's replica operations (per Replica.Stream) this
    # node holds while running them; past it, it reads no more of that stream.
    replica_stream_max_bytes_in_flight: int = 64 * MIB
    # Hinted handoff: hints this node keeps for one node that is down, at most
    # (beyond either bound, it refuses more: back-pressure), and how fast it
    # hands them over when that node is back.
    max_hints_per_target: int = 10_000
    max_hint_bytes_per_target: int = 64 * MIB
    hint_replay_rate_per_second: float = 500.0
    # Merkle anti-entropy: a round (the roots of every shared partition
    # compared with each peer) every interval; keys repaired per second at most.
    anti_entropy_interval_seconds: float = 1.0
    anti_entropy_keys_per_second: float = 1000.0
    # A tombstone is purged once every replica holds it and it is this old.
    tombstone_grace_seconds: float = 3600.0
    # Leader mode ([cluster] mode = "leader"): the Raft tick; the election
    # timeout in ticks (each follower's is random in [E, 2E) ticks, and a
    # leader that heard from no majority for E ticks steps down); how long a
    # write or linearizable read waits for a leader and a quorum before it
    # fails UNAVAILABLE (on the minority side of a partition, say).
    raft_tick_ms: float = 100.0
    raft_election_ticks: int = 10
    leader_timeout_seconds: float = 2.0
    # Leader mode's compaction: a group snapshots its state once it applied
    # this many entries since its last snapshot, and keeps this many entries
    # behind it for followers just behind (one further behind gets the
    # snapshot).
    raft_snapshot_every: int = 10_000
    raft_keep_entries: int = 1_000
    # The cluster this node belongs to ([cluster] in the config file); None: a
    # one-node cluster of itself (N=1).
    cluster: ClusterSpec | None = None
    security: Security = Security()  # [tls], [auth] and `insecure`
    reflection: bool = True  # serve gRPC server reflection
    tracing: TracingSettings = TracingSettings()  # [tracing]: OpenTelemetry spans, off by default

    def __post_init__(self) -> None:
        _check_server_settings(self.node_id, self.listen, self.metrics_port,
                               self.request_timeout_seconds, self.replica_timeout_seconds,
                               self.security, self.health_listen,
                               has_peers=self.cluster is not None and len(self.cluster.members) > 1)
        _admission(self)  # refuses a bad admission setting by name
        _check_batch_bounds(self.message_batch_bytes, self.message_batch_operations,
                            self.max_message_bytes)
        if not 1 <= self.replica_stream_max_bytes_in_flight <= 1 << 40:
            raise ConfigError("replica_stream_max_bytes_in_flight must be 1..1099511627776, got "
                              f"{self.replica_stream_max_bytes_in_flight}")
        if self.max_hints_per_target < 0 or self.max_hint_bytes_per_target < 0:
            raise ConfigError("max_hints_per_target and max_hint_bytes_per_target must be >= 0")
        if not 0 < self.hint_replay_rate_per_second <= 1_000_000:
            raise ConfigError("hint_replay_rate_per_second must be in (0, 1000000]")
        if not 0.01 <= self.anti_entropy_interval_seconds <= 3600:
            raise ConfigError("anti_entropy_interval_seconds must be in [0.01, 3600]")
        if not 0 <= self.tombstone_grace_seconds <= 365 * 86400:
            raise ConfigError("tombstone_grace_seconds must be in [0, 31536000]")
        if not 1 <= self.anti_entropy_keys_per_second <= 1_000_000:
            raise ConfigError("anti_entropy_keys_per_second must be in [1, 1000000]")
        if not 1 <= self.raft_tick_ms <= 10_000:
            raise ConfigError(f"raft_tick_ms must be in [1, 10000], got {self.raft_tick_ms}")
        if not 2 <= self.raft_election_ticks <= 1000:
            raise ConfigError(
                f"raft_election_ticks must be in [2, 1000], got {self.raft_election_ticks}")
        _check_leader_timeout(self.leader_timeout_seconds)
        if not 1 <= self.raft_snapshot_every <= 1 << 40:
            raise ConfigError(
                f"raft_snapshot_every must be at least 1, got {self.raft_snapshot_every}")
        if not 0 <= self.raft_keep_entries <= 1 << 40:
            raise ConfigError(
                f"raft_keep_entries must be at least 0, got {self.raft_keep_entries}")
        if self.advertise is not None:
            parse_address(self.advertise, "advertise")
        if self.cluster is not None:
            if self.node_id not in {m.node_id for m in self.cluster.members}:
                raise ConfigError(f"node {self.node_id!r} is not among the [cluster] members")
            listed = self.cluster.member(self.node_id).address
            if self.advertise is not None and self.advertise != listed:
                raise ConfigError(
                    f"advertise={self.advertise!r} disagrees with the address of node "
                    f"{self.node_id!r} in [cluster], {listed!r}: peers and clients use that one; "
                    "give the same address, or leave advertise out")
            if self.partitions not in (DEFAULT_PARTITIONS, self.cluster.partitions):
                raise ConfigError(
                    f"partitions={self.partitions} disagrees with the cluster's "
                    f"{self.cluster.partitions}; set it in [cluster] only"
                )
            object.__setattr__(self, "partitions", self.cluster.partitions)
        try:
            validate_partition_count(self.partitions)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.map_size < 1 * MIB:
            raise ConfigError(f"map_size must be at least 1 MiB, got {self.map_size} bytes")
        if self.durability not in ("sync", "nosync"):
            raise ConfigError(f"durability must be 'sync' or 'nosync', got {self.durability!r}")
        if not 1 <= self.max_key_bytes <= 64 * KIB:
            raise ConfigError(f"max_key_bytes must be 1..65536, got {self.max_key_bytes}")
        if not 1 <= self.max_value_bytes <= 256 * MIB:
            raise ConfigError(f"max_value_bytes must be 1..268435456, got {self.max_value_bytes}")
        if self.max_batch_items < 1:
            raise ConfigError(f"max_batch_items must be at least 1, got {self.max_batch_items}")
        if not 0 <= self.commit_delay_ms <= 100:
            raise ConfigError(f"commit_delay_ms must be 0..100, got {self.commit_delay_ms}")
        if self.max_commit_batch < 1:
            raise ConfigError(f"max_commit_batch must be at least 1, got {self.max_commit_batch}")

    @property
    def max_message_bytes(self) -> int:
        return _max_message_bytes(self.max_key_bytes, self.max_value_bytes)

    @property
    def admission(self) -> AdmissionLimits:
        return _admission(self)

    @property
    def cluster_spec(self) -> ClusterSpec:
        if self.cluster is not None:
            return self.cluster
        return ClusterSpec.single(self.node_id, self.advertise or self.listen, self.partitions)

    @property
    def advertised_address(self) -> str:
        """Where clients and peers reach this node."""
        return self.cluster_spec.member(self.node_id).address


@dataclass(frozen=True)
class CoordinatorConfig:
    """A coordinator process: routes requests to the cluster, caches reads."""

    coordinator_id: str
    cluster: ClusterSpec
    listen: str = "127.0.0.1:7201"
    advertise: str | None = None  # where clients reach it, if not `listen` (as NodeConfig's)
    metrics_port: int = 0
    health_listen: str | None = None  # as NodeConfig's
    cache_bytes: int = 64 * MIB  # 0 disables the cache
    cache_ttl_ms: float = 1000.0  # a cached answer is never served older than this
    max_key_bytes: int = 1 * KIB
    max_value_bytes: int = 1 * MIB
    max_batch_items: int = 1000
    shutdown_grace_seconds: float = 10.0
    request_timeout_seconds: float = 5.0
    replica_timeout_seconds: float = 2.0
    max_requests_in_flight: int = AdmissionLimits.max_requests  # as NodeConfig's
    max_request_bytes_in_flight: int = AdmissionLimits.max_bytes
    session_max_in_flight: int = AdmissionLimits.session_max_requests
    session_max_bytes_in_flight: int = AdmissionLimits.session_max_bytes
    overload_retry_after_ms: float = AdmissionLimits.retry_after * 1000
    message_batch_bytes: int = framing.MESSAGE_BUDGET_BYTES  # as NodeConfig's
    message_batch_operations: int = framing.MESSAGE_MAX_ITEMS
    security: Security = Security()  # [tls], [auth] and `insecure`
    reflection: bool = True
    leader_timeout_seconds: float = 2.0  # leader mode: as NodeConfig's
    tracing: TracingSettings = TracingSettings()  # as NodeConfig's

    def __post_init__(self) -> None:
        _check_server_settings(self.coordinator_id, self.listen, self.metrics_port,
                               self.request_timeout_seconds, self.replica_timeout_seconds,
                               self.security, self.health_listen, has_peers=True)
        _check_leader_timeout(self.leader_timeout_seconds)
        if self.advertise is not None:
            parse_address(self.advertise, "advertise")
        _admission(self)  # refuses a bad admission setting by name
        _check_batch_bounds(self.message_batch_bytes, self.message_batch_operations,
                            self.max_message_bytes)
        if self.cache_bytes < 0:
            raise ConfigError(f"cache_bytes must be at least 0, got {self.cache_bytes}")
        if not 0 <= self.cache_ttl_ms <= 3_600_000:
            raise ConfigError(f"cache_ttl_ms must be 0..3600000, got {self.cache_ttl_ms}")

    @property
    def max_message_bytes(self) -> int:
        return _max_message_bytes(self.max_key_bytes, self.max_value_bytes)

    @property
    def advertised_address(self) -> str:
        """Where clients reach this coordinator."""
        return self.advertise or self.listen

    @property
    def admission(self) -> AdmissionLimits:
        return _admission(self)


def _admission(config: "NodeConfig | CoordinatorConfig") -> AdmissionLimits:
    """The admission settings of a process, checked."""
    for name in ("max_requests_in_flight", "max_request_bytes_in_flight",
                 "session_max_in_flight", "session_max_bytes_in_flight"):
        value = getattr(config, name)
        if not 1 <= value <= 1 << 40:
            raise ConfigError(f"{name} must be 1..{1 << 40}, got {value}")
    if not 0 <= config.overload_retry_after_ms <= 60_000:
        raise ConfigError(f"overload_retry_after_ms must be 0..60000, "
                          f"got {config.overload_retry_after_ms}")
    return AdmissionLimits(
        max_requests=config.max_requests_in_flight,
        max_bytes=config.max_request_bytes_in_flight,
        session_max_requests=config.session_max_in_flight,
        session_max_bytes=config.session_max_bytes_in_flight,
        retry_after=config.overload_retry_after_ms / 1000)


def _max_message_bytes(max_key_bytes: int, max_value_bytes: int) -> int:
    """gRPC message limit: room for one maximum-size key and value, and at
    least 4 MiB (gRPC's default) so batches of small items fit."""
    return max(4 * MIB, max_key_bytes + max_value_bytes + _MESSAGE_OVERHEAD_BYTES)


def _check_server_settings(process_id: str, listen: str, metrics_port: int,
                           request_timeout: float, replica_timeout: float,
                           security: Security, health_listen: str | None, *,
                           has_peers: bool) -> None:
    if not process_id or len(process_id) > 64 or not process_id.isprintable():
        raise ConfigError("id must be 1..64 printable characters")
    host, port = parse_address(listen, "listen")
    refusal = exposure_refusal(host, security, has_peers)
    if refusal is not None:
        raise ConfigError(refusal)
    # Plaintext beyond loopback is fine there: it serves health and nothing else.
    if health_listen is not None and parse_address(health_listen, "health_listen")[1] == port:
        raise ConfigError(f"health_listen={health_listen!r} must be another port than "
                          f"listen={listen!r}: it serves the health service alone")
    if not 0 <= metrics_port <= 65535:
        raise ConfigError(f"metrics_port must be 0..65535, got {metrics_port}")
    if not 0 < request_timeout <= 3600:
        raise ConfigError(f"request_timeout_seconds must be in (0, 3600], got {request_timeout}")
    if not 0 < replica_timeout <= 3600:
        raise ConfigError(f"replica_timeout_seconds must be in (0, 3600], got {replica_timeout}")


def _check_batch_bounds(batch_bytes: int, batch_operations: int, max_message_bytes: int) -> None:
    # Half the message limit at most: a batch's framing and the last item
    # that may join it stay within what any peer with default limits accepts.
    if not 4 * KIB <= batch_bytes <= max_message_bytes // 2:
        raise ConfigError(f"message_batch_bytes must be in [4096, {max_message_bytes // 2}] "
                          f"(half the gRPC message limit), got {batch_bytes}")
    if not 1 <= batch_operations <= 65536:
        raise ConfigError(f"message_batch_operations must be 1..65536, got {batch_operations}")


def _check_leader_timeout(seconds: float) -> None:
    if not 0 < seconds <= 3600:
        raise ConfigError(f"leader_timeout_seconds must be in (0, 3600], got {seconds}")


def parse_address(address: str, setting: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"{setting} must be HOST:PORT with a port 1..65535, got {address!r}")
    return host.strip("[]"), int(port)


def load_node_config(config_file: Path | None, overrides: dict[str, Any]) -> NodeConfig:
    """Defaults, then the file's [node] and [cluster] tables, then given flags."""
    values = _load(NodeConfig, "node", config_file, overrides)
    if "node_id" not in values:
        raise ConfigError("a node needs an id (--id or node_id in the config file)")
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    return _build(NodeConfig, values)


def load_coordinator_config(config_file: Path | None,
                            overrides: dict[str, Any]) -> CoordinatorConfig:
    """Defaults, then the file's [coordinator] and [cluster] tables, then given flags."""
    values = _load(CoordinatorConfig, "coordinator", config_file, overrides)
    if "coordinator_id" not in values:
        raise ConfigError("a coordinator needs an id (--id or coordinator_id in the config file)")
    if "cluster" not in values:
        raise ConfigError(
            "a coordinator needs the cluster's members: a [cluster] table in --config")
    return _build(CoordinatorConfig, values)


def _load(kind: type, table: str, config_file: Path | None,
          overrides: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    document: dict[str, Any] = {}
    if config_file is not None:
        try:
            document = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        unknown_tables = sorted(set(document) - {"node", "coordinator", "cluster", "tls", "auth",
                                                 "tracing"})
        if unknown_tables:
            raise ConfigError(f"unknown table(s) in {config_file}: {', '.join(unknown_tables)}; "
                              "expected [node], [coordinator], [cluster], [tls], [auth] and "
                              "[tracing]")
        values.update(document.get(table, {}))
        if "cluster" in document:
            try:
                values["cluster"] = ClusterSpec.from_table(document["cluster"])
            except (MembershipError, ValueError, TypeError) as exc:
                raise ConfigError(f"[cluster] in {config_file}: {exc}") from exc
    values.update({k: v for k, v in overrides.items()
                   if v is not None and k not in SECURITY_FLAGS and k not in TRACING_FLAGS})
    try:
        values["tracing"] = TracingSettings.load(document.get("tracing"), overrides)
    except TracingSettingError as exc:
        raise ConfigError(str(exc)) from None
    try:
        values["security"] = load_security(document.get("tls"), document.get("auth"), overrides,
                                           values.pop("insecure", False))
    except SecuritySettingError as exc:
        raise ConfigError(str(exc)) from None
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return values


# Settings in bytes, which a config file may also give as "512MiB".
_SIZE_SETTINGS = {"map_size", "max_hint_bytes_per_target", "cache_bytes", "message_batch_bytes",
                  "max_request_bytes_in_flight", "session_max_bytes_in_flight",
                  "replica_stream_max_bytes_in_flight"}


def _check_types(kind: Any, values: dict[str, Any]) -> None:
    """Sizes given as text become bytes; a number setting given anything but
    a number is refused by name (not deep in a range check)."""
    for f in fields(kind):
        value = values.get(f.name)
        if f.name in _SIZE_SETTINGS and isinstance(value, str):
            values[f.name] = value = parse_size(value, f.name)
        if value is None or f.type not in (int, float):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                f.type is int and not isinstance(value, int)):
            wanted = "an integer" if f.type is int else "a number"
            raise ConfigError(f"{f.name} must be {wanted}, got {value!r}")


def _build(kind: Any, values: dict[str, Any]) -> Any:
    _check_types(kind, values)
    try:
        return kind(**values)
    except TypeError as exc:
        raise ConfigError(f"bad setting type: {exc}") from exc


__all__ = ["NodeConfig", "CoordinatorConfig", "ConfigError", "load_node_config",
           "load_coordinator_config", "parse_address", "parse_size", "replace"]


_SIZE_UNITS = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB,
               "g": GIB, "gb": GIB, "gib": GIB,
               "t": 1024 * GIB, "tb": 1024 * GIB, "tib": 1024 * GIB}


def parse_size(text: str, setting: str) -> int:
    """'1073741824', '512MiB', '1g' → bytes (binary units)."""
    cleaned = text.strip().lower().replace(" ", "")
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number):]
    if not number.isdigit() or unit not in _SIZE_UNITS:
        raise ConfigError(f"{setting} must be a size like 1073741824, 512MiB or 1GiB, got {text!r}")
    return int(number) * _SIZE_UNITS[unit]
