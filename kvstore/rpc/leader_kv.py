"""The KV operations of a leader-mode cluster: protobuf requests in,
`LeaderAccess` calls out (the partition's leader, through this node or
over a peer link), protobuf responses back. `KVService` calls these in
place of the quorum when the cluster's mode is "leader".

What a request may say: `stale` (reads), `if_version` (writes: compare-
and-set, 0 meaning absent); `r`, `w`, `context` and `strict_quorum` are
leaderless mode's and refused with INVALID_ARGUMENT. A version mismatch
is FAILED_PRECONDITION with reason VERSION_MISMATCH and `current_version`.
A write without a request id gets one here, so that every attempt the
route makes carries the same one. A write or linearizable read that this
process does not lead names, in its answer's `leader`, the leader it
knows: a token-aware client sends the partition's next calls there.

The cache (a coordinator's): a linearizable read never comes from it; a
stale read may, while the entry is younger than the cache's ttl. A write
through this process invalidates its key until its outcome is known, then
stores what it wrote (read-your-writes for stale reads here, while the
entry lasts). A read's answer is stored only if no write to the key is
under way and none was stored since the read began (so an answer older
than a write never replaces it), with its age counted from when the read
began.
"""

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from kvclient.pb import kv_pb2
from kvstore.leader.access import LeaderAccess
from kvstore.leader.commands import Command, Delete, Put
from kvstore.leader.state_machine import Outcome
from kvstore.leader.waiters import ReadValue
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc import validation
from kvstore.rpc.status import item_status
from kvstore.server.cache import LruCache

REQUEST_ID_BYTES = 16
_CACHED_VALUE_BYTES = 120  # what CPython holds for a cached ReadValue besides the value


class LeaderKV:
    def __init__(self, access: LeaderAccess, spec: ClusterSpec, limits: validation.Limits, *,
                 cache: LruCache | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        """`clock`: the cache's (monotonic seconds)."""
        self._access = access
        self._spec = spec
        self._limits = limits
        self._cache = cache
        self._clock = clock
        self._writing: dict[bytes, int] = {}  # writes through here under way, by key

    async def get(self, request: kv_pb2.GetRequest, timeout: float) -> kv_pb2.GetResponse:
        validation.check_key(request.key, self._limits)
        validation.refuse_leaderless_fields(request)
        response = _get_response(await self._read(request.key, request.stale, timeout))
        if not request.stale:  # a stale read is any replica's to answer
            response.leader = self._leader_elsewhere(request.key)
        return response

    async def put(self, request: kv_pb2.PutRequest, timeout: float) -> kv_pb2.PutResponse:
        command = self._put_command(request, "")
        outcome = await self._write(command, timeout)
        return kv_pb2.PutResponse(version=outcome.version,
                                  leader=self._leader_elsewhere(request.key))

    async def delete(self, request: kv_pb2.DeleteRequest,
                     timeout: float) -> kv_pb2.DeleteResponse:
        validation.check_key(request.key, self._limits)
        validation.check_write_extras(b"", request.request_id)
        validation.refuse_leaderless_fields(request)
        command = Delete(request.key, _request_id(request.request_id),
                         if_version=_if_version(request))
        outcome = await self._write(command, timeout)
        return kv_pb2.DeleteResponse(version=outcome.version,
                                     leader=self._leader_elsewhere(request.key))

    async def get_many(self, request: kv_pb2.GetManyRequest,
                       timeout: float) -> kv_pb2.GetManyResponse:
        validation.check_batch(request.keys, self._limits, "keys")
        for index, key in enumerate(request.keys):
            validation.check_key(key, self._limits, f"keys[{index}]")
        validation.refuse_leaderless_fields(request)
        values = await _each([self._read(key, request.stale, timeout) for key in request.keys])
        return kv_pb2.GetManyResponse(items=[
            kv_pb2.GetManyResponse.Item(status=item_status(v)) if isinstance(v, BaseException)
            else kv_pb2.GetManyResponse.Item(status=kv_pb2.ItemStatus(), result=_get_response(v))
            for v in values])

    async def put_many(self, request: kv_pb2.PutManyRequest,
                       timeout: float) -> kv_pb2.PutManyResponse:
        validation.check_batch(request.puts, self._limits, "puts")
        validation.refuse_leaderless_fields(request)
        commands = [self._put_command(put, f"puts[{index}].")
                    for index, put in enumerate(request.puts)]
        outcomes = await _each([self._write(command, timeout) for command in commands])
        return kv_pb2.PutManyResponse(items=[
            kv_pb2.PutManyResponse.Item(status=item_status(o)) if isinstance(o, BaseException)
            else kv_pb2.PutManyResponse.Item(status=kv_pb2.ItemStatus(),
                                             result=kv_pb2.PutResponse(version=o.version))
            for o in outcomes])

    # -- the work ----------------------------------------------------------------------

    def _put_command(self, put: kv_pb2.PutRequest, prefix: str) -> Put:
        validation.check_key(put.key, self._limits, f"{prefix}key")
        validation.check_value(put.value, self._limits, f"{prefix}value")
        validation.check_write_extras(b"", put.request_id, prefix)
        validation.refuse_leaderless_fields(put, prefix)
        return Put(put.key, put.value, _request_id(put.request_id), if_version=_if_version(put))

    async def _read(self, key: bytes, stale: bool, timeout: float) -> ReadValue:
        cache = self._cache
        if cache is None:
            return await self._access.read(self._spec.partition_of(key), key, stale=stale,
                                           timeout=timeout)
        if stale:
            cached = cache.get(key)
            if isinstance(cached, ReadValue):
                return cached
        began = self._now()
        value = await self._access.read(self._spec.partition_of(key), key, stale=stale,
                                        timeout=timeout)
        stored = cache.stored_at(key)
        if key not in self._writing and (stored is None or stored < began):
            self._remember(key, value, began)
        return value

    async def _write(self, command: Command, timeout: float) -> Outcome:
        key = command.key
        if self._cache is None:
            return await self._access.write(self._spec.partition_of(key), command,
                                            timeout=timeout)
        self._cache.invalidate(key)  # until the outcome is known, no older answer is served
        self._writing[key] = self._writing.get(key, 0) + 1
        try:
            outcome = await self._access.write(self._spec.partition_of(key), command,
                                               timeout=timeout)
        except BaseException:
            self._cache.invalidate(key)  # a read meanwhile may have seen it, or not
            raise
        finally:
            left = self._writing.pop(key) - 1
            if left:
                self._writing[key] = left
        if left:
            self._cache.invalidate(key)  # another write to it is still under way
        else:
            value = command.value if isinstance(command, Put) else None
            self._remember(key, ReadValue(outcome.version, value), self._now())
        return outcome

    def _leader_elsewhere(self, key: bytes) -> str:
        # "" (unset) when this process leads the key's partition, or knows no leader.
        return self._access.leader_elsewhere(self._spec.partition_of(key)) or ""

    def _remember(self, key: bytes, value: ReadValue, stored_at: float) -> None:
        assert self._cache is not None
        size = _CACHED_VALUE_BYTES + (len(value.value) if value.value is not None else 0)
        self._cache.put(key, value, size, stored_at=stored_at)

    def _now(self) -> float:
        assert self._clock is not None, "a LeaderKV with a cache needs its clock"
        return self._clock()


def _request_id(given: bytes) -> bytes:
    # A write without one (a tool's) gets one: the route's attempts share it.
    return given or os.urandom(REQUEST_ID_BYTES)


def _if_version(request: Any) -> int | None:
    return request.if_version if request.HasField("if_version") else None


def _get_response(value: ReadValue) -> kv_pb2.GetResponse:
    if value.value is None:
        return kv_pb2.GetResponse(found=False, version=0)
    return kv_pb2.GetResponse(found=True, siblings=[value.value], version=value.version)


async def _each(work: list[Awaitable[Any]]) -> list[Any]:
    """Every item's result or error, in order."""
    return await asyncio.gather(*work, return_exceptions=True)

