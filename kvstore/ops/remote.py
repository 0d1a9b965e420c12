"""Talking to a running cluster over the network, as the operator commands
(`kvstore status`, `ring`, `endpoints`, `health`, `admin repair`) do: which
address to ask, and what the processes' `Admin.Status` answers say.

The address is `--address`, else $KVSTORE_ADDRESS, else the first
coordinator (or node) of a local cluster's ./data/cluster.json, else
127.0.0.1:7201 (the quick start's coordinator). Every call has a deadline;
a process that does not answer is reported, never waited for.
"""

import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from kvclient.pb import admin_pb2, admin_pb2_grpc
from kvstore.ops.cluster_layout import CLUSTER_JSON
from kvstore.placement.ring import partition_of
from kvclient.security import PLAINTEXT, Credentials
from kvstore.rpc.channels import open_channel

DEFAULT_ADDRESS = "127.0.0.1:7201"
ADDRESS_ENV = "KVSTORE_ADDRESS"
LOCAL_DATA_DIR = Path("data")


class RemoteError(RuntimeError):
    """A process could not be asked; the message says which and why."""


def resolve_address(given: str | None, data_dir: Path = LOCAL_DATA_DIR) -> str:
    if given:
        return given
    if from_env := os.environ.get(ADDRESS_ENV):
        return from_env
    try:
        processes = json.loads((data_dir / CLUSTER_JSON).read_text())["processes"]
        by_role = sorted(processes, key=lambda p: p["role"] != "coordinator")
        return str(by_role[0]["address"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return DEFAULT_ADDRESS


def fetch_status(address: str, timeout: float,
                 credentials: Credentials = PLAINTEXT) -> admin_pb2.StatusResponse:
    with open_channel(address, credentials=credentials) as channel:
        try:
            answer: admin_pb2.StatusResponse = admin_pb2_grpc.AdminStub(channel).Status(
                admin_pb2.StatusRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                raise RemoteError(
                    f"{address} serves no Admin service (an older kvstore?)") from None
            raise RemoteError(f"{address}: {code.name}: {exc.details()}") from None
    return answer


def as_dict(message: Message) -> dict[str, Any]:
    """The answer as JSON-ready data, names as in the proto: every scalar
    present, numbers as numbers (not proto3 JSON's strings for 64-bit ones),
    and a sub-message that is not set (`node` of a coordinator) as None."""
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is None:
            result[field.name] = list(value) if field.is_repeated else value
        elif field.is_repeated:
            result[field.name] = [as_dict(item) for item in value]
        else:
            result[field.name] = as_dict(value) if message.HasField(field.name) else None
    return result



def member_statuses(first: admin_pb2.StatusResponse, timeout: float,
                    credentials: Credentials = PLAINTEXT
                    ) -> dict[str, admin_pb2.StatusResponse | RemoteError]:
    """Every storage node's own answer (in parallel), by id; the asked
    process's answer is reused for itself."""
    members = [m for m in first.members if m.id != first.id]

    def ask(address: str) -> admin_pb2.StatusResponse | RemoteError:
        try:
            return fetch_status(address, timeout, credentials)
        except RemoteError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(members)))) as pool:
        answers = list(pool.map(lambda m: ask(m.address), members))
    found: dict[str, admin_pb2.StatusResponse | RemoteError] = {
        m.id: answer for m, answer in zip(members, answers)}
    if first.role == "node":
        found[first.id] = first
    return {m.id: found[m.id] for m in first.members}


def seen_down_by(answers: Mapping[str, admin_pb2.StatusResponse | RemoteError]
                 ) -> dict[str, list[str]]:
    """node id -> the processes (among `answers`) whose failure detector holds it down."""
    down: dict[str, list[str]] = {}
    for asker, answer in answers.items():
        if isinstance(answer, RemoteError):
            continue
        for member in answer.members:
            if not member.up:
                down.setdefault(member.id, []).append(asker)
    return down


def ring_rows(status: admin_pb2.StatusResponse,
              leaderships: Mapping[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every partition's replicas (and addresses); with `leaderships`
    (leader mode), its leader, term, commit and applied index, or None each
    when no node that answered leads it."""
    addresses = {m.id: m.address for m in status.members}
    rows = []
    for p in status.ring:
        row: dict[str, Any] = {"partition": p.partition, "replicas": list(p.replicas),
                               "addresses": [addresses[r] for r in p.replicas]}
        if leaderships is not None:
            row.update(leaderships.get(p.partition, dict.fromkeys(
                ("leader", "term", "commit", "applied"))))
        rows.append(row)
    return rows


def leaderships(answers: Mapping[str, admin_pb2.StatusResponse | RemoteError],
                ) -> dict[int, dict[str, Any]]:
    """Leader mode: partition -> its leader, term, commit and applied index,
    as the leader itself reports them (the highest term when two nodes both
    say they lead: the other has not heard yet that it was deposed)."""
    found: dict[int, dict[str, Any]] = {}
    for node_id, answer in answers.items():
        if isinstance(answer, RemoteError):
            continue
        for group in answer.raft:
            known = found.get(group.partition)
            if group.role == "leader" and (known is None or known["term"] < group.term):
                found[group.partition] = {"leader": node_id, "term": group.term,
                                          "commit": group.commit, "applied": group.applied}
    return found


def endpoints(status: admin_pb2.StatusResponse, key: bytes) -> dict[str, Any]:
    """Where `key` lives: its partition and replicas, in preference order."""
    partition = partition_of(key, status.partitions)
    members = {m.id: m for m in status.members}
    replicas = list(status.ring[partition].replicas)
    return {"key": key.decode("utf-8", "backslashreplace"), "partition": partition,
            "replicas": [{"id": r, "address": members[r].address, "up": members[r].up}
                         for r in replicas]}
