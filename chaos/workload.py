"""The workload of a chaos run: client tasks doing puts, deletes and reads
over a small, contended key space, recording each operation in the history.

Every put writes a value no other put writes (f"{client}-{seq}"), so a value
read names the one put that wrote it. Half the puts and deletes are blind,
half pass the context of a read just made (a read-modify-write that
resolves siblings). A few puts go to a fresh key nobody writes again
("once-..."): on contended keys only the last writes can be checked for loss
(anything earlier may have been overwritten), while every acknowledged
write-once put must survive. A few others go to a fresh key that is deleted
at once with the put's context and never written again ("gone-..."): its
value must never come back, tombstone collection or not.
Each task has its own `kvclient.AsyncClient` over every coordinator and node
address, so a dead or paused process costs a failover, not the workload.
It never injects faults and never judges what it saw.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

import kvclient
from kvclient.security import PLAINTEXT, Credentials
from chaos.history import (OK, UNKNOWN, History, Op, OpKind, Outcome, describe_error, outcome_of,
                           text)
from kvclient.consistency import Level

# A call the client's own deadline did not end within this much more is
# recorded as stuck (unknown) rather than awaited forever.
STUCK_MARGIN = 10.0


@dataclass(frozen=True)
class WorkloadSettings:
    clients: int = 8
    keys: int = 50
    r: Level = 2
    w: Level = 2
    timeout: float = 4.0  # seconds per operation, retries included
    put_weight: float = 0.45
    delete_weight: float = 0.10
    get_weight: float = 0.45
    context_puts: float = 0.5  # share of puts that read first and pass the context
    context_deletes: float = 0.5  # the same for deletes
    fresh_puts: float = 0.1  # share of puts to a key written only once
    gone_puts: float = 0.05  # share of puts to a fresh key deleted right after


def key_name(index: int) -> str:
    return f"key-{index:03d}"


class Workload:
    def __init__(self, addresses: Sequence[str], history: History, settings: WorkloadSettings,
                 seed: int, credentials: Credentials = PLAINTEXT) -> None:
        self._addresses = list(addresses)
        self._credentials = credentials  # the cluster's client certificate, with TLS
        self._history = history
        self._settings = settings
        self._seed = seed
        # The contended keys (write-once keys are named in the history).
        self.keys = [key_name(i) for i in range(settings.keys)]

    async def run(self, until: float) -> None:
        """Run every client task until the run's clock reaches `until`."""
        async with asyncio.TaskGroup() as tasks:
            for index in range(self._settings.clients):
                rng = random.Random(f"{self._seed}/client/{index}")
                tasks.create_task(self._client(index, rng, until))

    async def _client(self, index: int, rng: random.Random, until: float) -> None:
        # Each client starts its round robin at a different address.
        addresses = self._addresses[index % len(self._addresses):] \
            + self._addresses[:index % len(self._addresses)]
        settings = self._settings
        async with kvclient.AsyncClient(addresses, timeout=settings.timeout,
                                        tls=self._credentials.tls,
                                        token=self._credentials.token) as client:
            seq = 0
            while self._history.now() < until:
                key = rng.choice(self.keys)
                (kind,) = rng.choices(["put", "delete", "get"], weights=[
                    settings.put_weight, settings.delete_weight, settings.get_weight])
                if kind == "get":
                    await self._get(client, index, key)
                    continue
                if kind == "delete":
                    context = await self._context(client, index, key, rng,
                                                  settings.context_deletes)
                    if context is not None:
                        await self._write(client, index, "delete", key, None, context)
                    continue
                seq += 1
                value = f"{index}-{seq}"
                fresh = rng.random()
                if fresh < settings.fresh_puts:
                    await self._write(client, index, "put", f"once-{index}-{seq}", value, b"")
                elif fresh < settings.fresh_puts + settings.gone_puts:
                    gone = f"gone-{index}-{seq}"
                    if (put := await self._write(client, index, "put", gone, value, b"")):
                        await self._write(client, index, "delete", gone, None, put.context)
                else:
                    context = await self._context(client, index, key, rng, settings.context_puts)
                    if context is not None:
                        await self._write(client, index, "put", key, value, context)

    async def _context(self, client: kvclient.AsyncClient, index: int, key: str,
                       rng: random.Random, share: float) -> bytes | None:
        """For a write: b"" (blind), or with probability `share` the context of
        a read made now; None when that read failed (the write is skipped)."""
        if rng.random() >= share:
            return b""
        read = await self._get(client, index, key)
        return None if read is None else read.context

    async def _get(self, client: kvclient.AsyncClient, index: int,
                   key: str) -> kvclient.GetResult | None:
        invoke = self._history.now()
        try:
            async with asyncio.timeout(self._settings.timeout + STUCK_MARGIN):
                result = await client.get(key.encode(), r=self._settings.r)
        except Exception as exc:  # every failure is part of the history
            self._history.add(self._failed(index, "get", key, None, invoke, exc, ""))
            return None
        self._history.add(Op(index, "get", key, None, invoke, self._history.now(), OK,
                             siblings=tuple(text(s) for s in result.siblings)))
        return result

    async def _write(self, client: kvclient.AsyncClient, index: int, kind: OpKind, key: str,
                     value: str | None, context: bytes) -> kvclient.WriteResult | None:
        """One write, recorded; its result, or None when it was not acknowledged."""
        invoke = self._history.now()
        try:
            async with asyncio.timeout(self._settings.timeout + STUCK_MARGIN):
                if kind == "put":
                    assert value is not None
                    result = await client.put(key.encode(), value.encode(), w=self._settings.w,
                                              context=context or None)
                else:
                    result = await client.delete(key.encode(), w=self._settings.w,
                                                 context=context or None)
        except Exception as exc:  # every failure is part of the history
            self._history.add(self._failed(index, kind, key, value, invoke, exc, context.hex()))
            return None
        self._history.add(Op(index, kind, key, value, invoke, self._history.now(), OK,
                             context=context.hex()))
        return result

    def _failed(self, index: int, kind: OpKind, key: str, value: str | None, invoke: float,
                exc: BaseException, context: str) -> Op:
        outcome: Outcome
        # Our safety net, not the client's deadline (DeadlineExceeded is a TimeoutError too).
        if isinstance(exc, TimeoutError) and not isinstance(exc, kvclient.errors.KVError):
            outcome, error = UNKNOWN, (f"STUCK: no answer within {self._settings.timeout} s "
                                       f"+ {STUCK_MARGIN} s")
        else:
            outcome, error = outcome_of(kind, exc), describe_error(exc)
        return Op(index, kind, key, value, invoke, self._history.now(), outcome,
                  error=error, context=context)
