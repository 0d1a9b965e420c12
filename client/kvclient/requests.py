"""Building KV requests from client arguments, and results from KV responses.

Owns what the client checks before sending (keys, values and contexts are
bytes-like; batches are well formed), the client request ids that make
writes safe to retry, the reading of batch responses, including turning a
failed item into its typed exception, and the wrapping of a request as an
operation of a KV.Session stream and of its result back into the unary
call's response. Both clients call these functions and
add only the transport. Pure: no I/O; the random source of request ids is
injectable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from kvclient import errors
from kvclient.consistency import Level, parse_consistency
from kvclient.pb import kv_pb2
from kvclient.results import GetResult, Resolver, WriteResult, choose_value
from google.protobuf.message import Message

BytesLike = Union[bytes, bytearray, memoryview]
# A key, value or ping payload: bytes-like, or a str, sent as its UTF-8 bytes
# (as redis-py does). Results are bytes whichever was sent. A causal context
# is opaque bytes and never a str.
Data = Union[str, bytes, bytearray, memoryview]


@dataclass(frozen=True)
class PutItem:
    """One write of `put_many`, when a tuple cannot say it: leader mode's
    `if_version` (compare-and-set, 0: only if absent), or leaderless mode's
    `context`."""

    key: Data
    value: Data
    context: BytesLike | None = None
    if_version: int | None = None


# put_many takes a mapping key -> value, or (key, value) / (key, value, context)
# tuples, or PutItems.
PutTuple = Union[tuple[Data, Data], tuple[Data, Data, Union[BytesLike, None]]]
PutItems = Union[Mapping[bytes, Data], Mapping[str, Data], Iterable[Union[PutTuple, PutItem]]]
RandomBytes = Callable[[int], bytes]
# The methods of the KV service, as named on its stub.
Rpc = Literal["Get", "Put", "Delete", "GetMany", "PutMany", "Ping"]

REQUEST_ID_BYTES = 16

# The field of a SessionOperation that carries each method's request, and of
# a SessionResult its response.
SESSION_KIND: dict[Rpc, str] = {
    "Get": "get", "Put": "put", "Delete": "delete", "GetMany": "get_many",
    "PutMany": "put_many", "Ping": "ping",
}

# SessionOperation.timeout_ms is a uint32.
_MAX_TIMEOUT_MS = 2**32 - 1

# How much of a key an error message quotes.
_KEY_PREVIEW_CHARS = 60


def as_bytes(data: object, what: str) -> bytes:
    """`data` as bytes; bytearray and memoryview are copied, anything else is refused."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes (or bytearray/memoryview), got {type(data).__name__}")


def as_data(data: object, what: str) -> bytes:
    """`data` as bytes: a str as its UTF-8 encoding, bytes-like as for `as_bytes`."""
    if isinstance(data, str):
        try:
            return data.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate, e.g. "\ud800"
            raise ValueError(f"{what} is a str that UTF-8 cannot encode: {error}") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return as_bytes(data, what)
    raise TypeError(f"{what} must be bytes (or bytearray/memoryview) or str, "
                    f"got {type(data).__name__}")


def _context_bytes(context: object) -> bytes:
    return b"" if context is None else as_bytes(context, "context")


def new_request_id(random_bytes: RandomBytes = os.urandom) -> bytes:
    """A fresh client request id: the server applies a write with a given id once."""
    return random_bytes(REQUEST_ID_BYTES)


def check_if_version(if_version: object) -> int | None:
    """`if_version` as sent: None (unconditional) or a version >= 0."""
    if if_version is None:
        return None
    if isinstance(if_version, bool) or not isinstance(if_version, int):
        raise TypeError(f"if_version must be an int (a version, 0: absent) or None, "
                        f"got {type(if_version).__name__}")
    if not 0 <= if_version < 2**64:
        raise errors.InvalidArgument(f"if_version must be >= 0 (0: only if absent), "
                                     f"got {if_version}")
    return if_version


def check_stale(stale: object) -> bool:
    if not isinstance(stale, bool):
        raise TypeError(f"stale must be True or False, got {type(stale).__name__}")
    return stale


def get_request(key: Data, r: Level, stale: bool = False) -> kv_pb2.GetRequest:
    return kv_pb2.GetRequest(key=as_data(key, "key"), r=parse_consistency(r, "r"),
                             stale=check_stale(stale))


def put_request(
    key: Data,
    value: Data,
    *,
    context: BytesLike | None,
    w: Level,
    request_id: bytes,
    sloppy: bool = True,
    if_version: int | None = None,
) -> kv_pb2.PutRequest:
    return kv_pb2.PutRequest(
        key=as_data(key, "key"),
        value=as_data(value, "value"),
        context=_context_bytes(context),
        w=parse_consistency(w, "w"),
        request_id=request_id,
        strict_quorum=not sloppy,
        if_version=check_if_version(if_version),
    )


def delete_request(
    key: Data, *, context: BytesLike | None, w: Level, request_id: bytes,
    sloppy: bool = True, if_version: int | None = None,
) -> kv_pb2.DeleteRequest:
    return kv_pb2.DeleteRequest(
        key=as_data(key, "key"),
        context=_context_bytes(context),
        w=parse_consistency(w, "w"),
        request_id=request_id,
        strict_quorum=not sloppy,
        if_version=check_if_version(if_version),
    )


def delete_many_requests(
    keys: Iterable[Data], *, w: Level, random_bytes: RandomBytes = os.urandom
) -> list[kv_pb2.DeleteRequest]:
    """One DeleteRequest per key, each with its own request id."""
    if isinstance(keys, (bytes, bytearray, memoryview, str)):
        raise TypeError("keys must be an iterable of keys, not a single key")
    return [delete_request(as_data(key, f"key {index}"), context=None, w=w,
                           request_id=new_request_id(random_bytes))
            for index, key in enumerate(keys)]


def batch_results(keys: list[bytes], outcomes: list[Any]) -> list[Any]:
    """The results of a batch sent as one call per item, in order; the first
    failed item raises its typed error, named as put_many names its own."""
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, errors.KVError):
            raise errors.error_for(
                outcome.code, f"batch item {index} (key {_preview(keys[index])}) failed: "
                f"{outcome.details}", reason=outcome.reason, metadata=outcome.metadata,
                retry_after=outcome.retry_after) from outcome
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


def get_many_request(keys: Iterable[Data], r: Level,
                     stale: bool = False) -> kv_pb2.GetManyRequest:
    if isinstance(keys, (bytes, bytearray, memoryview, str)):
        raise TypeError("keys must be an iterable of bytes keys, not a single key")
    return kv_pb2.GetManyRequest(
        keys=[as_data(key, f"key {index}") for index, key in enumerate(keys)],
        r=parse_consistency(r, "r"),
        stale=check_stale(stale),
    )


def put_many_request(
    items: PutItems, *, w: Level, random_bytes: RandomBytes = os.urandom
) -> kv_pb2.PutManyRequest:
    """One PutRequest per item, each with its own request id; `w` covers them all."""
    puts = [
        put_request(item.key, item.value, context=item.context, w=None,
                    request_id=new_request_id(random_bytes), if_version=item.if_version)
        for item in _put_items(items)
    ]
    return kv_pb2.PutManyRequest(puts=puts, w=parse_consistency(w, "w"))


def _put_items(items: PutItems) -> list[PutItem]:
    if isinstance(items, Mapping):
        return [PutItem(key, value) for key, value in items.items()]
    if isinstance(items, (bytes, bytearray, memoryview, str)):
        raise TypeError("items must be a dict or an iterable of (key, value[, context]) tuples "
                        "or PutItems")
    return [_put_item(index, item) for index, item in enumerate(items)]


def _put_item(index: int, item: object) -> PutItem:
    if isinstance(item, PutItem):
        return item
    if isinstance(item, tuple) and len(item) == 2:
        return PutItem(item[0], item[1])
    if isinstance(item, tuple) and len(item) == 3:
        return PutItem(item[0], item[1], item[2])
    raise TypeError(
        f"put_many item {index} must be a (key, value) or (key, value, context) tuple or a "
        f"PutItem, got {type(item).__name__}"
    )


def ping_request(payload: Data) -> kv_pb2.PingRequest:
    return kv_pb2.PingRequest(payload=as_data(payload, "payload"))


def session_operation(rpc: Rpc, request: Message, op_id: int, timeout: float,
                      trace: kv_pb2.TraceContext | None = None) -> kv_pb2.SessionOperation:
    """`request` as operation `op_id` of a stream, with `timeout` seconds to
    run (rounded up to whole milliseconds: never 0, which would mean the
    server's default), and the span that sends it when traced."""
    timeout_ms = min(_MAX_TIMEOUT_MS, max(1, math.ceil(timeout * 1000)))
    fields: dict[str, Any] = {SESSION_KIND[rpc]: request}
    if trace is not None:
        fields["trace"] = trace
    return kv_pb2.SessionOperation(id=op_id, timeout_ms=timeout_ms, **fields)


def session_response(rpc: Rpc, result: kv_pb2.SessionResult) -> Message:
    """The response the unary `rpc` would have returned, from a stream's
    result; a failed operation raises its typed error, as the call would."""
    outcome = result.WhichOneof("outcome")
    if outcome == "error":
        raise errors.from_status(result.error)
    if outcome != SESSION_KIND[rpc]:
        raise errors.Internal(f"the server answered a {rpc} operation with "
                              f"{outcome or 'nothing'}")
    response: Message = getattr(result, outcome)
    return response


def get_result(response: kv_pb2.GetResponse, resolver: Resolver | None) -> GetResult:
    siblings = list(response.siblings) if response.found else []
    return GetResult(
        value=choose_value(siblings, resolver),
        siblings=siblings,
        context=response.context,
        timestamp=response.timestamp,
        found=response.found,
        version=_version(response),
    )


def put_result(response: kv_pb2.PutResponse) -> WriteResult:
    return WriteResult(context=response.context, timestamp=response.timestamp,
                       version=_version(response))


def delete_result(response: kv_pb2.DeleteResponse) -> WriteResult:
    return WriteResult(context=response.context, version=_version(response))


def _version(response: Any) -> int | None:
    """Leader mode's version; None from a leaderless cluster, which sends none."""
    return int(response.version) if response.HasField("version") else None


def get_many_results(
    request: kv_pb2.GetManyRequest, response: kv_pb2.GetManyResponse, resolver: Resolver | None
) -> list[GetResult]:
    """One result per requested key, in order; a failed item raises its typed error."""
    keys = list(request.keys)
    _check_item_count(len(response.items), len(keys))
    for index, item in enumerate(response.items):
        _check_item(index, keys[index], item.status)
    return [get_result(item.result, resolver) for item in response.items]


def put_many_results(
    request: kv_pb2.PutManyRequest, response: kv_pb2.PutManyResponse
) -> list[WriteResult]:
    """One result per put, in order; a failed item raises its typed error."""
    keys = [put.key for put in request.puts]
    _check_item_count(len(response.items), len(keys))
    for index, item in enumerate(response.items):
        _check_item(index, keys[index], item.status)
    return [put_result(item.result) for item in response.items]


def ping_payload(response: kv_pb2.PingResponse) -> bytes:
    return response.payload


def _check_item_count(answered: int, asked: int) -> None:
    if answered != asked:
        raise errors.Internal(f"the server answered {answered} items for a batch of {asked}")


def _check_item(index: int, key: bytes, status: kv_pb2.ItemStatus) -> None:
    if status.code == 0:
        return
    code = errors.status_code_from_int(status.code)
    message = f"batch item {index} (key {_preview(key)}) failed: {status.message}"
    raise errors.error_for(code, message, reason=status.reason or None,
                           metadata=dict(status.metadata))


def _preview(key: bytes) -> str:
    shown = repr(key)
    if len(shown) <= _KEY_PREVIEW_CHARS:
        return shown
    return shown[: _KEY_PREVIEW_CHARS - 3] + "..."
