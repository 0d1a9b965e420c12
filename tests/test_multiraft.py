"""The multi-Raft host (`kvstore.leader.host.MultiRaft`): several hosts in
one process over an in-memory network and a fake clock
(`tests/multiraft_cluster.py`), every pass run by hand, so each test is
deterministic. Elections, writes committed on a majority and answered with
versions, compare-and-set, retries applied once, linearizable reads,
followers that come back and catch up by log and by snapshot, one
transaction per pass, heartbeats coalesced per node pair, idle groups
quiescing and waking, and refusals that name the leader."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvstore.errors import KVStoreError
from kvstore.leader import commands
from kvstore.leader.commands import Delete, Put
from kvstore.leader.data_format import FORMAT
from kvstore.leader.envelopes import Envelope, GroupHeartbeat, QuiesceNotice
from kvstore.leader.host import MultiRaft
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.persistence import GroupWrite, PassResult, PassWrite
from kvstore.leader.quiescence import QuiesceSettings
from kvstore.leader.raft.config import ReadMode
from kvstore.leader.raft.messages import Entry, HardState, InstallSnapshot, Vote
from kvstore.leader.raft.raft import Role
from kvstore.leader.settings import HostSettings
from kvstore.leader.state_machine import Outcome, Status, Versioned
from kvstore.leader.waiters import ReadValue
from tests.multiraft_cluster import FAST, HostCluster, error_reason

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def cluster() -> Iterator[HostCluster]:
    c = HostCluster(groups=4)
    yield c
    c.close()


def put(key: bytes, value: bytes, rid: bytes, **kw: int) -> Put:
    return Put(key, value, rid, **kw)  # type: ignore[arg-type]


def write(c: HostCluster, group: int, command: commands.Command) -> Outcome:
    leader = c.leader(group)
    assert leader is not None
    result = c.await_answer(leader, c.propose(leader, group, command))
    assert isinstance(result, Outcome), result
    return result


def values(c: HostCluster, group: int, key: bytes) -> dict[str, Versioned | None]:
    return {node: c.nodes[node].store.read(group, key) for node in c.ids}


def follower_of(c: HostCluster, group: int) -> str:
    return next(n for n in c.up() if n != c.leader(group))


# -- elections and commits ------------------------------------------------------------------------


def test_every_group_elects_one_leader(cluster: HostCluster) -> None:
    leaders = cluster.elect_all()
    assert sorted(leaders) == [0, 1, 2, 3]
    for group, leader in leaders.items():
        terms = {cluster.host(n).status(group).term for n in cluster.ids}
        roles = [cluster.host(n).status(group).role for n in cluster.ids]
        assert len(terms) == 1 and roles.count(Role.LEADER) == 1
        assert all(cluster.host(n).status(group).leader == leader for n in cluster.ids)


def test_a_write_is_committed_on_a_majority_and_answered_with_its_version(
        cluster: HostCluster) -> None:
    cluster.elect_all()
    cluster.crash(follower_of(cluster, 0))
    outcome = write(cluster, 0, put(b"k", b"v", b"r1"))
    assert outcome.status is Status.APPLIED and outcome.version == outcome.index > 1
    up = {node: value for node, value in values(cluster, 0, b"k").items()
          if node in cluster.up()}
    assert list(up.values()) == [Versioned(outcome.index, b"v")] * 2


def test_a_write_without_a_majority_is_not_answered(cluster: HostCluster) -> None:
    cluster.elect_all()
    leader = cluster.leader(0)
    assert leader is not None
    cluster.isolate(leader)
    ticket = cluster.propose(leader, 0, put(b"k", b"v", b"r1"))
    cluster.tick(5)  # less than an election timeout: it still leads
    assert cluster.answer(leader, ticket) is None
    assert all(value is None for value in values(cluster, 0, b"k").values())


def test_a_proposal_on_a_follower_is_refused_naming_the_leader(cluster: HostCluster) -> None:
    cluster.elect_all()
    leader, follower = cluster.leader(2), follower_of(cluster, 2)
    refused = cluster.await_answer(follower, cluster.propose(follower, 2, put(b"k", b"v", b"r")))
    assert isinstance(refused, KVStoreError) and refused.reason == "NOT_LEADER"
    assert refused.metadata == {"leader": leader, "outcome": "not_applied"}
    assert f"the leader is {leader}" in str(refused)


def test_before_any_election_a_proposal_is_refused_with_no_leader_named() -> None:
    c = HostCluster(groups=1)
    refused = c.await_answer("n1", c.propose("n1", 0, put(b"k", b"v", b"r")))
    assert error_reason(refused) == "NOT_LEADER" and "no leader is known" in str(refused)
    assert "leader" not in refused.metadata  # type: ignore[union-attr]


def test_a_partition_this_node_does_not_hold_is_refused(cluster: HostCluster) -> None:
    refused = cluster.await_answer("n1", cluster.propose("n1", 9, put(b"k", b"v", b"r")))
    assert error_reason(refused) == "NOT_A_REPLICA"


# -- the state machine through the log ------------------------------------------------------------


def test_versions_compare_and_set_and_deletes_through_the_log(cluster: HostCluster) -> None:
    cluster.elect_all()
    first = write(cluster, 1, put(b"k", b"v1", b"r1", if_version=0))
    assert first.status is Status.APPLIED
    clash = write(cluster, 1, put(b"k", b"v2", b"r2", if_version=0))
    assert (clash.status, clash.version) == (Status.VERSION_MISMATCH, first.version)
    second = write(cluster, 1, put(b"k", b"v2", b"r3", if_version=first.version))
    assert second.status is Status.APPLIED and second.version > first.version
    gone = write(cluster, 1, Delete(b"k", b"r4", if_version=second.version))
    assert (gone.status, gone.version) == (Status.APPLIED, 0)
    assert set(values(cluster, 1, b"k").values()) == {None}


def test_a_retried_write_applies_once_even_across_a_restart(tmp_path: Path) -> None:
    c = HostCluster(groups=2, lmdb_dir=tmp_path)
    try:
        c.elect_all()
        first = write(c, 0, put(b"counter", b"1", b"req-1"))
        write(c, 0, put(b"counter", b"2", b"req-2"))
        for node in c.ids:
            c.restart(node)
        c.elect_all()
        retry = write(c, 0, put(b"counter", b"1", b"req-1"))
        assert retry == Outcome(Status.APPLIED, first.version, first.index, duplicate=True)
        assert {v.value for v in values(c, 0, b"counter").values() if v} == {b"2"}
    finally:
        c.close()


def test_a_restart_never_applies_an_entry_twice(tmp_path: Path) -> None:
    c = HostCluster(groups=2, lmdb_dir=tmp_path)
    try:
        c.elect_all()
        outcomes = [write(c, 0, put(b"k%d" % n, b"v%d" % n, b"r%d" % n)) for n in range(5)]
        before = {n: c.nodes[n].store.load(0, 0).applied for n in c.ids}
        for node in c.ids:
            c.restart(node)
        for node in c.ids:  # each starts from the applied index it stored with the data
            assert c.host(node).status(0).applied == before[node]
        c.elect_all()
        c.tick(3)
        for n, outcome in enumerate(outcomes):
            assert set(values(c, 0, b"k%d" % n).values()) == {
                Versioned(outcome.index, b"v%d" % n)}
    finally:
        c.close()


def test_a_linearizable_read_sees_every_write_acknowledged_before_it(
        cluster: HostCluster) -> None:
    cluster.elect_all()
    outcome = write(cluster, 3, put(b"k", b"v", b"r1"))
    for node in cluster.ids:  # on the leader, or forwarded by a follower
        read = cluster.await_answer(node, cluster.read(node, 3, b"k"))
        assert read == ReadValue(outcome.index, b"v")
    absent = cluster.await_answer("n1", cluster.read("n1", 3, b"nothing"))
    assert absent == ReadValue(0, None)


# -- followers that come back ---------------------------------------------------------------------


def test_a_restarted_follower_catches_up_by_the_log(cluster: HostCluster) -> None:
    cluster.elect_all()
    follower = follower_of(cluster, 0)
    cluster.crash(follower)
    outcomes = [write(cluster, 0, put(b"k", b"v%d" % n, b"r%d" % n)) for n in range(10)]
    cluster.restart(follower)
    cluster.tick(3)
    assert cluster.nodes[follower].store.read(0, b"k") == Versioned(outcomes[-1].index, b"v9")
    assert not any(isinstance(m.message, InstallSnapshot)
                   for _, e in cluster.sent for m in e.messages)


def test_a_follower_behind_the_compacted_log_catches_up_by_snapshot() -> None:
    settings = HostSettings(election_ticks=10, snapshot_every=5, keep_entries=0,
                            quiesce=FAST.quiesce)
    c = HostCluster(groups=2, settings=settings)
    c.elect_all()
    follower = follower_of(c, 1)
    c.crash(follower)
    outcomes = [write(c, 1, put(b"k%d" % (n % 3), b"v%d" % n, b"r%d" % n)) for n in range(20)]
    leader = c.leader(1)
    assert leader is not None and c.nodes[leader].store.load(1, 0).compacted_index > 5
    c.restart(follower)
    c.tick(5)
    snapshots = [m for _, e in c.sent for m in e.messages
                 if isinstance(m.message, InstallSnapshot) and e.to == follower]
    assert snapshots and all(m.group == 1 for m in snapshots)
    store = c.nodes[follower].store
    for n in (17, 18, 19):
        assert store.read(1, b"k%d" % (n % 3)) == Versioned(outcomes[n].index, b"v%d" % n)
    assert store.find_request(1, b"r3") is not None  # request ids came with the snapshot
    # The snapshot was of group 1 only; group 0 caught up by its log.
    assert store.load(0, 0).compacted_index == 0


def test_a_leader_that_crashed_between_sending_and_persisting_comes_back_consistent(
        cluster: HostCluster) -> None:
    cluster.elect_all()
    leader = cluster.leader(0)
    assert leader is not None
    ticket = cluster.propose(leader, 0, put(b"k", b"v", b"r1"))
    cluster.crash_mid_pass(leader)  # its appends left, its own write never happened
    cluster.settle()
    assert cluster.answer(leader, ticket) is None
    cluster.restart(leader)
    cluster.elect_all()
    cluster.tick(3)
    stored = set(values(cluster, 0, b"k").values())
    assert len(stored) == 1  # every replica agrees: the entry committed or it did not


# -- one pass, one envelope per peer --------------------------------------------------------------


def test_one_persist_pass_covers_every_group_with_work() -> None:
    c = HostCluster(groups=8)
    c.elect_all()
    for group in range(8):
        leader = c.leader(group)
        if leader is not None and leader != "n1":
            c.host(leader).transfer_leadership(group, "n1")
    c.tick(3)
    assert all(c.leader(group) == "n1" for group in range(8))
    store = c.nodes["n1"].store
    assert isinstance(store, MemoryRaftStore)
    writes = store.writes
    tickets = [c.propose("n1", group, put(b"k", b"v", b"r%d" % group)) for group in range(8)]
    assert c.run_pass("n1")
    assert store.writes == writes + 1 and store.last_write is not None
    assert sorted(w.group for w in store.last_write.groups) == list(range(8))
    assert store.last_write.sync and all(len(w.entries) == 1 for w in store.last_write.groups)
    c.settle()
    assert all(isinstance(c.answer("n1", t), Outcome) for t in tickets)


def test_heartbeats_are_coalesced_to_one_envelope_per_node_pair_per_tick() -> None:
    def heartbeat_envelopes(groups: int) -> tuple[int, int]:
        c = HostCluster(groups=groups, settings=HostSettings(
            election_ticks=10, quiesce=QuiesceSettings(enabled=False)))
        c.elect_all()
        c.tick(2)
        sent = c.envelopes_in_tick(c.tick_count)
        with_heartbeats = [e for e in sent if e.heartbeats]
        pairs = {(e.sender, e.to) for e in with_heartbeats}
        assert len(with_heartbeats) == len(pairs)  # one per pair that has any
        return len(sent), sum(len(e.heartbeats) for e in sent)

    few_envelopes, few_heartbeats = heartbeat_envelopes(2)
    many_envelopes, many_heartbeats = heartbeat_envelopes(24)
    assert many_heartbeats == 24 * 2  # each group's leader to its two followers
    assert many_envelopes <= 2 * 6  # at most heartbeats and their answers, per ordered pair
    assert many_envelopes <= few_envelopes + 6


# -- quiescence -----------------------------------------------------------------------------------


def test_idle_groups_quiesce_and_send_no_heartbeats(cluster: HostCluster) -> None:
    cluster.elect_all()
    write(cluster, 0, put(b"k", b"v", b"r"))
    cluster.tick(8)
    assert all(cluster.host(n).is_quiesced(g) for n in cluster.ids for g in range(4))
    for _ in range(20):
        cluster.tick()
        sent = cluster.envelopes_in_tick(cluster.tick_count)
        # One liveness beat per ordered node pair, and nothing else.
        assert sorted((e.sender, e.to) for e in sent) == sorted(
            (a, b) for a in cluster.ids for b in cluster.ids if a != b)
        assert all(e.is_empty() for e in sent)


def test_a_write_wakes_a_quiesced_group_which_then_quiesces_again(cluster: HostCluster) -> None:
    cluster.elect_all()
    cluster.tick(8)
    assert all(cluster.host(n).is_quiesced(2) for n in cluster.ids)
    outcome = write(cluster, 2, put(b"k", b"v", b"r"))
    assert outcome.status is Status.APPLIED
    assert set(values(cluster, 2, b"k").values()) == {Versioned(outcome.index, b"v")}
    # The other groups slept through it.
    assert all(cluster.host(n).is_quiesced(g) for n in cluster.ids for g in (0, 1, 3))
    cluster.tick(8)
    assert all(cluster.host(n).is_quiesced(2) for n in cluster.ids)


def test_a_read_wakes_a_quiesced_group(cluster: HostCluster) -> None:
    cluster.elect_all()
    outcome = write(cluster, 1, put(b"k", b"v", b"r"))
    cluster.tick(8)
    follower = follower_of(cluster, 1)
    assert cluster.host(follower).is_quiesced(1)
    read = cluster.await_answer(follower, cluster.read(follower, 1, b"k"))
    assert read == ReadValue(outcome.index, b"v")


def test_a_vote_wakes_a_quiesced_group(cluster: HostCluster) -> None:
    cluster.elect_all()
    cluster.tick(8)
    leader = cluster.leader(0)
    follower = follower_of(cluster, 0)
    cluster.restart(follower)  # starts awake, knows no leader, and will campaign
    for _ in range(40):
        cluster.tick()
        if any(isinstance(m.message, Vote) for _, e in cluster.sent if e.sender == follower
               for m in e.messages if m.group == 0):
            break
    assert not cluster.host(leader).is_quiesced(0)  # type: ignore[arg-type]
    cluster.elect_all()
    assert write(cluster, 0, put(b"k", b"v", b"r")).status is Status.APPLIED


def test_the_followers_of_a_quiesced_leader_whose_node_died_elect_another(
        cluster: HostCluster) -> None:
    leaders = cluster.elect_all()
    cluster.tick(8)
    dead = leaders[0]
    led = [g for g, leader in leaders.items() if leader == dead]
    cluster.crash(dead)
    new = cluster.elect_all(limit=100)
    assert all(new[g] != dead for g in led)
    outcome = write(cluster, led[0], put(b"k", b"v", b"r"))
    assert outcome.status is Status.APPLIED
    # The groups led by the living slept on.
    assert all(cluster.host(n).is_quiesced(g) for n in cluster.up()
               for g, leader in leaders.items() if leader != dead)


def test_a_quiesced_leader_whose_followers_died_steps_down_instead_of_leading_in_name(
        cluster: HostCluster) -> None:
    leaders = cluster.elect_all()
    cluster.tick(8)
    alone = leaders[0]
    led = [g for g, leader in leaders.items() if leader == alone]
    assert all(cluster.host(alone).is_quiesced(g) for g in led)
    for node in cluster.ids:
        if node != alone:
            cluster.crash(node)
    # Woken once its followers are silent for an election timeout; then
    # CheckQuorum (within two more) steps it down.
    assert ticks_until(cluster, lambda: all(
        cluster.host(alone).status(g).role is not Role.LEADER for g in led), 50)
    assert all(cluster.host(alone).status(g).leader is None for g in range(4))


def test_a_quiesced_lease_leader_does_not_serve_from_a_lease_it_slept_through() -> None:
    settings = HostSettings(election_ticks=10, read_mode=ReadMode.LEASE, quiesce=FAST.quiesce)
    c = HostCluster(groups=1, settings=settings)
    c.elect_all()
    write(c, 0, put(b"k", b"v", b"r"))
    c.tick(8)
    leader = c.leader(0)
    assert leader is not None and c.host(leader).is_quiesced(0)
    c.tick(30)  # far longer than the lease
    ticket = c.read(leader, 0, b"k")
    assert c.run_pass(leader)
    # Not answered from the lease it held when it fell asleep: a round first.
    assert c.answer(leader, ticket) is None
    assert c.await_answer(leader, ticket) == ReadValue(2, b"v")


# -- data it cannot read --------------------------------------------------------------------------


def test_an_entry_in_an_unknown_format_stops_its_group_alone(cluster: HostCluster,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            ) -> None:
    cluster.elect_all()
    leader = cluster.leader(1)
    assert leader is not None
    real = commands.encode
    monkeypatch.setattr(commands, "encode",
                        lambda command: bytes([FORMAT + 1]) + real(command)[1:])
    ticket = cluster.propose(leader, 1, put(b"k", b"v", b"future"))
    cluster.run_pass(leader)
    monkeypatch.setattr(commands, "encode", real)
    stopped = cluster.await_answer(leader, ticket)
    assert error_reason(stopped) == "PARTITION_STOPPED"
    assert f"format {FORMAT + 1}" in str(stopped) and "partition 1, entry" in str(stopped)
    assert all(cluster.host(n).halted(1) for n in cluster.ids)
    assert write(cluster, 0, put(b"k", b"v", b"fine")).status is Status.APPLIED


def test_a_group_with_a_member_down_still_quiesces_and_the_member_catches_up(
        cluster: HostCluster) -> None:
    cluster.elect_all()
    follower = follower_of(cluster, 0)
    cluster.crash(follower)
    outcome = write(cluster, 0, put(b"k", b"v", b"r"))

    def all_quiesced() -> bool:
        return all(cluster.host(n).is_quiesced(g) for n in cluster.up() for g in range(4))
    # Once the groups it led elected others, every group sleeps without it.
    assert ticks_until(cluster, all_quiesced, 60)
    cluster.restart(follower)
    assert ticks_until(cluster, lambda: cluster.nodes[follower].store.read(0, b"k") == Versioned(
        outcome.index, b"v"), 60)
    assert ticks_until(cluster, all_quiesced, 60)


def test_a_quiesce_notice_never_commits_a_divergent_entry_at_its_index() -> None:
    # Found by the leader-mode simulation (seed 79): n2 led term 3 and
    # appended a write at 3 that no quorum took; n4 won term 4 and
    # committed its no-op at 3, then quiesced without n2 (silent a while).
    # The notice's commit (3) must not commit n2's own entry there.
    store = MemoryRaftStore()
    write_3 = commands.encode(put(b"k", b"lost", b"r"))
    store.write(PassWrite((GroupWrite(0, HardState(term=3, vote="n2", commit=2),
                                      (Entry(1, 1, b""), Entry(2, 3, b""), Entry(3, 3, write_3)),
                                      committed=(Entry(1, 1, b""), Entry(2, 3, b""))),),
                          sync=True))
    host = MultiRaft("n2", store, FAST, clock_ms=lambda: 0, seed=1)
    host.add_group(0, ("n2", "n4", "n1"))
    host.receive(Envelope("n4", "n2", heartbeats=(GroupHeartbeat(0, 4, commit=2, round=1),)))
    host.receive(Envelope("n4", "n2", quiesce=(QuiesceNotice(0, term=4, commit=3),)))
    while (p := host.start_pass()) is not None:
        host.finish_pass(p, store.write(p.write) if p.write is not None else PassResult())
    status = host.status(0)
    assert (status.term, status.leader, status.commit) == (4, "n4", 2)
    assert store.read(0, b"k") is None and not host.is_quiesced(0)


def ticks_until(c: HostCluster, condition: Callable[[], bool], limit: int) -> bool:
    for _ in range(limit):
        if condition():
            return True
        c.tick()
    return condition()
