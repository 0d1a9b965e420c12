"""`RaftDriver`: the asyncio shell around a node's `MultiRaft`: it ticks the
host, runs its passes (persisting each in a dedicated thread, never on the
event loop), hands envelopes to the transport, and answers the callers'
futures.

    async with RaftDriver(host, store, transport, IntervalTicker(0.1)) as raft:
        outcome = await raft.put(partition, key, value, request_id=rid, timeout=2.0)
        value = await raft.get(partition, key, timeout=2.0)

The seams are protocols: `Transport` (where envelopes go: the peer-pair
stream, later; an in-memory one in tests), `Ticker` (when the next tick
is: a fixed interval in production, one the test advances by hand) and
`PassWriter` (how a pass's write reaches the store: `ThreadWriter`, in a
dedicated thread, unless the caller passes another; the simulation's takes
virtual time and can crash between sending and persisting). Envelopes that
arrive go to `receive`.

One pass at a time: the loop takes the host's pass, sends what may leave
before persisting, awaits the write in the persist thread, finishes the
pass and sends the rest; inputs that arrive meanwhile wait for the next
pass, which starts as soon as this one ends (group commit without a timer).

Every call has a deadline. A write not answered by then may still commit:
it raises DeadlineExceeded with outcome `unknown`, never a definite failure.
`on_leader_change` hears of every group's change of leader as the pass
that learnt it ends (for the process's leader book and its metrics).
A refusal (NOT_LEADER, a stopped partition) raises the host's error. On
stop, the loops are cancelled and awaited, a write under way finishes
(the store is not closed under it), and calls still waiting are answered
Unavailable with outcome `unknown`.
"""

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Protocol, Self

from kvstore.errors import UNKNOWN, DeadlineExceeded, KVStoreError, Unavailable
from kvstore.leader.commands import Command, Delete, Put
from kvstore.leader.envelopes import Envelope
from kvstore.leader.host import LeaderChange, MultiRaft, Pass
from kvstore.leader.persistence import PassResult, PassWrite, RaftStore
from kvstore.leader.raft.messages import NodeId
from kvstore.leader.state_machine import Outcome
from kvstore.leader.waiters import ReadValue, Release, Result, Ticket

logger = logging.getLogger(__name__)


class Transport(Protocol):
    def send(self, envelope: Envelope) -> None:
        """Hand `envelope` to the link to `envelope.to`. Never blocks; may
        drop it (Raft sends again what matters)."""
        ...


class Ticker(Protocol):
    async def wait(self) -> None:
        """Return at the next tick."""
        ...


class IntervalTicker:
    """A tick every `seconds` of the event loop's clock, without drift."""

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"the tick interval must be positive, got {seconds}")
        self._seconds = seconds
        self._next: float | None = None

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._next = max(now, (self._next or now) + self._seconds)
        await asyncio.sleep(self._next - now)


class PassWriter(Protocol):
    async def write(self, batch: PassWrite) -> PassResult:
        """Do the pass's write (`RaftStore.write`) without blocking the event loop."""
        ...

    async def close(self) -> None:
        """Return once a write under way has finished (the store may then close)."""
        ...


class ThreadWriter:
    """Each write in one dedicated thread, never on the event loop."""

    def __init__(self, store: RaftStore) -> None:
        self._store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raft-persist")

    async def write(self, batch: PassWrite) -> PassResult:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._store.write,
                                                                batch)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)


class RaftDriver:
    def __init__(self, host: MultiRaft, store: RaftStore, transport: Transport,
                 ticker: Ticker, *,
                 on_leader_change: Callable[[LeaderChange], None] = lambda change: None,
                 writer: Callable[[RaftStore], PassWriter] = ThreadWriter) -> None:
        """`writer` makes the driver's `PassWriter` over `store` when it starts."""
        self._host = host
        self._on_leader_change = on_leader_change
        self._store = store
        self._make_writer = writer
        self._transport = transport
        self._ticker = ticker
        self._work = asyncio.Event()
        self._waiting: dict[Ticket, asyncio.Future[Result | None]] = {}  # None: timed out
        self._writer: PassWriter | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._running = False

    async def __aenter__(self) -> Self:
        if self._tasks is not None:
            raise RuntimeError("a RaftDriver runs once")
        self._writer = self._make_writer(self._store)
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._loops = [self._tasks.create_task(self._run_passes(), name="raft-passes"),
                       self._tasks.create_task(self._run_ticks(), name="raft-ticks")]
        self._running = True
        self._work.set()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._tasks is not None and self._writer is not None
        self._running = False
        for task in self._loops:
            task.cancel()
        try:
            await self._tasks.__aexit__(None, None, None)
        finally:
            # A write under way finishes before the caller may close the store.
            await self._writer.close()
            stopping = Unavailable("the node's Raft driver stopped before answering",
                                   reason="STOPPING", metadata={"outcome": UNKNOWN})
            for future in self._waiting.values():
                if not future.done():
                    future.set_result(stopping)
            self._waiting.clear()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def pending(self) -> int:
        """Calls waiting for their answer (a gauge)."""
        return len(self._waiting)

    # -- calls ---------------------------------------------------------------------------

    async def put(self, group: int, key: bytes, value: bytes, *, request_id: bytes,
                  if_version: int | None = None, timeout: float) -> Outcome:
        return await self.propose(group, Put(key, value, request_id, if_version=if_version),
                                  timeout=timeout)

    async def delete(self, group: int, key: bytes, *, request_id: bytes,
                     if_version: int | None = None, timeout: float) -> Outcome:
        return await self.propose(group, Delete(key, request_id, if_version=if_version),
                                  timeout=timeout)

    async def propose(self, group: int, command: Command, *, timeout: float) -> Outcome:
        result = await self._call(self._host.propose(group, command), timeout,
                                  f"the write to partition {group}")
        assert isinstance(result, Outcome), result
        return result

    async def get(self, group: int, key: bytes, *, timeout: float) -> ReadValue:
        """A linearizable read (ReadIndex, or the lease: the host's settings)."""
        result = await self._call(self._host.read(group, key), timeout,
                                  f"the read of partition {group}")
        assert isinstance(result, ReadValue), result
        return result

    def entry_term(self, group: int, index: int) -> int | None:
        """The term of `group`'s entry at `index` (`MultiRaft.entry_term`)."""
        return self._host.entry_term(group, index)

    def get_stale(self, group: int, key: bytes) -> ReadValue:
        """This replica's committed value, however far behind the leader."""
        return self._host.read_local(group, key)

    def receive(self, envelope: Envelope) -> None:
        """An envelope from a peer (on the event loop's thread)."""
        self._host.receive(envelope)
        self._work.set()

    def transfer_leadership(self, group: int, to: NodeId) -> None:
        """Ask `group`'s leader (this node) to hand over to `to`; a leader
        change says when it has (nothing happens on a follower)."""
        self._host.transfer_leadership(group, to)
        self._work.set()

    def report_unreachable(self, peer: NodeId) -> None:
        """The transport could not deliver to `peer`."""
        self._host.report_unreachable(peer)
        self._work.set()

    async def _call(self, ticket: Ticket, timeout: float, what: str) -> Result:
        if not self._running:
            self._host.cancel(ticket)
            raise Unavailable("the node's Raft driver is not running; retry on another node",
                              reason="STOPPING", metadata={"outcome": "not_applied"})
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result | None] = loop.create_future()
        self._waiting[ticket] = future
        self._work.set()
        # A bare timer rather than asyncio.timeout: one per call, and this is
        # every write's and every read's path (asyncio.timeout took 5% of a
        # busy node's event loop).
        expiry = loop.call_later(timeout, _time_out, future)
        try:
            result = await future
        finally:
            expiry.cancel()
            self._waiting.pop(ticket, None)
        if result is None:
            self._host.cancel(ticket)
            raise DeadlineExceeded(f"{what} was not answered within {timeout:g} s; it may still "
                                   "apply", reason="DEADLINE_EXCEEDED",
                                   metadata={"outcome": UNKNOWN})
        if isinstance(result, KVStoreError):
            raise result
        return result

    # -- the loops --------------------------------------------------------------------------

    async def _run_ticks(self) -> None:
        while True:
            await self._ticker.wait()
            self._host.tick()
            self._work.set()

    async def _run_passes(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._host.has_work():
                p = self._host.start_pass()
                if p is not None:
                    await self._run_pass(p)

    async def _run_pass(self, p: Pass) -> None:
        self._answer(p.released)
        self._send(p.send)
        if p.write is None:
            finished = self._host.finish_pass(p, PassResult())
        else:
            assert self._writer is not None
            try:
                result = await self._writer.write(p.write)
            except Exception as exc:
                logger.error("a Raft persist pass failed: %s", exc, exc_info=exc)
                finished = self._host.abort_pass(p, exc)
            else:
                finished = self._host.finish_pass(p, result)
        self._send(finished.send)
        self._answer(finished.released)
        for problem in finished.problems:
            logger.warning("%s", problem)
        for change in finished.leaders:
            self._on_leader_change(change)

    def _send(self, envelopes: tuple[Envelope, ...]) -> None:
        for envelope in envelopes:
            self._transport.send(envelope)

    def _answer(self, released: tuple[Release, ...]) -> None:
        for release in released:
            future = self._waiting.pop(release.ticket, None)
            if future is not None and not future.done():
                future.set_result(release.result)


def _time_out(future: "asyncio.Future[Result | None]") -> None:
    if not future.done():
        future.set_result(None)
