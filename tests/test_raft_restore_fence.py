"""A member restored from a backup is fenced (`kvstore.leader.restore_fence`,
`HardState.fence`): it votes for no one and never campaigns until it has
followed a leader elected without it up to an entry of that leader's term.
Without the fence a restored member that forgot an entry it acknowledged
helps elect a leader without it, and the committed entry is lost; the first
test shows both."""

import copy
import random

import pytest

from kvstore.leader.persistence import LoadedGroup
from kvstore.leader.raft.config import Config
from kvstore.leader.raft.messages import (
    AppendResponse, HardState, Heartbeat, TimeoutNow, Vote, VoteResponse,
)
from kvstore.leader.raft.node import RawNode
from kvstore.leader.raft.raft import Role
from kvstore.leader.raft.storage import MemoryLogStorage
from kvstore.leader.restore_fence import fence_for
from tests.raft_cluster import Cluster

pytestmark = pytest.mark.timeout(30)


def restore(cluster: Cluster, node: str, backup: MemoryLogStorage, *, fenced: bool) -> None:
    """Put `backup` back as `node`'s storage and restart it; fenced above the
    highest term of the others, as `kvstore admin restore` does, or raw."""
    storage = copy.deepcopy(backup)
    if fenced:
        highest = max(cluster.term(other) for other in cluster.ids if other != node)
        state = storage.hard_state()
        loaded = LoadedGroup(state, storage.snapshot().index, storage.snapshot().term,
                             storage.first_index() - 1, storage.term(storage.first_index() - 1),
                             last_index=storage.last_index(), applied=state.commit)
        fence = fence_for(loaded, highest)
        storage.truncate_after(fence.keep_through)
        storage.set_hard_state(fence.hard_state)
    cluster.storage[node] = storage
    cluster.restart(node)


def forgotten_acknowledgement(fenced: bool) -> Cluster:
    """b is committed by 1 and 3 while 2 is cut off; 3 is then restored from
    a backup taken before b, and 1 goes down: 2 and 3 are left."""
    cluster = Cluster(3)
    cluster.elect("1")
    cluster.propose("1", b"a")
    cluster.stabilize()
    backup = copy.deepcopy(cluster.storage["3"])
    cluster.cut = {"2"}
    cluster.propose("1", b"b")
    cluster.stabilize(["1", "3"])
    assert cluster.data("1") == [b"a", b"b"]  # committed: acknowledged by 3
    cluster.cut = {"1"}
    restore(cluster, "3", backup, fenced=fenced)
    for _ in range(60):
        cluster.tick_all()
        cluster.stabilize(["2", "3"])
    return cluster


def test_unfenced_a_restored_member_helps_elect_a_leader_that_lost_a_committed_entry() -> None:
    cluster = forgotten_acknowledgement(fenced=False)
    leaders = [n for n in ("2", "3") if cluster.role(n) is Role.LEADER]
    assert leaders, "the planted hazard did not show: no leader among 2 and 3"
    assert b"b" not in cluster.data(leaders[0])  # the committed b is gone


def test_fenced_a_restored_member_elects_no_one_until_a_leader_with_every_entry_is_back() -> None:
    cluster = forgotten_acknowledgement(fenced=True)
    assert Role.LEADER not in (cluster.role("2"), cluster.role("3"))
    assert cluster.nodes["3"].status().fence > 0
    cluster.cut = set()
    for _ in range(60):
        cluster.tick_all()
        cluster.stabilize()
    leader = next(n for n in cluster.ids if cluster.role(n) is Role.LEADER)
    assert leader == "1"  # the only one with b: 2 votes for it, 3 for no one
    status = cluster.nodes["3"].status()
    assert status.fence == 0 and status.vote == "1"
    assert cluster.storage["3"].hard_state().fence == 0
    cluster.propose("1", b"c")
    cluster.stabilize()
    assert {n: cluster.data(n) for n in cluster.ids} == dict.fromkeys(cluster.ids,
                                                                       [b"a", b"b", b"c"])


def fenced_node(fence: int = 5) -> RawNode:
    storage = MemoryLogStorage()
    storage.set_hard_state(HardState(term=fence, fence=fence))
    return RawNode(Config(id="3", voters=("1", "2", "3")), storage, random.Random(1))


def answers(node: RawNode) -> list[VoteResponse]:
    ready = node.ready()
    sent = ready.messages + ready.messages_after_persist
    node.advance(ready)
    return [m for m in sent if isinstance(m, VoteResponse)]


@pytest.mark.parametrize("pre_vote", [False, True])
@pytest.mark.parametrize("term", [5, 6])
def test_a_fenced_member_grants_no_vote_and_no_pre_vote(pre_vote: bool, term: int) -> None:
    node = fenced_node()
    node.step(Vote(to="3", sender="1", term=term, last_index=10, last_term=4,
                   pre_vote=pre_vote))
    assert [m.granted for m in answers(node)] == [False]
    assert node.status().vote is None


def test_a_fenced_member_never_campaigns_not_even_when_a_leader_hands_over() -> None:
    node = fenced_node()
    for _ in range(100):
        node.tick()
    node.step(TimeoutNow(to="3", sender="1", term=5))
    assert node.status().role is Role.FOLLOWER and node.status().term == 5
    ready = node.ready()
    node.advance(ready)
    votes = [m for m in ready.messages + ready.messages_after_persist if isinstance(m, Vote)]
    # At each election timeout it only probes (pre-votes, to wake its peers).
    assert votes and all(m.pre_vote and m.term == 6 for m in votes)
    for voter in ("1", "2"):  # granted: it still does not campaign
        node.step(VoteResponse(to="3", sender=voter, term=6, granted=True, pre_vote=True))
    assert node.status().role is Role.FOLLOWER and node.status().term == 5
    assert node.status().vote is None


def test_a_fenced_member_learns_a_later_term_from_a_refused_probe() -> None:
    node = fenced_node()
    node.step(VoteResponse(to="3", sender="1", term=9, granted=False, pre_vote=True))
    status = node.status()
    assert (status.term, status.fence, status.vote, status.role) == (9, 5, None, Role.FOLLOWER)


def test_the_fence_is_persisted_with_the_hard_state_and_survives_a_restart() -> None:
    cluster = Cluster(3)
    cluster.elect("1")
    backup = copy.deepcopy(cluster.storage["3"])
    cluster.cut = {"1", "3"}
    restore(cluster, "3", backup, fenced=True)
    fence = cluster.storage["3"].hard_state().fence
    assert fence == 2  # above term 1, the others' highest
    cluster.restart("3")
    assert cluster.nodes["3"].status().fence == fence


def test_a_fence_is_above_every_term_and_keeps_the_committed_log() -> None:
    loaded = LoadedGroup(HardState(term=4, vote="2", commit=7), compacted_index=3,
                         compacted_term=2, last_index=9, applied=6)
    fence = fence_for(loaded, highest_term=8)
    assert fence.hard_state == HardState(term=9, vote=None, commit=7, fence=9)
    assert fence.keep_through == 7  # 8 and 9 were not known committed
    # The backup's own term may be the highest (the others restarted empty).
    assert fence_for(loaded, highest_term=2).hard_state.fence == 5
    # Applied beyond the stored commit (written lazily): applied was committed.
    lazy = LoadedGroup(HardState(term=4, commit=5), last_index=9, applied=6)
    assert fence_for(lazy, 4).keep_through == 6
    with pytest.raises(ValueError):
        fence_for(loaded, -1)


def test_a_fenced_member_tells_a_stale_leader_its_term_even_without_check_quorum_or_pre_vote(
) -> None:
    # Found by the simulation (seed 200): a fenced member never campaigns,
    # so a leader of an older term would otherwise lead on without it for ever.
    storage = MemoryLogStorage()
    storage.set_hard_state(HardState(term=5, fence=5))
    node = RawNode(Config(id="3", voters=("1", "2", "3"), pre_vote=False, check_quorum=False),
                   storage, random.Random(1))
    node.step(Heartbeat(to="3", sender="1", term=4, commit=0))
    ready = node.ready()
    told = [m for m in ready.messages + ready.messages_after_persist
            if isinstance(m, AppendResponse)]
    assert [(m.to, m.term) for m in told] == [("1", 5)]
