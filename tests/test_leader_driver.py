"""The asyncio shell of the multi-Raft host (`kvstore.leader.driver`):
three drivers on one event loop over LMDB stores, linked by an in-memory
transport that carries every envelope through its wire form, ticked by
hand. Writes commit and are answered with versions, reads are
linearizable, refusals and deadlines say what happened to the write, the
persist pass runs off the event loop, and stopping answers every caller."""

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kvstore.clock import SYSTEM_CLOCK
from kvstore.errors import DeadlineExceeded, Unavailable
from kvstore.leader import wire
from kvstore.leader.driver import IntervalTicker, RaftDriver
from kvstore.leader.envelopes import Envelope
from kvstore.leader.host import MultiRaft
from kvstore.leader.lmdb_store import LmdbRaftStore
from kvstore.leader.persistence import PassResult, PassWrite
from kvstore.leader.quiescence import QuiesceSettings
from kvstore.leader.raft.raft import Role
from kvstore.leader.settings import HostSettings
from kvstore.leader.state_machine import Status
from kvstore.leader.waiters import ReadValue

pytestmark = pytest.mark.timeout(30)

NODES = ("n1", "n2", "n3")
GROUPS = (0, 1)
SETTINGS = HostSettings(election_ticks=10, quiesce=QuiesceSettings(after_ticks=3))


class ManualTicker:
    def __init__(self) -> None:
        self._ticks: asyncio.Queue[None] = asyncio.Queue()

    async def wait(self) -> None:
        await self._ticks.get()

    def tick(self) -> None:
        self._ticks.put_nowait(None)


class Network:
    """Envelopes between drivers on this loop, through bytes, unless the link is cut."""

    def __init__(self) -> None:
        self.drivers: dict[str, RaftDriver] = {}
        self.cut: set[str] = set()

    def transport(self, node: str) -> "Link":
        return Link(self, node)


class Link:
    def __init__(self, network: Network, node: str) -> None:
        self._network, self._node = network, node

    def send(self, envelope: Envelope) -> None:
        if self._node in self._network.cut or envelope.to in self._network.cut:
            return
        target = self._network.drivers.get(envelope.to)
        if target is not None:
            data = wire.encode(envelope)
            asyncio.get_running_loop().call_soon(lambda: target.receive(wire.decode(data)))


class ThreadRecordingStore(LmdbRaftStore):
    threads: set[str]

    def write(self, batch: PassWrite) -> PassResult:
        self.threads.add(threading.current_thread().name)
        return super().write(batch)


class Cluster:
    def __init__(self, network: Network, hosts: dict[str, MultiRaft],
                 tickers: dict[str, ManualTicker], stores: dict[str, ThreadRecordingStore]) -> None:
        self.network, self.hosts, self.tickers, self.stores = network, hosts, tickers, stores

    @property
    def drivers(self) -> dict[str, RaftDriver]:
        return self.network.drivers

    async def tick_until(self, condition: Callable[[], bool], ticks: int = 100) -> None:
        for _ in range(ticks):
            if await poll(condition, 0.05):
                return
            for ticker in self.tickers.values():
                ticker.tick()
        raise AssertionError(f"not reached in {ticks} ticks")

    def leader(self, group: int) -> str | None:
        leaders = [n for n, h in self.hosts.items()
                   if n not in self.network.cut and h.status(group).role is Role.LEADER]
        if len(leaders) == 1 and all(h.status(group).leader == leaders[0]
                                     for n, h in self.hosts.items()
                                     if n not in self.network.cut):
            return leaders[0]
        return None

    async def elected(self, group: int) -> str:
        await self.tick_until(lambda: self.leader(group) is not None)
        leader = self.leader(group)
        assert leader is not None
        return leader


async def poll(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition` holds within `seconds` (checked as the loop runs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    network = Network()
    hosts, tickers, stores = {}, {}, {}
    for node in NODES:
        store = ThreadRecordingStore(tmp_path / node, map_size=1 << 26)
        store.threads = set()
        host = MultiRaft(node, store, SETTINGS, seed=NODES.index(node),
                         clock_ms=SYSTEM_CLOCK.wall_clock_ms)
        for group in GROUPS:
            host.add_group(group, NODES)
        hosts[node], tickers[node], stores[node] = host, ManualTicker(), store
        network.drivers[node] = RaftDriver(host, store, network.transport(node), tickers[node])
    for driver in network.drivers.values():
        await driver.__aenter__()
    try:
        yield Cluster(network, hosts, tickers, stores)
    finally:
        for driver in network.drivers.values():
            if driver.running:
                await driver.__aexit__(None, None, None)
        for store in stores.values():
            store.close()


async def test_writes_commit_and_reads_see_them(cluster: Cluster) -> None:
    leader = await cluster.elected(0)
    first = await cluster.drivers[leader].put(0, b"k", b"v1", request_id=b"r1", timeout=5)
    second = await cluster.drivers[leader].put(0, b"k", b"v2", request_id=b"r2",
                                               if_version=first.version, timeout=5)
    assert first.status is second.status is Status.APPLIED
    assert second.version > first.version
    for node in NODES:  # a follower's read goes through the leader's read index
        assert await cluster.drivers[node].get(0, b"k", timeout=5) == ReadValue(second.version,
                                                                                b"v2")
    clash = await cluster.drivers[leader].delete(0, b"k", request_id=b"r3",
                                                 if_version=first.version, timeout=5)
    assert (clash.status, clash.version) == (Status.VERSION_MISMATCH, second.version)
    assert await poll(lambda: all(cluster.drivers[n].get_stale(0, b"k").version == second.version
                                  for n in NODES), 5)


async def test_a_write_to_a_follower_is_refused_naming_the_leader(cluster: Cluster) -> None:
    leader = await cluster.elected(1)
    follower = next(n for n in NODES if n != leader)
    with pytest.raises(Unavailable) as refused:
        await cluster.drivers[follower].put(1, b"k", b"v", request_id=b"r", timeout=5)
    assert refused.value.reason == "NOT_LEADER" and refused.value.metadata["leader"] == leader


async def test_a_write_that_cannot_commit_times_out_with_its_outcome_unknown(
        cluster: Cluster) -> None:
    leader = await cluster.elected(0)
    cluster.network.cut.add(leader)
    with pytest.raises(DeadlineExceeded) as late:
        await cluster.drivers[leader].put(0, b"k", b"v", request_id=b"r", timeout=0.3)
    assert late.value.outcome == "unknown" and "may still apply" in str(late.value)


async def test_persisting_runs_in_its_own_thread(cluster: Cluster) -> None:
    leader = await cluster.elected(0)
    await cluster.drivers[leader].put(0, b"k", b"v", request_id=b"r", timeout=5)
    threads = set().union(*(store.threads for store in cluster.stores.values()))
    assert threads and all(name.startswith("raft-persist") for name in threads)
    assert threading.current_thread().name not in threads


async def test_stopping_answers_every_waiting_call(cluster: Cluster) -> None:
    leader = await cluster.elected(0)
    cluster.network.cut.add(leader)
    driver = cluster.drivers[leader]
    waiting = asyncio.ensure_future(driver.put(0, b"k", b"v", request_id=b"r", timeout=20))
    assert await poll(lambda: driver.pending == 1, 5)
    await driver.__aexit__(None, None, None)
    with pytest.raises(Unavailable) as stopped:
        await waiting
    assert stopped.value.reason == "STOPPING" and stopped.value.outcome == "unknown"
    with pytest.raises(Unavailable, match="not running"):
        await driver.put(0, b"k", b"v", request_id=b"r2", timeout=1)


async def test_an_interval_ticker_ticks_at_its_pace() -> None:
    with pytest.raises(ValueError, match="positive"):
        IntervalTicker(0)
    ticker = IntervalTicker(0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(3):
        await ticker.wait()
    assert loop.time() - started >= 0.05
