"""The layout of a local cluster (`kvstore cluster up`) and the files in its
data dir that remember it.

A layout is the number of nodes and coordinators, the replication settings
and the base port; from it follow every process's id, ports and command line
(`plans`). The first start of a data dir saves the layout; a later start
reuses it, and a flag that disagrees with it is an error (`resolve`), so a
restart always brings back the same ids, ports and data.

Files in the data dir:
- cluster.toml: the `[cluster]` table every child reads with --config, and
  the `[node]` table of settings given with --node-setting;
- cluster-layout.json: what cluster.toml cannot say (coordinators, base port,
  durability); written once the cluster has come up, it marks the data dir as
  holding a cluster;
- cluster.secret: the cluster secret (`kvstore.security.secret`), which
  every process and the operator tools present to each other;
- tls/: with --tls, the cluster's CA and certificates (`kvstore.security.local_pki`);
- tokens.toml: with --auth-tokens, a bearer token of each role (`kvstore.security.tokens`);
- cluster.json: the running processes (a contract with external tests; written
  by `kvstore.ops.local_cluster` only while every process is up);
- prometheus/targets.json: every process's metrics endpoint, in Prometheus's
  file-discovery format (what deploy/prometheus/local.yml reads), written
  with cluster.json.
"""

import dataclasses
import json
import os
import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvstore.server.config import ConfigError, load_node_config
from kvstore.placement.membership import ClusterMember, ClusterSpec, MembershipError
from kvstore.ops.ports import ephemeral_ports, port_is_free
from kvstore.ops.processes import coordinator_command, node_command
from kvstore.placement.ring import validate_partition_count
from kvstore.security.local_pki import ADMIN, CLIENT, TLS_DIR, LocalPki
from kvstore.security.secret import SECRET_FILE
from kvstore.security.tokens import TOKEN_FILE, tokens_by_role

HOST = "127.0.0.1"
CLUSTER_TOML = "cluster.toml"
LAYOUT_JSON = "cluster-layout.json"
CLUSTER_JSON = "cluster.json"
PROMETHEUS_TARGETS = Path("prometheus") / "targets.json"

# Port offsets from --base-port: node i listens on base+i, coordinator j on
# base+100+j; metrics are 2000 higher (so the defaults give 7101/9101, 7201/9201).
COORDINATOR_OFFSET = 100
METRICS_OFFSET = 2000
MAX_NODES = MAX_COORDINATORS = 99  # more would run into the next block of ports

DEFAULTS: dict[str, Any] = {"nodes": 3, "coordinators": 1, "partitions": 64,
                            "mode": "leaderless", "base_port": 7100, "durability": "sync",
                            "tls": False, "auth_tokens": False}

# In leader mode each partition is a Raft group, and a group's messages and
# passes are per-operation work in Python: with 64 groups and 64 writes in
# flight nearly every write travels alone (one append, its answer, the
# commit, per follower), with 16 several share them. A 3-node cluster's
# writes cost half the CPU at 16 (bench/RESULTS.md). Enough groups remain to
# spread leadership; a larger cluster may ask for more.
LEADER_PARTITIONS = 16


def _next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class LayoutError(ValueError):
    """The requested or saved layout is unusable; the message says what to change."""


@dataclass(frozen=True)
class ProcessPlan:
    """One process of the cluster, before it runs."""

    role: str  # "node" or "coordinator"
    process_id: str
    address: str
    metrics: str  # HOST:PORT of /metrics
    command: list[str]
    log_file: Path
    data_dir: Path | None  # nodes only


@dataclass(frozen=True)
class Layout:
    nodes: int
    coordinators: int
    replicas: int
    partitions: int
    mode: str
    base_port: int
    durability: str
    tls: bool = False  # every link mTLS, with certificates under DIR/tls/
    auth_tokens: bool = False  # clients must present a token of DIR/tokens.toml (or a cert)

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= MAX_NODES:
            raise LayoutError(f"--nodes must be 1..{MAX_NODES}, got {self.nodes}")
        if not 0 <= self.coordinators <= MAX_COORDINATORS:
            raise LayoutError(
                f"--coordinators must be 0..{MAX_COORDINATORS}, got {self.coordinators}")
        if not 1 <= self.replicas <= self.nodes:
            raise LayoutError(f"--replicas must be 1..{self.nodes} (the number of nodes), "
                              f"got {self.replicas}")
        try:
            validate_partition_count(self.partitions)
        except ValueError as exc:
            raise LayoutError(f"--partitions: {exc}") from None
        if self.partitions < self.nodes:
            raise LayoutError(f"--partitions {self.partitions} is fewer than the {self.nodes} "
                              "nodes; every node needs at least one partition")
        if self.durability not in ("sync", "nosync"):
            raise LayoutError(f"--durability must be sync or nosync, got {self.durability!r}")
        span = METRICS_OFFSET + (COORDINATOR_OFFSET + self.coordinators
                                 if self.coordinators else self.nodes)
        if not 1 <= self.base_port <= 65535 - span:
            raise LayoutError(
                f"--base-port must be 1..{65535 - span} for {self.nodes} node(s) and "
                f"{self.coordinators} coordinator(s), which use ports base+1 up to "
                f"base+{span}; got {self.base_port}")
        try:
            _ = self.spec  # the mode and the ring are checked where they are defined
        except MembershipError as exc:
            raise LayoutError(f"--mode: {exc}" if "mode" in str(exc) else str(exc)) from None

    @property
    def spec(self) -> ClusterSpec:
        members = tuple(ClusterMember(f"n{i}", f"{HOST}:{self.base_port + i}")
                        for i in range(1, self.nodes + 1))
        return ClusterSpec(members, replicas=self.replicas, partitions=self.partitions,
                           mode=self.mode)

    def plans(self, data_dir: Path) -> list[ProcessPlan]:
        """Every process, nodes first. `data_dir` should be absolute: the
        command lines must work from anywhere (chaos tests rerun them)."""
        config = data_dir / CLUSTER_TOML
        plans = []
        for i in range(1, self.nodes + 1):
            node_id, port = f"n{i}", self.base_port + i
            address, metrics_port = f"{HOST}:{port}", port + METRICS_OFFSET
            command = node_command(node_id, address, data_dir / node_id, metrics_port,
                                   ["--config", str(config), "--durability", self.durability,
                                    *self._security(node_id, data_dir)])
            plans.append(ProcessPlan("node", node_id, address, f"{HOST}:{metrics_port}", command,
                                     data_dir / "logs" / f"{node_id}.log", data_dir / node_id))
        for j in range(1, self.coordinators + 1):
            coordinator_id, port = f"c{j}", self.base_port + COORDINATOR_OFFSET + j
            address, metrics_port = f"{HOST}:{port}", port + METRICS_OFFSET
            command = coordinator_command(coordinator_id, address, metrics_port, config,
                                          self._security(coordinator_id, data_dir))
            plans.append(ProcessPlan("coordinator", coordinator_id, address,
                                     f"{HOST}:{metrics_port}", command,
                                     data_dir / "logs" / f"{coordinator_id}.log", None))
        return plans

    def _security(self, process_id: str, data_dir: Path) -> list[str]:
        """With TLS, the process's certificate; else the cluster secret, which
        every process presents to its peers and accepts from them and from
        the operator tools."""
        tokens = ["--token-file", str(data_dir / TOKEN_FILE)] if self.auth_tokens else []
        if not self.tls:
            return ["--cluster-secret-file", str(data_dir / SECRET_FILE), *tokens]
        pki = self.pki(data_dir)
        pair = pki.pair(process_id)
        return ["--tls-ca", str(pki.ca), "--tls-cert", str(pair.cert), "--tls-key", str(pair.key),
                *tokens]

    def pki(self, data_dir: Path) -> LocalPki:
        return LocalPki(data_dir / TLS_DIR)

    @property
    def process_ids(self) -> list[str]:
        return ([f"n{i}" for i in range(1, self.nodes + 1)]
                + [f"c{j}" for j in range(1, self.coordinators + 1)])


@dataclass(frozen=True)
class Requested:
    """The flags given on the command line; None: not given."""

    nodes: int | None = None
    coordinators: int | None = None
    replicas: int | None = None
    partitions: int | None = None
    mode: str | None = None
    base_port: int | None = None
    durability: str | None = None
    tls: bool | None = None
    auth_tokens: bool | None = None


def _describe(setting: str, value: object) -> str:
    return {
        "nodes": f"a {value}-node cluster",
        "coordinators": f"a cluster with {value} coordinator(s)",
        "replicas": f"a cluster with {value} replicas per key",
        "partitions": f"a cluster with {value} partitions",
        "mode": f"a {value} cluster",
        "base_port": f"a cluster on base port {value}",
        "durability": f"a cluster with durability {value}",
        "tls": "a cluster with TLS" if value else "a cluster without TLS",
        "auth_tokens": "a cluster with auth tokens" if value else "a cluster without auth tokens",
    }[setting]


def resolve(requested: Requested, saved: Layout | None, data_dir: Path) -> Layout:
    """The layout to run: the saved one (given flags must agree with it), or
    a new one from the flags and the defaults."""
    given = {k: v for k, v in dataclasses.asdict(requested).items() if v is not None}
    if saved is None:
        values = {**DEFAULTS, **given}
        values.setdefault("replicas", min(3, values["nodes"]))
        if values["mode"] == "leader" and "partitions" not in given:
            values["partitions"] = max(LEADER_PARTITIONS, _next_power_of_two(values["nodes"]))
        return Layout(**values)
    conflicts = [
        f"{data_dir} holds {_describe(setting, getattr(saved, setting))}; remove {data_dir} "
        + (f"or leave out --{setting.replace('_', '-')}" if isinstance(value, bool) else
           f"or pass --{setting.replace('_', '-')} {getattr(saved, setting)}")
        for setting, value in given.items() if getattr(saved, setting) != value
    ]
    if conflicts:
        raise LayoutError("\n".join(conflicts))
    return saved


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a part of either."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


# Settings cluster up itself gives each node, on its command line.
_NODE_SETTINGS_OF_CLUSTER_UP = {"node_id", "listen", "data_dir", "metrics_port", "cluster",
                                "durability", "partitions"}


def parse_node_settings(pairs: Sequence[str]) -> dict[str, Any]:
    """`--node-setting KEY=VALUE` flags -> the [node] table. A VALUE is read
    as a TOML value (60, 0.5, true, "text"), else taken as text (1GiB). Every
    setting is checked as a node would check it at start."""
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LayoutError(f"--node-setting takes KEY=VALUE, got {pair!r}")
        if key in _NODE_SETTINGS_OF_CLUSTER_UP:
            raise LayoutError(f"--node-setting {key}: cluster up sets it for every node itself")
        try:
            settings[key] = tomllib.loads(f"value = {text.strip()}")["value"]
        except tomllib.TOMLDecodeError:
            settings[key] = text.strip()
    try:
        load_node_config(None, {"node_id": "n1", **settings})
    except ConfigError as exc:
        raise LayoutError(f"--node-setting: {exc}") from None
    return settings


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def write_config(layout: Layout, data_dir: Path, node_settings: Mapping[str, Any] = {}) -> None:
    header = ("# Written by `kvstore cluster up`: every node and coordinator of this\n"
              "# cluster reads it with --config. Remove the data dir to start afresh.\n")
    node_table = "".join(f"{key} = {_toml_value(value)}\n"
                         for key, value in node_settings.items())
    if node_table:
        node_table = "[node]  # from --node-setting\n" + node_table + "\n"
    write_atomically(data_dir / CLUSTER_TOML, header + node_table + layout.spec.to_toml())


def save_layout(layout: Layout, data_dir: Path) -> None:
    """Mark `data_dir` as holding this cluster (cluster.toml holds the rest)."""
    extra = {"coordinators": layout.coordinators, "base_port": layout.base_port,
             "durability": layout.durability, "tls": layout.tls,
             "auth_tokens": layout.auth_tokens}
    write_atomically(data_dir / LAYOUT_JSON, json.dumps(extra, indent=2) + "\n")


def load_saved(data_dir: Path) -> Layout | None:
    """The layout of the cluster `data_dir` holds; None when it holds none
    (a first start that failed leaves cluster.toml but no LAYOUT_JSON)."""
    layout_file, config_file = data_dir / LAYOUT_JSON, data_dir / CLUSTER_TOML
    if not layout_file.exists():
        return None
    try:
        extra = json.loads(layout_file.read_text())
        spec = ClusterSpec.from_table(tomllib.loads(config_file.read_text())["cluster"])
        saved = Layout(nodes=len(spec.members), replicas=spec.replicas,
                       partitions=spec.partitions, mode=spec.mode,
                       coordinators=int(extra["coordinators"]), base_port=int(extra["base_port"]),
                       durability=str(extra["durability"]), tls=bool(extra.get("tls", False)),
                       auth_tokens=bool(extra.get("auth_tokens", False)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LayoutError(f"cannot read the cluster saved in {data_dir} ({exc}); "
                          f"fix {config_file} and {layout_file}, or remove {data_dir}") from None
    if saved.spec.members != spec.members:
        raise LayoutError(f"{config_file} lists members other than n1..n{saved.nodes} on ports "
                          f"{saved.base_port + 1}..{saved.base_port + saved.nodes}; "
                          f"fix it or remove {data_dir}")
    return saved


def cluster_document(layout: Layout, plans: list[ProcessPlan], pids: list[int],
                     data_dir: Path) -> dict[str, Any]:
    """The content of cluster.json; its shape is a documented contract."""
    processes = []
    for plan, pid in zip(plans, pids, strict=True):
        entry: dict[str, Any] = {"role": plan.role, "id": plan.process_id,
                                 "address": plan.address, "metrics": plan.metrics, "pid": pid}
        if plan.data_dir is not None:
            entry["data_dir"] = str(plan.data_dir)
        processes.append(entry)
    document = {"processes": processes, "replicas": layout.replicas,
                "partitions": layout.partitions, "mode": layout.mode}
    if layout.tls:
        pki = layout.pki(data_dir)
        document["tls"] = pki.pair(CLIENT).as_json(pki.ca)
        document["admin_tls"] = pki.pair(ADMIN).as_json(pki.ca)
    if layout.auth_tokens:
        document["tokens"] = tokens_by_role(data_dir / TOKEN_FILE)
    return document


def prometheus_targets(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """cluster.json's processes as Prometheus file-discovery target groups:
    one per process, labelled with its id and role. (Not `node`: that label
    names another node in the metrics themselves.)"""
    return [{"targets": [process["metrics"]],
             "labels": {"member": process["id"], "role": process["role"]}}
            for process in document["processes"]]


def needed_ports(base: int, nodes: int, coordinators: int) -> list[int]:
    """Every port a cluster with this base port listens on."""
    serving = [base + i for i in range(1, nodes + 1)]
    serving += [base + COORDINATOR_OFFSET + j for j in range(1, coordinators + 1)]
    return serving + [port + METRICS_OFFSET for port in serving]


def free_base_port(nodes: int, coordinators: int, rng: random.Random) -> int:
    """A base port all of whose ports were free a moment ago, and below the
    ephemeral range (see `kvstore.ops.ports`): for tests and chaos runs that
    start clusters side by side."""
    span = max(needed_ports(0, nodes, coordinators))
    highest = min(40000, ephemeral_ports().start - span - 1)
    for _ in range(200):
        base = rng.randrange(20000, max(highest, 20001))
        if all(port_is_free(port, HOST) for port in needed_ports(base, nodes, coordinators)):
            return base
    raise LayoutError("found no base port with every needed port free")

