"""The client's side of token-aware routing: fetch the topology from the
given addresses, keep the routing table, refresh it, and give up on it
where it does not apply.

`token_aware`: None (the default) routes by key when the given addresses
are nodes (the topology's answer says `role` "node"), and sends everything
through them when they are coordinators (their cache and its promise apply);
True routes by key whatever answered; False never asks. In leader mode a
forwarded answer names the partition's leader, and `follow` moves the
table's preference there (a leader that moved, or that the topology did not
know yet when it was fetched).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import grpc

from kvclient.pb import kv_pb2, kv_pb2_grpc
from kvclient.routing import RoutingTable

# How long one Topology call may take, and how long a call waits for the
# first answer before it goes out unrouted (the fetch goes on).
FETCH_TIMEOUT_SECONDS = 1.0
# A table older than this is fetched again in the background (membership is
# static today; this is how a client would learn of a change).
REFRESH_SECONDS = 30.0
# After no address answered, or answered that it has no Topology (an older
# node), how long calls go unrouted before the next try.
RETRY_SECONDS = 5.0
UNSUPPORTED_RETRY_SECONDS = 60.0


class Router:
    def __init__(self, token_aware: bool | None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._token_aware = token_aware
        self._clock = clock
        self._table: RoutingTable | None = None
        self._fetched_at = 0.0
        self._retry_at = 0.0
        self._through_coordinators = False  # the answer said coordinator, token_aware None
        self._fetch: asyncio.Task[None] | None = None

    async def table(self, addresses: Sequence[str],
                    stub: Callable[[str], kv_pb2_grpc.KVStub],
                    wait: float = FETCH_TIMEOUT_SECONDS) -> RoutingTable | None:
        """The routing table, or None when calls go unrouted; waits at most
        `wait` seconds for a first answer."""
        if self._token_aware is False or self._through_coordinators:
            return None
        now = self._clock()
        if self._table is not None:
            if now - self._fetched_at > REFRESH_SECONDS:
                self._start(addresses, stub)
            return self._table
        if now < self._retry_at:
            return None
        fetch = self._start(addresses, stub)
        try:
            await asyncio.wait_for(asyncio.shield(fetch), wait)
        except TimeoutError:
            pass  # this call goes unrouted; the fetch goes on for the next ones
        return self._table

    def follow(self, key: bytes, leader: str) -> None:
        """An answer said `leader` leads `key`'s partition now (leader mode):
        the partition's next calls go there first."""
        if self._table is not None:
            self._table = self._table.with_leader(key, leader)

    async def close(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)
            self._fetch = None

    def _start(self, addresses: Sequence[str],
               stub: Callable[[str], kv_pb2_grpc.KVStub]) -> asyncio.Task[None]:
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.ensure_future(self._fetch_topology(tuple(addresses), stub))
        return self._fetch

    async def _fetch_topology(self, addresses: tuple[str, ...],
                              stub: Callable[[str], kv_pb2_grpc.KVStub]) -> None:
        unsupported = False
        for address in addresses:
            try:
                answer = await stub(address).Topology(kv_pb2.TopologyRequest(),
                                                      timeout=FETCH_TIMEOUT_SECONDS)
            except grpc.RpcError as error:
                unsupported |= error.code() == grpc.StatusCode.UNIMPLEMENTED
                continue
            self._learn(answer)
            return
        self._retry_at = self._clock() + (UNSUPPORTED_RETRY_SECONDS if unsupported
                                          else RETRY_SECONDS)

    def _learn(self, answer: kv_pb2.TopologyResponse) -> None:
        if self._token_aware is None and answer.role != "node":
            self._through_coordinators = True
            self._table = None
            return
        table = RoutingTable.from_topology(answer)
        if table is None:  # an answer this client cannot route by: ask again later
            self._retry_at = self._clock() + UNSUPPORTED_RETRY_SECONDS
        self._table = table
        self._fetched_at = self._clock()
