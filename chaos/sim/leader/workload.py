"""Simulated leader-mode clients: each does linearizable reads, blind
writes, compare-and-set and deletes on a few hot keys through the KV
service of a node, across the network, and records every operation with
its versions in the history
(`chaos.history.Op`, as the real chaos suite's leader workload does, so
`chaos.linearizability` judges both).

Half the clients send each operation to a node at random (which forwards
to the partition's leader, or reads through its own replica's ReadIndex);
the other half are token-aware, as kvclient is given node addresses: they
go straight to the leader the last node they talked to knows (as the
topology it serves says), and to a random node when they know none or the
last attempt failed. So a leader cut off from the others, which still
believes it leads, keeps getting requests.

Every put writes a value no other put writes (f"{client}-{seq}"). A
compare-and-set reads the key first and writes with `if_version` set to
the version it read; a refusal (VERSION_MISMATCH) is recorded as failed
with the current version it named. Some writes whose outcome was unknown
are sent again with the same request id, as a client retries: the state
machine must apply them once. A retried write is one operation from its
first call to its last answer (the record of the earlier attempt is
replaced): a duplicate's answer is the first application's, which may
lie before the retry began.

A write's outcome follows its error: a definite refusal (outcome
`not_applied`, or a version mismatch) is a failure; anything else,
a timeout included, is unknown. A read that failed tells nothing.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from chaos.history import FAIL, OK, UNKNOWN, Op, OpKind, Outcome, text
from chaos.sim.network import Network
from kvclient.pb import kv_pb2
from kvstore.errors import NOT_APPLIED, DeadlineExceeded, FailedPrecondition, KVStoreError
from kvstore.leader.local import VERSION_MISMATCH

T = TypeVar("T")


@dataclass(frozen=True)
class LeaderWorkloadSettings:
    clients: int = 4
    keys: int = 4  # hot keys: every client works on all of them
    min_think: float = 0.002
    max_think: float = 0.04
    request_timeout: float = 1.2  # the node's budget for one request
    client_timeout: float = 1.5  # the client gives up after this
    get_weight: float = 0.45
    put_weight: float = 0.2
    cas_weight: float = 0.3  # a read, then a put with if_version
    delete_weight: float = 0.05  # half of them conditional
    retry_share: float = 0.3  # of writes of unknown outcome, sent again

    def describe(self) -> str:
        return (f"{self.clients} clients on {self.keys} hot keys: reads, puts, "
                "compare-and-set, deletes")


def hot_key(index: int) -> str:
    return f"hot-{index}"


@dataclass(frozen=True)
class Write:
    """A put (with its value) or a delete, as sent and as sent again."""

    kind: OpKind
    key: str
    value: str | None
    if_version: int | None
    request_id: bytes
    earlier: Op | None = None  # a retry: the record of the attempt before


class LeaderClient:
    """A client process (a `Host`: it receives the answers to its calls)."""

    def __init__(self, index: int, nodes: list[str], network: Network,
                 settings: LeaderWorkloadSettings, rng: random.Random,
                 history: list[Op], partition_of: Callable[[str], int], *,
                 token_aware: bool) -> None:
        self.index = index
        self._partition_of = partition_of
        self._token_aware = token_aware
        self._leaders: dict[int, str] = {}  # partition -> the leader last heard of
        self.name = f"client{index}"
        self._nodes = nodes
        self._network = network
        self._settings = settings
        self._rng = rng
        self._history = history
        self._keys = [hot_key(i) for i in range(settings.keys)]
        self._seq = 0
        self._unknown: list[Write] = []
        self.last: Op | None = None  # the operation recorded last

    @property
    def running(self) -> bool:
        return True

    @property
    def paused(self) -> bool:
        return False

    def spawn(self, work: Awaitable[None]) -> None:
        raise AssertionError("nobody calls a client")

    async def run(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        settings, rng = self._settings, self._rng
        while loop.time() < until:
            await asyncio.sleep(rng.uniform(settings.min_think, settings.max_think))
            if self._unknown and rng.random() < settings.retry_share:
                await self.write(self._unknown.pop(rng.randrange(len(self._unknown))))
                continue
            key = rng.choice(self._keys)
            (kind,) = rng.choices(["get", "put", "cas", "delete"], weights=[
                settings.get_weight, settings.put_weight, settings.cas_weight,
                settings.delete_weight])
            if kind == "get":
                await self.get(key)
                continue
            if_version = None
            if kind == "cas" or (kind == "delete" and rng.random() < 0.5):
                read = await self.get(key)
                if read is None:
                    continue
                if_version = read.version
            self._seq += 1
            request_id = f"{self.name}-{self._seq}".encode()
            if kind == "delete":
                await self.write(Write("delete", key, None, if_version, request_id))
            else:
                await self.write(Write("put", key, f"{self.index}-{self._seq}", if_version,
                                         request_id))

    async def get(self, key: str, client: int | None = None) -> kv_pb2.GetResponse | None:
        """A linearizable read, recorded (as `client`, if given)."""
        timeout = self._settings.request_timeout
        invoke = _now()
        request = kv_pb2.GetRequest(key=key.encode())
        try:
            response: kv_pb2.GetResponse = await self._request(
                "get", key, lambda p: p.serve_get(request, timeout))
        except KVStoreError as exc:
            outcome: Outcome = UNKNOWN if isinstance(exc, DeadlineExceeded) else FAIL
            self._record(Op(self.index if client is None else client, "get", key, None, invoke,
                            _now(), outcome, error=_describe(exc)))
            return None
        siblings = tuple(text(s) for s in response.siblings)
        self._record(Op(self.index if client is None else client, "get", key, None, invoke,
                        _now(), OK, siblings=siblings, version=response.version))
        return response

    async def write(self, write: Write) -> None:
        """A put or a delete, recorded (`last` is its record)."""
        timeout = self._settings.request_timeout
        invoke = _now() if write.earlier is None else write.earlier.invoke
        work: Callable[[Any], Awaitable[Any]]
        if write.kind == "put":
            assert write.value is not None
            put = kv_pb2.PutRequest(key=write.key.encode(), value=write.value.encode(),
                                    request_id=write.request_id, if_version=write.if_version)
            work = lambda p: p.serve_put(put, timeout)  # noqa: E731
        else:
            delete = kv_pb2.DeleteRequest(key=write.key.encode(), request_id=write.request_id,
                                          if_version=write.if_version)
            work = lambda p: p.serve_delete(delete, timeout)  # noqa: E731
        try:
            response = await self._request(write.kind, write.key, work)
        except KVStoreError as exc:
            outcome, version = _write_outcome(exc)
            if write.earlier is not None and outcome == FAIL and version is None:
                outcome = UNKNOWN  # the earlier attempt may have applied it
            op = Op(self.index, write.kind, write.key, write.value, invoke, _now(), outcome,
                    error=_describe(exc), version=version, if_version=write.if_version)
            self._record(op, write.earlier)
            if outcome == UNKNOWN:
                self._unknown.append(replace(write, earlier=op))
            return
        self._record(Op(self.index, write.kind, write.key, write.value, invoke, _now(), OK,
                        version=response.version, if_version=write.if_version), write.earlier)

    async def _request(self, what: str, key: str, work: Callable[[Any], Awaitable[T]]) -> T:
        partition = self._partition_of(key)
        node = self._leaders.get(partition) if self._token_aware else None
        if node is None:
            node = self._rng.choice(self._nodes)

        async def with_leader(process: Any) -> tuple[T, str | None]:
            return await work(process), process.leader_of(partition)

        try:
            result, leader = await self._network.call(
                self, node, with_leader, self._settings.client_timeout, what, duplicable=False)
        except KVStoreError:
            self._leaders.pop(partition, None)
            raise
        if leader is None:
            self._leaders.pop(partition, None)
        else:
            self._leaders[partition] = leader
        return result

    def _record(self, op: Op, replacing: Op | None = None) -> None:
        if replacing is not None:
            self._history.remove(replacing)
        self._history.append(op)
        self.last = op


def _write_outcome(error: KVStoreError) -> tuple[Outcome, int | None]:
    """A failed write's outcome, and for a version mismatch the current version."""
    if isinstance(error, FailedPrecondition) and error.reason == VERSION_MISMATCH:
        return FAIL, int(error.metadata["current_version"])
    if error.outcome == NOT_APPLIED:
        return FAIL, None
    return UNKNOWN, None


def _describe(error: KVStoreError) -> str:
    return f"{type(error).__name__}: {error}"


def _now() -> float:
    return asyncio.get_running_loop().time()
