"""LeaderKV's answers name the leader when this process does not lead the
key's partition (a token-aware client follows it): a real LeaderAccess
over fake LeaderOps, no process."""

from dataclasses import dataclass, field

import pytest

from kvclient.pb import kv_pb2
from kvstore.clock import SYSTEM_CLOCK
from kvstore.leader.access import LeaderAccess
from kvstore.leader.commands import Command
from kvstore.leader.raft.messages import NodeId
from kvstore.leader.state_machine import Outcome, Status
from kvstore.leader.waiters import ReadValue
from kvstore.placement.membership import ClusterMember, ClusterSpec
from kvstore.rpc import validation
from kvstore.rpc.leader_kv import LeaderKV

pytestmark = pytest.mark.timeout(10)

SPEC = ClusterSpec(tuple(ClusterMember(f"n{i}", f"h{i}:7101") for i in range(1, 4)),
                   replicas=3, partitions=8, mode="leader")
KEY = b"k"
PARTITION = SPEC.partition_of(KEY)


@dataclass
class FakeOps:
    """Every node takes every attempt; records which node took each."""

    took: list[NodeId] = field(default_factory=list)

    async def write(self, node: NodeId, partition: int, command: Command,
                    timeout: float) -> Outcome:
        self.took.append(node)
        return Outcome(Status.APPLIED, 7, 7)

    async def read(self, node: NodeId, partition: int, key: bytes, stale: bool,
                   timeout: float) -> ReadValue:
        self.took.append(node)
        return ReadValue(7, b"v")


def leader_kv(self_id: NodeId | None, leader: NodeId) -> tuple[LeaderKV, FakeOps]:
    ops = FakeOps()
    access = LeaderAccess(SPEC, ops, self_id=self_id, leader_timeout=2.0, clock=SYSTEM_CLOCK)
    access.learn(PARTITION, leader, term=2)
    return LeaderKV(access, SPEC, validation.Limits(256, 1 << 20, 100)), ops


async def test_a_forwarded_write_and_read_name_the_leader_that_served_them() -> None:
    me, leader = SPEC.preference_list(KEY)[:2]
    kv, ops = leader_kv(me, leader)
    put = await kv.put(kv_pb2.PutRequest(key=KEY, value=b"v", request_id=b"r" * 16), 5.0)
    assert (put.version, put.leader) == (7, leader) and ops.took == [leader]
    deleted = await kv.delete(kv_pb2.DeleteRequest(key=KEY, request_id=b"d" * 16), 5.0)
    assert deleted.leader == leader
    assert (await kv.get(kv_pb2.GetRequest(key=KEY), 5.0)).leader == leader


async def test_the_leader_itself_and_stale_reads_name_none() -> None:
    leader = SPEC.preference_list(KEY)[0]
    kv, _ = leader_kv(leader, leader)
    assert (await kv.put(kv_pb2.PutRequest(key=KEY, value=b"v"), 5.0)).leader == ""
    assert (await kv.get(kv_pb2.GetRequest(key=KEY), 5.0)).leader == ""
    follower, _ = leader_kv(SPEC.preference_list(KEY)[1], leader)
    assert (await follower.get(kv_pb2.GetRequest(key=KEY, stale=True), 5.0)).leader == ""


async def test_a_coordinator_always_names_the_leader() -> None:
    leader = SPEC.preference_list(KEY)[2]
    kv, ops = leader_kv(None, leader)
    assert (await kv.put(kv_pb2.PutRequest(key=KEY, value=b"v"), 5.0)).leader == leader
    assert ops.took == [leader]
