"""Which differing partitions an anti-entropy round exchanges (pure): every
difference that settled since the previous round, and one still moving,
the one exchanged longest ago. And the replica service's answers to
anti-entropy's questions about partitions that do not exist."""

import grpc
import pytest

from kvclient.pb import replica_pb2
from kvstore.leaderless.anti_entropy import ExchangePlanner
from kvstore.leaderless.merkle import PartitionTrees
from kvstore.server.metrics import RequestMetrics
from kvstore.rpc.servicers import ReplicaService
from kvstore.rpc.validation import Limits

pytestmark = pytest.mark.timeout(10)

A, B, C, D = b"a" * 32, b"b" * 32, b"c" * 32, b"d" * 32


def round_of(planner: ExchangePlanner,
             roots: dict[tuple[str, int], tuple[bytes, bytes]]) -> list[tuple[int, str]]:
    planner.start_round()
    for (peer, partition), (local, remote) in roots.items():
        planner.observe(peer, partition, local, remote)
    return planner.exchanges()


def test_agreeing_roots_are_never_exchanged() -> None:
    planner = ExchangePlanner()
    planner.start_round()
    assert planner.observe("n2", 0, A, A) is True
    assert planner.exchanges() == []


def test_a_difference_unchanged_since_the_last_round_is_exchanged_at_once() -> None:
    planner = ExchangePlanner()
    wiped = {("n2", p): (A, B) for p in range(10)}  # n2 lost its data: nothing moves
    first = round_of(planner, wiped)
    assert len(first) == 1  # nothing is known to be settled yet: one, in turn
    assert sorted(round_of(planner, wiped)) == sorted((p, "n2") for p in range(10))


def test_differences_that_keep_moving_are_exchanged_one_a_round_in_turn() -> None:
    planner = ExchangePlanner()
    chosen = []
    for turn in range(6):  # writes land on every partition every round
        roots = {("n2", p): (bytes([turn]) * 32, bytes([turn + 100]) * 32) for p in range(3)}
        [pair] = round_of(planner, roots)
        chosen.append(pair)
    assert sorted(chosen[:3]) == [(0, "n2"), (1, "n2"), (2, "n2")]  # each in turn
    assert sorted(chosen[3:]) == sorted(chosen[:3])


def test_a_settled_difference_and_a_moving_one_in_the_same_round() -> None:
    planner = ExchangePlanner()
    round_of(planner, {("n2", 0): (A, B), ("n3", 1): (A, C)})
    both = round_of(planner, {("n2", 0): (A, B), ("n3", 1): (A, D)})  # n3's side moved
    assert both == [(0, "n2"), (1, "n3")]


def test_once_repaired_a_partition_drops_out() -> None:
    planner = ExchangePlanner()
    round_of(planner, {("n2", 0): (A, B)})
    assert round_of(planner, {("n2", 0): (A, B)}) == [(0, "n2")]
    assert round_of(planner, {("n2", 0): (C, C)}) == []


class _NoContext:
    def time_remaining(self) -> None:
        return None


async def test_questions_about_a_partition_that_does_not_exist_are_refused() -> None:
    trees = PartitionTrees()
    # The tree questions never touch the replica.
    service = ReplicaService(None, Limits(1024, 1024, 10), RequestMetrics(),  # type: ignore[arg-type]
                             trees, partitions=8)
    ops = [replica_pb2.ReplicaOp(tree_hashes=replica_pb2.ReplicaTreeHashes(
               partition=8, level=0, indices=[0])),
           replica_pb2.ReplicaOp(bucket=replica_pb2.ReplicaBucket(partition=1 << 30, bucket=0)),
           replica_pb2.ReplicaOp(roots=replica_pb2.ReplicaRoots(partitions=[0, 9])),
           replica_pb2.ReplicaOp(roots=replica_pb2.ReplicaRoots(partitions=[0, 7]))]
    response = await service.Batch(replica_pb2.ReplicaBatchRequest(ops=ops), _NoContext())
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [r.status.code for r in response.results] == [invalid, invalid, invalid, 0]
    assert "partition 8 does not exist; use 0..7" in response.results[0].status.message
    assert len(response.results[3].hashes) == 2
    assert trees.partitions() == []  # no tree was made for any of them
