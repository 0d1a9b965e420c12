"""kvclient's Router without a network: when it fetches the topology, what
it does with a coordinator's answer, an older node's UNIMPLEMENTED or no
answer at all, and when it refreshes (a fake clock and fake stubs)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc
import pytest

from kvclient import router
from kvclient.pb import kv_pb2
from kvclient.router import Router
from kvstore.placement.membership import ClusterMember, ClusterSpec
from kvstore.rpc.topology import topology_response

pytestmark = pytest.mark.timeout(10)

SPEC = ClusterSpec(tuple(ClusterMember(f"n{i}", f"h{i}:7101") for i in range(1, 4)),
                   replicas=3, partitions=8)


class Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


@dataclass
class FakeStub:
    answer: kv_pb2.TopologyResponse | grpc.StatusCode
    asked: list[str] = field(default_factory=list)
    address: str = ""
    hold: asyncio.Event | None = None

    async def Topology(self, request: kv_pb2.TopologyRequest,
                       timeout: float) -> kv_pb2.TopologyResponse:
        self.asked.append(self.address)
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(self.answer, grpc.StatusCode):
            raise Refused(self.answer)
        return self.answer


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def stubs(answers: dict[str, kv_pb2.TopologyResponse | grpc.StatusCode],
          asked: list[str]):  # type: ignore[no-untyped-def]
    def stub(address: str) -> FakeStub:
        return FakeStub(answers[address], asked, address)
    return stub


async def test_a_nodes_answer_gives_the_table_and_is_fetched_once_per_refresh() -> None:
    asked: list[str] = []
    clock = Clock()
    routing = Router(None, clock=clock)
    stub = stubs({"h1:7101": topology_response(SPEC, "n1", "node")}, asked)
    table = await routing.table(["h1:7101"], stub)
    assert table is not None and table.replicas_of(b"k") == tuple(
        SPEC.member(n).address for n in SPEC.preference_list(b"k"))
    assert await routing.table(["h1:7101"], stub) is table and asked == ["h1:7101"]
    clock.now += router.REFRESH_SECONDS + 1
    assert await routing.table(["h1:7101"], stub) is table  # refreshed in the background
    await asyncio.sleep(0)
    assert asked == ["h1:7101", "h1:7101"]
    await routing.close()


async def test_a_coordinators_answer_sends_everything_through_coordinators_unless_asked() -> None:
    asked: list[str] = []
    answer = {"c1:7201": topology_response(SPEC, "c1", "coordinator")}
    through = Router(None)
    assert await through.table(["c1:7201"], stubs(answer, asked)) is None
    assert await through.table(["c1:7201"], stubs(answer, asked)) is None
    assert asked == ["c1:7201"]  # decided once
    routed = Router(True)
    assert await routed.table(["c1:7201"], stubs(answer, asked)) is not None
    never = Router(False)
    assert await never.table(["c1:7201"], stubs(answer, asked)) is None
    assert asked == ["c1:7201", "c1:7201"]


async def test_it_asks_each_address_in_turn_and_waits_before_asking_again() -> None:
    asked: list[str] = []
    clock = Clock()
    routing = Router(None, clock=clock)
    down = stubs({"a:1": grpc.StatusCode.UNAVAILABLE, "b:1": grpc.StatusCode.UNAVAILABLE}, asked)
    assert await routing.table(["a:1", "b:1"], down) is None
    assert asked == ["a:1", "b:1"]
    assert await routing.table(["a:1", "b:1"], down) is None
    assert asked == ["a:1", "b:1"]  # not before RETRY_SECONDS
    clock.now += router.RETRY_SECONDS + 1
    second = stubs({"a:1": grpc.StatusCode.UNAVAILABLE,
                    "b:1": topology_response(SPEC, "n2", "node")}, asked)
    assert await routing.table(["a:1", "b:1"], second) is not None


async def test_an_older_node_without_topology_is_asked_again_only_much_later() -> None:
    asked: list[str] = []
    clock = Clock()
    routing = Router(None, clock=clock)
    old = stubs({"a:1": grpc.StatusCode.UNIMPLEMENTED}, asked)
    assert await routing.table(["a:1"], old) is None
    clock.now += router.RETRY_SECONDS + 1
    assert await routing.table(["a:1"], old) is None and asked == ["a:1"]
    clock.now += router.UNSUPPORTED_RETRY_SECONDS
    assert await routing.table(["a:1"], old) is None and asked == ["a:1", "a:1"]


async def test_a_slow_answer_lets_calls_go_unrouted_until_it_comes() -> None:
    hold = asyncio.Event()
    routing = Router(None)

    def stub(address: str) -> FakeStub:
        return FakeStub(topology_response(SPEC, "n1", "node"), [], address, hold)

    assert await routing.table(["h1:7101"], stub, wait=0.01) is None
    hold.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert await routing.table(["h1:7101"], stub, wait=0.01) is not None
    await routing.close()


async def test_follow_moves_a_named_leader_first_and_needs_a_table() -> None:
    spec = ClusterSpec(SPEC.members, replicas=3, partitions=8, mode="leader")
    routing = Router(None)
    routing.follow(b"k", "n3")  # no table yet: nothing to move
    stub = stubs({"h1:7101": topology_response(spec, "n1", "node")}, [])
    before = await routing.table(["h1:7101"], stub)
    assert before is not None
    leader = next(n for n in spec.preference_list(b"k") if SPEC.member(n).address
                  != before.replicas_of(b"k")[0])
    routing.follow(b"k", leader)
    after = await routing.table(["h1:7101"], stub)
    assert after is not None and after.replicas_of(b"k")[0] == SPEC.member(leader).address
    assert sorted(after.replicas_of(b"k")) == sorted(before.replicas_of(b"k"))
    await routing.close()
