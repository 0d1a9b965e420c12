"""Simulated clients: each sends gets, puts and deletes to a node it picks
at random, across the network, and records every operation in the history
(`chaos.history.Op`, the record the real chaos suite keeps, so the same
checkers judge both).

A client keeps the context of the last answer it had for each key and
passes it with most writes (read-modify-write: a delete then supersedes what
the client saw, which `check_superseded` relies on); the rest are blind.
Every put writes a value of its own ("c2-17": client 2's 17th put); some
go to keys of the client's own written once ("u2-5"), which nothing can
supersede, so the lost-write check covers every one of them. Writes
use a quorum (w=2) or all (w=3), some refuse stand-ins (strict quorum);
reads ask one, two or all replicas. A write's outcome follows the error it
got, as `chaos.history.outcome_of` says: refused (the node was not running,
or the store said "not_applied") is a failure, a timeout or any other error
is unknown.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from chaos.history import FAIL, OK, UNKNOWN, Op, OpKind, Outcome, text
from chaos.sim.network import Network
from chaos.sim.node import NodeProcess
from kvstore import causal_context
from kvstore.causality import versions
from kvstore.causality.versions import DVVSet
from kvstore.errors import NOT_APPLIED, DeadlineExceeded, FailedPrecondition, InvalidArgument
from kvstore.errors import KVStoreError
from kvstore.leaderless.coordinator import Coordinator

T = TypeVar("T")


@dataclass(frozen=True)
class WorkloadSettings:
    clients: int = 4
    keys: int = 12
    min_think: float = 0.002  # seconds between one client's operations
    max_think: float = 0.05
    request_timeout: float = 1.0  # the coordinator's budget for one request
    client_timeout: float = 1.5  # the client gives up after this
    get_share: float = 0.35
    delete_share: float = 0.15
    with_context_share: float = 0.7
    strict_share: float = 0.5
    fresh_share: float = 0.25  # puts to a key of the client's own, written once

    def describe(self) -> str:
        return (f"{self.clients} clients, {self.keys} keys, {self.get_share:.0%} gets, "
                f"{self.delete_share:.0%} deletes, {self.strict_share:.0%} of writes strict")


class SimClient:
    """A client process (a `Host`: it receives the answers to its calls)."""

    def __init__(self, index: int, nodes: list[str], network: Network,
                 settings: WorkloadSettings, rng: random.Random, history: list[Op],
                 on_acknowledged: Callable[[Op, DVVSet], None] = lambda op, state: None) -> None:
        self.index = index
        self.name = f"client{index}"
        self._nodes = nodes
        self._network = network
        self._settings = settings
        self._rng = rng
        self._history = history
        self._on_acknowledged = on_acknowledged
        self._contexts: dict[str, bytes] = {}
        self._fresh: list[str] = []
        self._puts = 0
        self._ops = 0

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
            key = f"k{rng.randrange(settings.keys)}"
            roll = rng.random()
            if rng.random() < settings.fresh_share:
                # Written once, so nothing can supersede it: every
                # acknowledged one is checked at the end; read back later.
                if self._fresh and rng.random() < settings.get_share:
                    # Often the latest: a read soon after its write is where
                    # replicas still differ.
                    recent = rng.random() < 0.5
                    await self._get(self._fresh[-1] if recent else rng.choice(self._fresh))
                else:
                    self._fresh.append(f"u{self.index}-{len(self._fresh)}")
                    await self._write(self._fresh[-1], delete=False)
            elif roll < settings.get_share:
                await self._get(key)
            else:
                await self._write(key, delete=roll < settings.get_share + settings.delete_share)

    async def _get(self, key: str) -> None:
        r = self._rng.choice((1, 2, 2, 3, 3))
        invoke = _now()
        try:
            state: DVVSet | None = await self._request(
                "get", lambda p: _coordinator(p).get(key.encode(), r,
                                                     self._settings.request_timeout))
        except KVStoreError as exc:
            outcome: Outcome = UNKNOWN if isinstance(exc, DeadlineExceeded) else FAIL
            self._record(Op(self.index, "get", key, None, invoke, _now(), outcome,
                            error=_describe(exc), replicas=r))
            return
        self._contexts[key] = causal_context.encode(versions.join(state))
        siblings = tuple(text(s.value) for s in sorted(
            state.live, key=lambda s: (s.timestamp, s.dot))) if state is not None else ()
        self._record(Op(self.index, "get", key, None, invoke, _now(), OK, siblings=siblings,
                        replicas=r))

    async def _write(self, key: str, *, delete: bool) -> None:
        settings, rng = self._settings, self._rng
        w = rng.choice((2, 2, 2, 3))
        strict = rng.random() < settings.strict_share
        context = self._contexts.get(key, b"") if rng.random() < settings.with_context_share \
            else b""
        value: str | None = None
        if not delete:
            self._puts += 1
            value = f"c{self.index}-{self._puts}"
        self._ops += 1
        request_id = f"{self.name}-{self._ops}".encode()
        kind: OpKind = "delete" if delete else "put"
        invoke = _now()
        try:
            state: DVVSet = await self._request(kind, lambda p: _coordinator(p).put(
                key.encode(), b"" if value is None else value.encode(), delete, context, w,
                request_id, settings.request_timeout, sloppy=not strict))
        except KVStoreError as exc:
            self._record(Op(self.index, kind, key, value, invoke, _now(), _write_outcome(exc),
                            error=_describe(exc), context=context.hex(), replicas=w,
                            strict=strict))
            return
        self._contexts[key] = causal_context.encode(versions.join(state))
        op = Op(self.index, kind, key, value, invoke, _now(), OK, context=context.hex(),
                replicas=w, strict=strict)
        self._record(op)
        if not delete:
            self._on_acknowledged(op, state)

    async def _request(self, what: str, work: Callable[[NodeProcess], Awaitable[T]]) -> T:
        node = self._rng.choice(self._nodes)
        return await self._network.call(self, node, work, self._settings.client_timeout, what,
                                        duplicable=False)

    def _record(self, op: Op) -> None:
        self._history.append(op)


def _coordinator(process: NodeProcess) -> Coordinator:
    assert process.coordinator is not None
    return process.coordinator


def _write_outcome(error: KVStoreError) -> Outcome:
    if isinstance(error, (InvalidArgument, FailedPrecondition)) or error.outcome == NOT_APPLIED:
        return FAIL
    return UNKNOWN


def _describe(error: KVStoreError) -> str:
    return f"{type(error).__name__}: {error}"


def _now() -> float:
    return asyncio.get_running_loop().time()
