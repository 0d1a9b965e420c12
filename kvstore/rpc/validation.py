"""Checks of client input against the node's limits, before any work is done.

Pure. Every failure is an InvalidArgument whose message names the field, the
limit and what to change.
"""

from collections.abc import Sized
from dataclasses import dataclass

from google.protobuf.message import Message

from kvclient.pb import kv_pb2
from kvstore.errors import InvalidArgument

MAX_REQUEST_ID_BYTES = 64
MAX_CONTEXT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    max_key_bytes: int
    max_value_bytes: int
    max_batch_items: int


def check_key(key: bytes, limits: Limits, field: str = "key") -> None:
    if not key:
        raise InvalidArgument(f"{field} is empty; keys must be 1..{limits.max_key_bytes} bytes")
    if len(key) > limits.max_key_bytes:
        raise InvalidArgument(
            f"{field} is {len(key)} bytes; the limit is max_key_bytes={limits.max_key_bytes}"
        )


def check_value(value: bytes, limits: Limits, field: str = "value") -> None:
    if len(value) > limits.max_value_bytes:
        raise InvalidArgument(
            f"{field} is {len(value)} bytes; the limit is max_value_bytes={limits.max_value_bytes}"
        )


def check_write_extras(context: bytes, request_id: bytes, field: str = "") -> None:
    if len(context) > MAX_CONTEXT_BYTES:
        raise InvalidArgument(
            f"{field}context is {len(context)} bytes; at most {MAX_CONTEXT_BYTES}: "
            "pass back the context returned by get/put unchanged"
        )
    if len(request_id) > MAX_REQUEST_ID_BYTES:
        raise InvalidArgument(
            f"{field}request_id is {len(request_id)} bytes; at most {MAX_REQUEST_ID_BYTES}"
        )


def check_batch(items: Sized, limits: Limits, field: str) -> None:
    if not items:
        raise InvalidArgument(f"{field} is empty; send 1..{limits.max_batch_items} items")
    if len(items) > limits.max_batch_items:
        raise InvalidArgument(
            f"{field} has {len(items)} items; the limit is max_batch_items={limits.max_batch_items}"
        )


def replica_count(consistency: kv_pb2.Consistency, replicas: int, field: str) -> int:
    """How many replicas a request asks for (r or w), checked against N."""
    kind = consistency.WhichOneof("kind")
    if kind is None:
        return replicas // 2 + 1
    if kind == "count":
        count = consistency.count
        if count < 1 or count > replicas:
            raise InvalidArgument(
                f"{field}={count} is out of range; use 1..{replicas} "
                f"(the replication factor N={replicas}), or one/quorum/all"
            )
        return count
    level = consistency.level
    if level == kv_pb2.Consistency.ONE:
        return 1
    if level in (kv_pb2.Consistency.QUORUM, kv_pb2.Consistency.LEVEL_UNSPECIFIED):
        return replicas // 2 + 1
    if level == kv_pb2.Consistency.ALL:
        return replicas
    raise InvalidArgument(f"{field} has unknown consistency level {level}; use one, quorum or all")


# What each mode does not take, and what to use instead.
_LEADER_ONLY = {"if_version": "compare-and-set on versions", "stale": "stale reads"}
_LEADERLESS_ONLY = {
    "r": "reads are linearizable, or stale=True", "w": "writes commit on a majority",
    "context": "there are no siblings; use if_version for compare-and-set",
    "strict_quorum": "there is no sloppy quorum",
}


def refuse_leader_fields(request: Message, field: str = "") -> None:
    """A leaderless cluster refuses what only leader mode has."""
    for name in ("if_version", "stale"):
        if name in request.DESCRIPTOR.fields_by_name and _is_set(request, name):
            raise InvalidArgument(
                f"{field}{name} applies only in leader mode ({_LEADER_ONLY[name]}); this "
                "cluster is leaderless: leave it out (use context for read-modify-write)")


def refuse_leaderless_fields(request: Message, field: str = "") -> None:
    """A leader-mode cluster refuses what only leaderless mode has."""
    for name in ("r", "w", "context", "strict_quorum"):
        if name in request.DESCRIPTOR.fields_by_name and _is_set(request, name):
            raise InvalidArgument(
                f"{field}{name} does not apply in leader mode ({_LEADERLESS_ONLY[name]}); "
                "leave it out")


def _is_set(request: Message, name: str) -> bool:
    descriptor = request.DESCRIPTOR.fields_by_name[name]
    if descriptor.message_type is not None or descriptor.has_presence:
        return request.HasField(name)
    return bool(getattr(request, name))
