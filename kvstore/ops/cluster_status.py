"""`kvstore cluster status`: what the processes of a local cluster are doing.

Reads `DIR/cluster.json` (the running processes) and `DIR/cluster.toml` (the
ring), then asks each process: is its pid alive, what does its health service
say, and what its `Admin.Status` answers (`kvstore.ops.remote`, as
`kvstore status` asks it over the network): for nodes their keys, bytes and
hints (leader mode: the partitions each leads, of how many Raft groups), and
for every process which nodes its failure detector holds down. Every probe
has a short deadline, so a hung process shows as unreachable instead of
hanging the command. Read-only: it never signals or changes a process.
"""

import json
import os
import tomllib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from kvclient.pb import admin_pb2
from kvclient.security import PLAINTEXT, Credentials
from kvstore.ops.cluster_layout import CLUSTER_JSON, CLUSTER_TOML
from kvstore.ops.probe import health_status as health
from kvstore.ops.remote import RemoteError, fetch_status, seen_down_by
from kvstore.placement.membership import ClusterSpec

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
    leads: tuple[int, ...] | None = None  # leader mode: the partitions this node leads
    groups: int | None = None  # leader mode: the Raft groups it hosts


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


def _status(entry: dict[str, Any], owned: dict[str, Ownership],
            answer: admin_pb2.StatusResponse | RemoteError,
            down_by: dict[str, list[str]], credentials: Credentials) -> ProcessStatus:
    is_node = entry["role"] == "node"
    stats = None if isinstance(answer, RemoteError) or not is_node else answer.node
    return ProcessStatus(
        role=entry["role"], process_id=entry["id"], address=entry["address"], pid=entry["pid"],
        alive=pid_alive(entry["pid"]),
        health=health(entry["address"], PROBE_TIMEOUT_SECONDS, credentials),
        ownership=owned.get(entry["id"]) if is_node else None,
        keys=None if stats is None else stats.keys,
        db_bytes=None if stats is None else stats.db_bytes,
        seen_down_by=tuple(down_by.get(entry["id"], ())),
        hints=None if stats is None else stats.hints_pending,
        leads=None if stats is None else tuple(
            g.partition for g in answer.raft if g.role == "leader"),  # type: ignore[union-attr]
        groups=None if stats is None else len(answer.raft),  # type: ignore[union-attr]
    )


def collect(document: dict[str, Any], spec: ClusterSpec | None,
            credentials: Credentials = PLAINTEXT) -> list[ProcessStatus]:
    """Ask every process for its health and its `Admin.Status` (in parallel,
    each with a short deadline)."""
    owned = ownership(spec) if spec is not None else {}
    entries = document["processes"]

    def ask(entry: dict[str, Any]) -> admin_pb2.StatusResponse | RemoteError:
        try:
            return fetch_status(entry["address"], PROBE_TIMEOUT_SECONDS, credentials)
        except RemoteError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(entries)))) as pool:
        answers = list(pool.map(ask, entries))
        down_by = seen_down_by({e["id"]: a for e, a in zip(entries, answers)})
        return list(pool.map(lambda pair: _status(pair[0], owned, pair[1], down_by, credentials),
                             zip(entries, answers)))


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
    leader_mode = document["mode"] == "leader"
    result.add_column("leads" if leader_mode else "hints", justify="right")
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
            _leads(row) if leader_mode else "-" if row.hints is None else str(row.hints),
            f"[red]{', '.join(row.seen_down_by)}[/red]" if row.seen_down_by else "-",
        )
    third = ("leads: the partitions whose Raft group it leads now (of the groups it hosts)"
             if leader_mode else "hints: writes kept for nodes that were down")
    result.caption = ("primary: partitions a node owns; replicas: partitions whose "
                      f"{document['replicas']} replicas include it; {third}; seen down by: "
                      "processes whose failure detector holds it down")
    return result


def _leads(row: ProcessStatus) -> str:
    if row.leads is None or row.groups is None:
        return "-"
    return f"{len(row.leads)} of {row.groups}"


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
        *(["Credentials: cluster.json's \"tls\" (kvclient.TLS(**tls)) and \"tokens\" "
           "(token=...); the CLI finds them with --data-dir."]
          if "tls" in document or "tokens" in document else []),
    ]
