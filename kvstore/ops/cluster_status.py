"""`kvstore cluster status`: what the processes of a local cluster are doing.

Reads `DIR/cluster.json` (the running processes) and `DIR/cluster.toml` (the
ring), then asks each process: is its pid alive, what does its health service
say, and, for nodes, how many keys and bytes its metrics report. Every probe
has a short deadline, so a hung process shows as unreachable instead of
hanging the command. Read-only: it never signals or changes a process.
"""

import json
import os
import tomllib
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.table import Table

from kvstore.ops.cluster_layout import CLUSTER_JSON, CLUSTER_TOML
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc.channels import open_channel

PROBE_TIMEOUT_SECONDS = 1.0


class NoCluster(RuntimeError):
    """There is no running cluster to describe; the message says what to do."""


@dataclass(frozen=True)
class Ownership:
    primary: int  # partitions the node owns (first in their preference list)
    replicated: int  # partitions whose N replicas include the node (primary included)


@dataclass(frozen=True)
class ProcessStatus:
    role: str
    process_id: str
    address: str
    pid: int
    alive: bool
    health: str  # SERVING, NOT_SERVING, ... or "unreachable"
    ownership: Ownership | None  # nodes only, when cluster.toml is readable
    keys: int | None  # None: not a node, or its metrics are unreachable
    db_bytes: int | None
    # Processes whose failure detector holds this node down (nodes only).
    seen_down_by: tuple[str, ...] = ()
    hints: int | None = None  # hints this node keeps for nodes that were down


def read_cluster(data_dir: Path) -> tuple[dict[str, Any], ClusterSpec | None]:
    """cluster.json's document and the ring's spec (None if unreadable)."""
    try:
        document = json.loads((data_dir / CLUSTER_JSON).read_text())
    except FileNotFoundError:
        raise NoCluster(f"no running cluster in {data_dir}; start one with "
                        f"kvstore cluster up --data-dir {data_dir}") from None
    except (OSError, ValueError) as exc:
        raise NoCluster(f"cannot read {data_dir / CLUSTER_JSON}: {exc}") from None
    try:
        table = tomllib.loads((data_dir / CLUSTER_TOML).read_text())["cluster"]
        spec: ClusterSpec | None = ClusterSpec.from_table(table)
    except (OSError, ValueError, KeyError):
        spec = None
    return document, spec


def ownership(spec: ClusterSpec) -> dict[str, Ownership]:
    ring = spec.ring
    replicated: Counter[str] = Counter()
    for partition in range(spec.partitions):
        replicated.update(ring.preference_list(partition, spec.replicas))
    return {m.node_id: Ownership(len(ring.partitions_of(m.node_id)), replicated[m.node_id])
            for m in spec.members}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:  # a dead child its parent has not reaped yet is no longer running
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)


def health_status(address: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str:
    """The grpc.health.v1 status name, or "unreachable"."""
    with open_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return "unreachable"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def scrape(metrics: str, names: tuple[str, ...],
           timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, float]:
    """The unlabelled samples `names` from http://METRICS/metrics; {} if unreachable."""
    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


_PEER_UP = 'kvstore_peer_up{node="'


_HINTS = 'kvstore_hints_pending{node="'


def scrape_peer_views(metrics: str,
                      timeout: float = PROBE_TIMEOUT_SECONDS) -> tuple[dict[str, bool], int | None]:
    """(peer id -> whether this process's failure detector holds it up, hints
    it keeps for other nodes); ({}, None) if unreachable."""
    try:
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return {}, None
    views: dict[str, bool] = {}
    hints: int | None = None
    for line in text.splitlines():
        if line.startswith(_PEER_UP):
            peer, _, value = line[len(_PEER_UP):].partition('"} ')
            views[peer] = value.strip() not in ("0", "0.0")
        elif line.startswith(_HINTS):
            hints = (hints or 0) + int(float(line.rsplit(" ", 1)[1]))
    return views, hints


def _status(entry: dict[str, Any], owned: dict[str, Ownership]) -> ProcessStatus:
    is_node = entry["role"] == "node"
    sample = scrape(entry["metrics"], ("kvstore_keys", "kvstore_db_bytes")) if is_node else {}
    keys, db_bytes = sample.get("kvstore_keys"), sample.get("kvstore_db_bytes")
    return ProcessStatus(
        role=entry["role"], process_id=entry["id"], address=entry["address"], pid=entry["pid"],
        alive=pid_alive(entry["pid"]), health=health_status(entry["address"]),
        ownership=owned.get(entry["id"]) if is_node else None,
        keys=None if keys is None else int(keys),
        db_bytes=None if db_bytes is None else int(db_bytes),
    )


def collect(document: dict[str, Any], spec: ClusterSpec | None) -> list[ProcessStatus]:
    """Probe every process (in parallel, each with a short deadline)."""
    owned = ownership(spec) if spec is not None else {}
    entries = document["processes"]
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(entries)))) as pool:
        rows = list(pool.map(lambda entry: _status(entry, owned), entries))
        views = list(pool.map(lambda entry: scrape_peer_views(entry["metrics"]), entries))
    down_by: dict[str, list[str]] = {}
    for entry, (view, _) in zip(entries, views):
        for peer, up in view.items():
            if not up:
                down_by.setdefault(peer, []).append(entry["id"])
    return [replace(row, seen_down_by=tuple(down_by.get(row.process_id, ())), hints=hints)
            for row, (_, hints) in zip(rows, views)]


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def table(rows: list[ProcessStatus], document: dict[str, Any]) -> Table:
    result = Table(title=(f"{document['mode']} cluster: {document['replicas']} replicas per key, "
                          f"{document['partitions']} partitions"), title_justify="left")
    for column in ("role", "id", "address", "pid", "alive", "health"):
        result.add_column(column)
    for column in ("primary", "replicas", "keys", "disk"):
        result.add_column(column, justify="right")
    result.add_column("hints", justify="right")
    result.add_column("seen down by")
    for row in rows:
        colour = "green" if row.health == "SERVING" else "red"
        owned = row.ownership
        result.add_row(
            row.role, row.process_id, row.address, str(row.pid),
            "yes" if row.alive else "[red]no[/red]", f"[{colour}]{row.health}[/{colour}]",
            "-" if owned is None else str(owned.primary),
            "-" if owned is None else str(owned.replicated),
            "-" if row.keys is None else str(row.keys),
            "-" if row.db_bytes is None else human_bytes(row.db_bytes),
            "-" if row.hints is None else str(row.hints),
            f"[red]{', '.join(row.seen_down_by)}[/red]" if row.seen_down_by else "-",
        )
    result.caption = ("primary: partitions a node owns; replicas: partitions whose "
                      f"{document['replicas']} replicas include it; hints: writes kept for nodes "
                      "that were down; seen down by: processes whose failure detector "
                      "holds it down")
    return result


def connection_hints(document: dict[str, Any]) -> list[str]:
    """How to reach the cluster: its coordinators, else its nodes."""
    processes = document["processes"]
    entry = [p["address"] for p in processes if p["role"] == "coordinator"] or [
        p["address"] for p in processes if p["role"] == "node"]
    addresses = ", ".join(f'"{a}"' for a in entry)
    return [
        f"Python:  kvclient.Client([{addresses}])",
        f"CLI:     kvstore put greeting hello --address {entry[0]}",
        f"         kvstore get greeting --address {entry[0]}",
        "Any node address works as well: every node can coordinate a request.",
    ]
