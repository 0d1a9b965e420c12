"""The end of a chaos run, once the workload has stopped and every process is
healthy: the wait until the replicas agree by themselves, then the final
state of every key.

- `wait_roots_equal`: polls every node's Merkle root of every partition it
  replicates (`Replica.Batch`'s `roots`) until all replicas
  of every partition report the same root, or a timeout passes. Nothing is
  read through the KV service meanwhile, so no read repair helps: only
  hinted handoff and anti-entropy can make the roots equal.
- `final_reads`: each key read at r="all" through the nodes, retried until
  it succeeds or a deadline passes, recorded in the history as the checker's
  own reads (client -1). A read at r=all asks every replica, and read repair
  then brings those that showed less up to the merged state.
- `ReplicaReader`: a key's state, or a partition's Merkle root, on each of
  its replicas, asked directly with `Replica.Batch` (as tests/test_cluster.py
  does); reads there never repair anything.
- `wait_converged`: after the final reads, polls the replicas until all
  replicas of every key hold equal states, reading the keys that differ at
  r=all again once a second. Equal roots imply equal states, so this
  normally ends at its first look; it checks the final states key by key
  and gives the agreed states the checkers need.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import grpc.aio

import kvclient
from chaos.checkers import Roots, differing_partitions, divergent_keys, partitions_with_keys
from chaos.history import FINAL_READER, OK, History, Op, describe_error, outcome_of, text
from kvclient.pb import replica_pb2, replica_pb2_grpc
from kvstore.causality import versions
from kvclient.security import PLAINTEXT, Credentials
from kvstore.placement.membership import ClusterSpec
from kvstore.rpc.channels import open_aio_channel
from kvstore.leaderless.merkle import MerkleTree
from kvstore.causality.versions import DVVSet

READ_TIMEOUT = 5.0  # one r=all read, or one Batch call to a replica
RETRY_INTERVAL = 0.2  # between attempts of a final read that failed
POLL_INTERVAL = 0.1  # between two looks at the replicas
REPAIR_INTERVAL = 1.0  # between two rounds of r=all reads of the keys that differ
ROOTS_POLL_INTERVAL = 0.25  # between two looks at every node's Merkle roots
BATCH_KEYS = 200  # keys per Replica.Batch call
CONCURRENT_READS = 32  # r=all reads in flight at once

States = dict[str, dict[str, DVVSet | None]]  # key -> node id -> state (None: holds nothing)


class ReplicaReader:
    """`async with ReplicaReader(spec, credentials) as reader:` one channel
    per node; `credentials` must make an admin (the Replica service refuses
    clients)."""

    def __init__(self, spec: ClusterSpec, credentials: Credentials = PLAINTEXT) -> None:
        self._spec = spec
        self._credentials = credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> ReplicaReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for channel in self._channels.values():
            await channel.close()

    def _stub(self, node_id: str) -> replica_pb2_grpc.ReplicaStub:
        if node_id not in self._channels:
            address = self._spec.member(node_id).address
            self._channels[node_id] = open_aio_channel(address, credentials=self._credentials)
        return replica_pb2_grpc.ReplicaStub(self._channels[node_id])

    async def states(self, keys: Sequence[str]) -> tuple[States, list[str]]:
        """Every key's state on every replica of its preference list, and the
        keys some replica of which could not be read."""
        keys_of: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            for node_id in self._spec.preference_list(key.encode()):
                keys_of[node_id].append(key)
        calls = [(node_id, node_keys[start:start + BATCH_KEYS])
                 for node_id, node_keys in keys_of.items()
                 for start in range(0, len(node_keys), BATCH_KEYS)]
        answers = await asyncio.gather(*(self._read(n, chunk) for n, chunk in calls),
                                       return_exceptions=True)
        states: States = {key: {} for key in keys}
        unreadable: set[str] = set()
        for (node_id, chunk), answer in zip(calls, answers):
            if isinstance(answer, BaseException):
                unreadable.update(chunk)
                continue
            for key, state in answer.items():
                states[key][node_id] = state
        for key in unreadable:
            states.pop(key, None)
        return states, sorted(unreadable)

    async def roots(self, replicas_of: Mapping[int, Sequence[str]]) -> Roots:
        """Every node's Merkle root of each partition it replicates; a node
        that did not answer is left out, and so is a partition it refused."""
        partitions_of: dict[str, list[int]] = defaultdict(list)
        for partition, nodes in replicas_of.items():
            for node_id in nodes:
                partitions_of[node_id].append(partition)
        nodes = list(partitions_of)
        answers = await asyncio.gather(*(self._roots(n, partitions_of[n]) for n in nodes),
                                       return_exceptions=True)
        return {node_id: answer for node_id, answer in zip(nodes, answers)
                if not isinstance(answer, BaseException)}

    async def _roots(self, node_id: str, partitions: list[int]) -> dict[int, bytes]:
        op = replica_pb2.ReplicaOp(roots=replica_pb2.ReplicaRoots(partitions=partitions))
        response = await self._stub(node_id).Batch(replica_pb2.ReplicaBatchRequest(ops=[op]),
                                                   timeout=READ_TIMEOUT)
        [result] = response.results
        if result.status.code or len(result.hashes) != len(partitions):
            raise RuntimeError(f"{node_id}: roots: {result.status.message}")
        return dict(zip(partitions, result.hashes))

    async def _read(self, node_id: str, keys: list[str]) -> dict[str, DVVSet | None]:
        ops = [replica_pb2.ReplicaOp(read=replica_pb2.ReplicaRead(key=key.encode()))
               for key in keys]
        response = await self._stub(node_id).Batch(replica_pb2.ReplicaBatchRequest(ops=ops),
                                                   timeout=READ_TIMEOUT)
        states: dict[str, DVVSet | None] = {}
        for key, result in zip(keys, response.results, strict=True):
            if result.status.code:
                raise RuntimeError(f"{node_id}: {key}: {result.status.message}")
            states[key] = versions.decode(result.state) if result.found else None
        return states


async def _read_all(client: kvclient.AsyncClient, key: str, history: History) -> list[str] | None:
    """One r=all read, recorded; its siblings, or None when it failed."""
    invoke = history.now()
    try:
        result = await client.get(key.encode(), r="all", timeout=READ_TIMEOUT)
    except kvclient.errors.KVError as exc:
        history.add(Op(FINAL_READER, "get", key, None, invoke, history.now(),
                       outcome_of("get", exc), error=describe_error(exc)))
        return None
    siblings = [text(s) for s in result.siblings]
    history.add(Op(FINAL_READER, "get", key, None, invoke, history.now(), OK,
                   siblings=tuple(siblings)))
    return siblings


async def final_reads(addresses: Sequence[str], keys: Sequence[str], history: History,
                      timeout: float = 60.0, credentials: Credentials = PLAINTEXT
                      ) -> dict[str, list[str] | None]:
    """Every key read at r="all", each retried until it succeeds or `timeout`
    passes (then None)."""
    deadline = time.monotonic() + timeout
    in_flight = asyncio.Semaphore(CONCURRENT_READS)

    async def read(client: kvclient.AsyncClient, key: str) -> list[str] | None:
        async with in_flight:
            while (siblings := await _read_all(client, key, history)) is None:
                if time.monotonic() + RETRY_INTERVAL > deadline:
                    return None
                await asyncio.sleep(RETRY_INTERVAL)  # retry interval, not synchronisation
            return siblings

    async with kvclient.AsyncClient(list(addresses), timeout=READ_TIMEOUT,
                                    tls=credentials.tls, token=credentials.token) as client:
        found = await asyncio.gather(*(read(client, key) for key in keys))
    return dict(zip(keys, found))


def replicas_by_partition(spec: ClusterSpec) -> dict[int, list[str]]:
    return {partition: spec.ring.preference_list(partition, spec.replicas)
            for partition in range(spec.partitions)}


@dataclass(frozen=True)
class RootConvergence:
    converged: bool
    seconds: float  # from `since` until every partition's replicas reported one root (or gave up)
    partitions: int
    with_keys: int  # partitions whose roots (at the last look) are not the empty tree's
    differing_at_start: list[int]  # partitions whose replicas' roots differed at the first look
    differing_at_end: list[int]  # partitions still differing when it gave up
    polls: int


async def wait_roots_equal(reader: ReplicaReader, spec: ClusterSpec, history: History,
                           since: float, timeout: float) -> RootConvergence:
    """Poll every node's Merkle roots until all replicas of every partition
    report the same one, or until `timeout` seconds after `since` (run clock,
    when every process was healthy). Reads nothing through the KV service."""
    replicas_of = replicas_by_partition(spec)
    roots = await reader.roots(replicas_of)
    at_start = differing = differing_partitions(roots, replicas_of)
    polls = 1
    while differing and history.now() - since <= timeout:
        await asyncio.sleep(ROOTS_POLL_INTERVAL)  # polling interval, not synchronisation
        roots = await reader.roots(replicas_of)
        differing = differing_partitions(roots, replicas_of)
        polls += 1
    # The nodes' trees have the default shape (kvstore.leaderless.merkle's defaults).
    with_keys = partitions_with_keys(roots, replicas_of, MerkleTree().root())
    return RootConvergence(not differing, history.now() - since, len(replicas_of), with_keys,
                           at_start, differing, polls)


@dataclass(frozen=True)
class Convergence:
    converged: bool
    seconds: float  # from `since` until every replica of every key agreed (or gave up)
    divergent_at_start: list[str]  # keys whose replicas differed when the workload stopped
    divergent_at_end: list[str]  # keys still differing (or unreadable) when it gave up
    repair_rounds: int  # rounds of r=all reads made to trigger read repair
    # key -> the state all its replicas hold (every key, or those that agreed)
    agreed: dict[str, DVVSet | None] = field(default_factory=dict)

    @property
    def final_values(self) -> dict[str, list[str]]:
        return {key: [] if state is None else [text(v) for v in state.values]
                for key, state in self.agreed.items()}


async def wait_converged(reader: ReplicaReader, addresses: Sequence[str], keys: Sequence[str],
                         history: History, since: float,
                         divergent_at_start: list[str], timeout: float = 30.0,
                         credentials: Credentials = PLAINTEXT) -> Convergence:
    """Poll until all replicas of every key hold equal states, triggering read
    repair of the keys that differ once a second; `since` (run clock) is when
    the wait is counted from. Call it right after `final_reads`, the first
    round of repair. (After equal Merkle roots the first look should find
    every key agreed; the timeout only bounds a failed run.)"""
    rounds = 0
    last_repair = time.monotonic()  # the final reads just made were a round
    async with kvclient.AsyncClient(list(addresses), timeout=READ_TIMEOUT,
                                    tls=credentials.tls, token=credentials.token) as client:
        while True:
            states, unreadable = await reader.states(keys)
            waiting = sorted({*divergent_keys(states), *unreadable})
            elapsed = history.now() - since
            if not waiting:
                agreed = {key: next(iter(by_node.values()), None)
                          for key, by_node in states.items()}
                return Convergence(True, elapsed, divergent_at_start, [], rounds, agreed)
            if elapsed > timeout:
                agreed = {key: next(iter(by_node.values()), None)
                          for key, by_node in states.items() if key not in waiting}
                return Convergence(False, elapsed, divergent_at_start, waiting, rounds, agreed)
            if time.monotonic() - last_repair >= REPAIR_INTERVAL:
                rounds += 1
                last_repair = time.monotonic()
                await _repair(client, waiting, history)
            await asyncio.sleep(POLL_INTERVAL)  # polling interval, not synchronisation


async def _repair(client: kvclient.AsyncClient, keys: Sequence[str], history: History) -> None:
    """Read `keys` at r=all once each: read repair does the rest."""
    in_flight = asyncio.Semaphore(CONCURRENT_READS)

    async def read(key: str) -> None:
        async with in_flight:
            await _read_all(client, key, history)

    await asyncio.gather(*(read(key) for key in keys))
