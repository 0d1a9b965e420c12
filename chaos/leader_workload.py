"""The workload of a leader-mode chaos run: client tasks doing linearizable
reads, blind writes and compare-and-set on a few hot keys, through the
nodes and the coordinators, recording each operation with its versions for
the linearizability check (`chaos.linearizability`).

Every put writes a value no other put writes (f"{client}-{seq}"). A
compare-and-set reads the key first and writes with `if_version` set to the
version it read (0 when absent); a refusal (VersionMismatch) is recorded as
failed with the current version it named, which the checker uses too. A
few deletes, blind or conditional, empty keys again. Each task has its own
`kvclient.AsyncClient` over every address; half the tasks route by key
(straight to a partition's leader), half go round robin (through the
coordinator or a node that forwards). It never injects faults and never
judges what it saw.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

import kvclient
from chaos.history import OK, UNKNOWN, History, Op, OpKind, Outcome, describe_error, outcome_of
from chaos.history import text
from kvclient.security import PLAINTEXT, Credentials

# A call the client's own deadline did not end within this much more is
# recorded as stuck (unknown) rather than awaited forever.
STUCK_MARGIN = 10.0


@dataclass(frozen=True)
class LeaderWorkloadSettings:
    clients: int = 8
    keys: int = 5  # hot keys: every client works on all of them
    timeout: float = 4.0  # seconds per operation, retries included
    get_weight: float = 0.45
    put_weight: float = 0.2
    cas_weight: float = 0.3  # a read, then a put with if_version
    delete_weight: float = 0.05  # half of them conditional


def hot_key(index: int) -> str:
    return f"hot-{index}"


class LeaderWorkload:
    def __init__(self, addresses: Sequence[str], history: History,
                 settings: LeaderWorkloadSettings, seed: int,
                 credentials: Credentials = PLAINTEXT) -> None:
        self._addresses = list(addresses)
        self._credentials = credentials
        self._history = history
        self._settings = settings
        self._seed = seed
        self.keys = [hot_key(i) for i in range(settings.keys)]

    async def run(self, until: float) -> None:
        async with asyncio.TaskGroup() as tasks:
            for index in range(self._settings.clients):
                rng = random.Random(f"{self._seed}/leader-client/{index}")
                tasks.create_task(self._client(index, rng, until))

    async def _client(self, index: int, rng: random.Random, until: float) -> None:
        shift = index % len(self._addresses)
        addresses = self._addresses[shift:] + self._addresses[:shift]
        settings = self._settings
        async with kvclient.AsyncClient(addresses, timeout=settings.timeout,
                                        token_aware=index % 2 == 0,
                                        tls=self._credentials.tls,
                                        token=self._credentials.token) as client:
            seq = 0
            while self._history.now() < until:
                key = rng.choice(self.keys)
                (kind,) = rng.choices(["get", "put", "cas", "delete"], weights=[
                    settings.get_weight, settings.put_weight, settings.cas_weight,
                    settings.delete_weight])
                if kind == "get":
                    await self._get(client, index, key)
                    continue
                if_version = None
                if kind == "cas" or (kind == "delete" and rng.random() < 0.5):
                    read = await self._get(client, index, key)
                    if read is None:
                        continue
                    if_version = read.version
                if kind == "delete":
                    await self._write(client, index, "delete", key, None, if_version)
                else:
                    seq += 1
                    await self._write(client, index, "put", key, f"{index}-{seq}", if_version)

    async def _get(self, client: kvclient.AsyncClient, index: int,
                   key: str) -> kvclient.GetResult | None:
        invoke = self._history.now()
        try:
            async with asyncio.timeout(self._settings.timeout + STUCK_MARGIN):
                result = await client.get(key.encode())
        except Exception as exc:  # every failure is part of the history
            self._history.add(self._failed(index, "get", key, None, invoke, exc, None))
            return None
        self._history.add(Op(index, "get", key, None, invoke, self._history.now(), OK,
                             siblings=tuple(text(s) for s in result.siblings),
                             version=result.version))
        return result

    async def _write(self, client: kvclient.AsyncClient, index: int, kind: OpKind, key: str,
                     value: str | None, if_version: int | None) -> None:
        invoke = self._history.now()
        try:
            async with asyncio.timeout(self._settings.timeout + STUCK_MARGIN):
                if kind == "put":
                    assert value is not None
                    result = await client.put(key.encode(), value.encode(),
                                              if_version=if_version)
                else:
                    result = await client.delete(key.encode(), if_version=if_version)
        except Exception as exc:  # every failure is part of the history
            self._history.add(self._failed(index, kind, key, value, invoke, exc, if_version))
            return
        self._history.add(Op(index, kind, key, value, invoke, self._history.now(), OK,
                             version=result.version, if_version=if_version))

    def _failed(self, index: int, kind: OpKind, key: str, value: str | None, invoke: float,
                exc: BaseException, if_version: int | None) -> Op:
        outcome: Outcome
        version = None
        if isinstance(exc, TimeoutError) and not isinstance(exc, kvclient.errors.KVError):
            outcome, error = UNKNOWN, (f"STUCK: no answer within {self._settings.timeout} s "
                                       f"+ {STUCK_MARGIN} s")
        else:
            outcome, error = outcome_of(kind, exc), describe_error(exc)
            if isinstance(exc, kvclient.errors.VersionMismatch):
                version = exc.current_version
        return Op(index, kind, key, value, invoke, self._history.now(), outcome, error=error,
                  version=version, if_version=if_version)
