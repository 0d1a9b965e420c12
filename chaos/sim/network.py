"""The simulated network: every call between processes is a pair of
messages whose fate a seeded random generator decides.

A message is delayed (a uniform base latency, now and then a long spike, so
messages overtake each other), may be dropped, and may be delivered twice.
Links can be cut one way (`cut(a, b)` stops a's messages to b, not b's to
a), so partitions can be asymmetric and non-transitive (a-b cut while a-c
and c-b work); `heal` restores them. A message to a process that is not
running is refused (as a connection to a closed port is, at once); one to a
paused process waits, as do the messages a paused process sends, until it
resumes. A call whose answer does not come back within its timeout fails
with DeadlineExceeded; the callee may still have done the work.

Client calls are never duplicated: a duplicate of a client's request is a
retry the client does not know it made, and a client that sees one
attempt refused ("nothing was applied") while another applied the write
would record a false history (seed 9524 did; kvclient itself now reports
such a call's outcome as unknown). The store's own calls between nodes are
duplicated, which every replica operation must survive.

Hosts are the running processes (`Host`); the network knows which one is
running under each name now. An answer for an incarnation that has since
crashed is dropped with it. Nothing here reads a clock: delays are timers on
the running (virtual-time) loop.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kvstore.errors import NOT_APPLIED, DeadlineExceeded, KVStoreError, Unavailable

T = TypeVar("T")


class Host(Protocol):
    """A running process the network delivers to (one incarnation of a node, or a client)."""

    name: str

    @property
    def running(self) -> bool:
        """False once the process crashed or stopped: nothing reaches it any more."""
        ...

    @property
    def paused(self) -> bool: ...

    def spawn(self, work: Awaitable[None]) -> None:
        """Run `work` as a task of this process (it dies with the process)."""
        ...


@dataclass(frozen=True)
class NetworkSettings:
    min_delay: float = 0.0002
    max_delay: float = 0.002
    spike_probability: float = 0.01  # a message delayed by up to `spike_delay` instead
    spike_delay: float = 0.1
    drop_probability: float = 0.0
    duplicate_probability: float = 0.0
    # What waited for a paused host arrives, when it resumes, in an order
    # that keeps each sender's messages in order but interleaves the
    # senders at random (as a process that wakes reads its connections),
    # instead of in the order it was sent.
    interleave_held: bool = False

    def describe(self) -> str:
        return (f"delay {self.min_delay * 1000:g}-{self.max_delay * 1000:g} ms, "
                f"{self.spike_probability:.1%} spikes to {self.spike_delay * 1000:g} ms, "
                f"{self.drop_probability:.1%} dropped, {self.duplicate_probability:.1%} duplicated")


class Network:
    def __init__(self, rng: random.Random, settings: NetworkSettings) -> None:
        self._rng = rng
        self.settings = settings
        self._hosts: dict[str, Host] = {}
        self._cuts: set[tuple[str, str]] = set()
        # paused host -> (sender, delivery), in the order they were held
        self._held: dict[str, list[tuple[str, Callable[[], None]]]] = {}
        self.sent = self.dropped = self.duplicated = 0

    # -- who is where ---------------------------------------------------------

    def attach(self, host: Host) -> None:
        self._hosts[host.name] = host

    def detach(self, name: str) -> None:
        self._hosts.pop(name, None)
        self._held.pop(name, None)

    def host(self, name: str) -> Host | None:
        return self._hosts.get(name)

    # -- faults -----------------------------------------------------------------

    def cut(self, src: str, dst: str) -> None:
        """Drop every message from `src` to `dst` from now on (one way)."""
        self._cuts.add((src, dst))

    def heal(self, src: str, dst: str) -> None:
        self._cuts.discard((src, dst))

    def heal_all(self) -> None:
        self._cuts.clear()

    @property
    def cuts(self) -> frozenset[tuple[str, str]]:
        return frozenset(self._cuts)

    def resume(self, name: str) -> None:
        """Deliver what waited for the paused host `name`, in order."""
        held = self._held.pop(name, [])
        if not self.settings.interleave_held:
            for _sender, deliver in held:
                deliver()
            return
        queues: dict[str, list[Callable[[], None]]] = {}
        for sender, deliver in held:
            queues.setdefault(sender, []).append(deliver)
        while queues:
            sender = self._rng.choice(list(queues))
            deliver = queues[sender].pop(0)
            if not queues[sender]:
                del queues[sender]
            deliver()

    # -- calls --------------------------------------------------------------------

    async def call(self, src: Host, dst: str, work: Callable[[Any], Awaitable[T]],
                   timeout: float, what: str, *, duplicable: bool = True) -> T:
        """Run `work` on the host named `dst` and return its result (or raise
        its KVStoreError); DeadlineExceeded when no answer arrives in time.
        `work` is given the host (typed Any: each caller knows which kind
        of host its destination is). Not `duplicable`: the request is
        never delivered twice (a client's call: see the module docstring)."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def deliver() -> None:
            host = self._hosts.get(dst)
            if host is None or not host.running:
                self._send(dst, src.name, lambda: _settle(src, answer, Unavailable(
                    f"{dst} refused the connection ({what}): it is not running",
                    metadata={"outcome": NOT_APPLIED})))
                return
            if host.paused:
                self._held.setdefault(dst, []).append((src.name, deliver))
                return
            host.spawn(self._serve(host, src, work, answer))

        self._send(src.name, dst, deliver, duplicable=duplicable)
        try:
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError:
            raise DeadlineExceeded(f"{dst} did not answer {what} within {timeout:g}s") from None

    def post(self, src: Host, dst: str, handle: Callable[[Any], None], *,
             refused: Callable[[], None] | None = None) -> None:
        """A one-way message: `handle(host)` runs on the host named `dst`
        when it arrives (held while it is paused). One that finds `dst` not
        running is lost, and `refused` runs on the sender when the refusal
        comes back (as a closed port refuses a connection)."""
        def deliver() -> None:
            host = self._hosts.get(dst)
            if host is None or not host.running:
                if refused is not None:
                    self._send(dst, src.name, lambda: refused() if src.running else None)
                return
            if host.paused:
                self._held.setdefault(dst, []).append((src.name, deliver))
                return
            handle(host)

        self._send(src.name, dst, deliver)

    async def _serve(self, host: Host, caller: Host, work: Callable[[Host], Awaitable[T]],
                     answer: "asyncio.Future[T]") -> None:
        outcome: T | KVStoreError
        try:
            outcome = await work(host)
        except KVStoreError as exc:
            outcome = exc
        self._send(host.name, caller.name, lambda: _settle(caller, answer, outcome))

    def _send(self, src: str, dst: str, deliver: Callable[[], None], *,
              duplicable: bool = True) -> None:
        sender = self._hosts.get(src)
        if sender is not None and sender.paused:
            # A paused process sends nothing until it resumes.
            self._held.setdefault(src, []).append(
                (src, lambda: self._send(src, dst, deliver, duplicable=duplicable)))
            return
        self.sent += 1
        rng, settings = self._rng, self.settings
        if (src, dst) in self._cuts or rng.random() < settings.drop_probability:
            self.dropped += 1
            return
        loop = asyncio.get_running_loop()
        loop.call_later(self._delay(), deliver)
        if rng.random() < settings.duplicate_probability and duplicable:
            self.duplicated += 1
            loop.call_later(self._delay(), deliver)

    def _delay(self) -> float:
        rng, settings = self._rng, self.settings
        if rng.random() < settings.spike_probability:
            return rng.uniform(settings.max_delay, settings.spike_delay)
        return rng.uniform(settings.min_delay, settings.max_delay)


def _settle(caller: Host, answer: "asyncio.Future[T]", outcome: "T | KVStoreError") -> None:
    """An answer arrives: kept only if the caller is the incarnation that
    asked, still running, and still waiting (a duplicate is ignored)."""
    if not caller.running or answer.done():
        return
    if isinstance(outcome, KVStoreError):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)
