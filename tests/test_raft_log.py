"""The Raft core's log (`kvstore.leader.raft.log`) over `MemoryLogStorage`,
and the leader's per-follower bookkeeping (`progress`): the consistency
check, conflict replacement, the up-to-date rule, the commit index, the
conflict search behind fast backtracking, and the in-flight window.
Modelled on etcd-io/raft's log_test.go and tracker tests."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.leader.raft.log import RaftLog
from kvstore.leader.raft.messages import Entry, HardState, Snapshot
from kvstore.leader.raft.progress import Inflights, Progress, ProgressState
from kvstore.leader.raft.storage import MemoryLogStorage
from tests.properties import properties


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(index=start + i, term=t, data=b"%d" % (start + i)) for i, t in enumerate(terms)]


def stored_log(*terms: int) -> RaftLog:
    storage = MemoryLogStorage()
    storage.append(entries(*terms))
    return RaftLog(storage)


# -- storage ----------------------------------------------------------------------


def test_memory_storage_replaces_a_conflicting_tail_and_refuses_gaps() -> None:
    storage = MemoryLogStorage()
    storage.append(entries(1, 1, 2))
    storage.append(entries(3, start=3))
    assert [storage.term(i) for i in (1, 2, 3)] == [1, 1, 3]
    with pytest.raises(ValueError, match="gap"):
        storage.append(entries(3, start=9))


def test_memory_storage_keeps_the_snapshots_entry_as_the_one_before_the_first() -> None:
    storage = MemoryLogStorage()
    storage.append(entries(1, 1, 2, 2))
    snapshot = storage.create_snapshot(3, b"state")
    assert (snapshot.index, snapshot.term) == (3, 2)
    assert storage.first_index() == 1  # entries stay until compacted
    storage.compact(2)
    assert (storage.first_index(), storage.last_index(), storage.term(2)) == (3, 4, 1)
    with pytest.raises(ValueError):
        storage.compact(4)  # past the snapshot
    storage.apply_snapshot(Snapshot(index=9, term=5, data=b"x"))
    assert (storage.first_index(), storage.last_index(), storage.term(9)) == (10, 9, 5)


def test_memory_storage_limits_entries_by_bytes_but_returns_at_least_one() -> None:
    storage = MemoryLogStorage()
    storage.append([Entry(index=i, term=1, data=b"x" * 10) for i in range(1, 6)])
    assert len(storage.entries(1, 6, 25)) == 2
    assert len(storage.entries(1, 6, 1)) == 1
    assert len(storage.entries(1, 6, None)) == 5


# -- the log ------------------------------------------------------------------------


def test_append_fails_the_consistency_check_when_the_previous_entry_differs() -> None:
    log = stored_log(1, 2, 3)
    assert log.try_append(3, 2, (), 0) is None  # term differs at 3
    assert log.try_append(4, 3, (), 0) is None  # no entry 4
    assert log.try_append(3, 3, tuple(entries(3, start=4)), 0) == 4


def test_append_replaces_a_conflicting_uncommitted_tail_and_keeps_the_matching_part() -> None:
    log = stored_log(1, 1, 1, 1)
    last = log.try_append(1, 1, tuple(entries(1, 2, start=2)), leader_commit=0)
    assert last == 3
    assert [log.term(i) for i in range(1, 5)] == [1, 1, 2, None]
    assert [e.index for e in log.unstable_entries()] == [3]


def test_append_of_entries_already_held_changes_nothing_and_answers_their_last_index() -> None:
    log = stored_log(1, 1, 2, 2)
    assert log.try_append(1, 1, tuple(entries(1, start=2)), leader_commit=0) == 2
    assert log.last_index() == 4  # a late, shorter append truncates nothing
    assert log.unstable_entries() == []


def test_commit_follows_the_leader_but_never_past_the_entries_it_sent() -> None:
    log = stored_log(1, 1, 1, 1, 1)
    log.try_append(2, 1, tuple(entries(1, start=3)), leader_commit=5)
    assert log.committed == 3  # entries after 3 are not known to match the leader's
    log.commit_to(2)
    assert log.committed == 3  # never backwards


def test_appending_over_a_committed_entry_is_refused() -> None:
    log = stored_log(1, 1, 1)
    log.commit_to(3)
    with pytest.raises(AssertionError, match="committed"):
        log.try_append(1, 1, tuple(entries(2, 2, start=2)), leader_commit=3)


@pytest.mark.parametrize("last_index, last_term, up_to_date", [
    (3, 3, True),   # same last entry
    (2, 3, False),  # same term, shorter
    (5, 3, True),   # same term, longer
    (9, 2, False),  # older last term, however long
    (1, 4, True),   # newer last term, however short
])
def test_a_candidate_is_up_to_date_by_last_term_then_length(
        last_index: int, last_term: int, up_to_date: bool) -> None:
    assert stored_log(1, 2, 3).is_up_to_date(last_index, last_term) is up_to_date


def test_the_leader_commits_by_counting_only_entries_of_its_own_term() -> None:
    log = stored_log(1, 2)
    assert not log.maybe_commit(2, term=3)  # the Raft paper, figure 8
    assert log.maybe_commit(2, term=2)


def test_conflict_search_skips_every_index_of_a_later_term() -> None:
    # The example of etcd's stepLeader comment: leader 1 3 3 3 5 5 5 5 5.
    log = stored_log(1, 3, 3, 3, 5, 5, 5, 5, 5)
    assert log.find_conflict_by_term(6, 2) == (1, 1)
    assert log.find_conflict_by_term(9, 5) == (9, 5)
    assert log.find_conflict_by_term(9, 4) == (4, 3)
    assert log.find_conflict_by_term(0, 0) == (0, 0)


def test_conflict_search_stops_at_a_compacted_index_with_an_unknown_term() -> None:
    storage = MemoryLogStorage()
    storage.append(entries(1, 2, 3, 4))
    storage.create_snapshot(2, b"")
    storage.compact(2)
    log = RaftLog(storage)
    assert log.find_conflict_by_term(4, 2) == (2, 2)  # the snapshot's entry: its term is known
    assert log.find_conflict_by_term(4, 1) == (1, 0)  # compacted: may match, term unknown
    assert log.term(1) is None


def test_entries_combine_storage_and_unstable_within_the_byte_limit() -> None:
    log = stored_log(1, 1)
    log.append([Entry(index=3, term=2, data=b"abc"), Entry(index=4, term=2, data=b"def")])
    assert [e.index for e in log.entries(1) or []] == [1, 2, 3, 4]
    assert [e.index for e in log.entries(2, 4) or []] == [2, 3]
    assert [e.index for e in log.entries(1, max_bytes=3) or []] == [1, 2]  # b"1", b"2"
    assert [e.index for e in log.entries(3, max_bytes=1) or []] == [3]


def test_a_restored_snapshot_replaces_the_log_until_it_is_persisted() -> None:
    log = stored_log(1, 1, 1)
    snapshot = Snapshot(index=10, term=4, data=b"s")
    log.restore(snapshot)
    assert (log.first_index(), log.last_index(), log.committed, log.term(10)) == (11, 10, 10, 4)
    assert log.term(2) is None and not log.has_entries_to_apply()
    log.storage.apply_snapshot(snapshot)  # type: ignore[attr-defined]
    log.stable_to(None, snapshot)
    assert log.unstable_snapshot() is None and log.applied == 10


@given(st.lists(st.integers(1, 4), max_size=12).map(sorted),
       st.lists(st.integers(1, 4), min_size=1, max_size=12).map(sorted),
       st.integers(0, 12), st.integers(0, 12))
@properties(300)
def test_an_accepted_append_leaves_the_entries_sent_after_an_untouched_prefix(
        ours: list[int], leaders: list[int], prev: int, commit: int) -> None:
    """The follower's side of log matching: an append after (prev, term) is
    accepted exactly when the follower holds that entry; then the follower
    holds the leader's entries from there to the last one sent, keeps its
    own before, and commits no further than the last one sent."""
    leader = stored_log(*leaders)
    follower = stored_log(*ours)
    before = [follower.term(i) for i in range(1, follower.last_index() + 1)]
    prev = min(prev, leader.last_index())
    prev_term = leader.term(prev)
    assert prev_term is not None
    sent = tuple(leader.entries(prev + 1) or [])
    last = follower.try_append(prev, prev_term, sent, leader_commit=commit)
    if last is None:
        assert follower.term(prev) != prev_term
        return
    assert follower.term(prev) == prev_term and last == prev + len(sent)
    assert [follower.term(i) for i in range(1, prev + 1)] == before[:prev]
    assert [follower.term(e.index) for e in sent] == [e.term for e in sent]
    assert follower.committed == min(commit, last)


# -- progress ------------------------------------------------------------------------


def test_the_inflight_window_fills_by_count_or_bytes_and_frees_by_acknowledgement() -> None:
    window = Inflights(max_messages=3, max_bytes=100)
    window.add(5, 10)
    window.add(7, 10)
    assert not window.full()
    window.add(9, 90)
    assert window.full() and window.bytes == 110
    window.free_to(7)
    assert window.count == 1 and window.bytes == 90 and not window.full()
    window.add(10, 20)
    assert window.full()  # 110 bytes


def test_a_probing_follower_gets_one_append_at_a_time() -> None:
    progress = Progress(match=0, next=5, inflights=Inflights(10, None))
    progress.sent_entries(2, 10)
    assert progress.is_paused() and progress.next == 5  # probe: next moves on acknowledgement
    assert progress.maybe_update(6)
    assert not progress.is_paused()


def test_a_replicating_follower_gets_appends_pipelined_until_the_window_is_full() -> None:
    progress = Progress(match=4, next=5, inflights=Inflights(2, None))
    progress.become_replicate()
    progress.sent_entries(3, 30)
    assert (progress.next, progress.is_paused()) == (8, False)
    progress.sent_entries(1, 10)
    assert (progress.next, progress.is_paused()) == (9, True)


def test_rejections_move_next_back_only_when_they_answer_the_latest_probe() -> None:
    progress = Progress(match=2, next=10, inflights=Inflights(4, None))
    assert not progress.maybe_decrease_to(rejected=5, hint=3)  # stale: not next - 1
    assert progress.maybe_decrease_to(rejected=9, hint=4)
    assert progress.next == 5
    progress.become_replicate()
    assert not progress.maybe_decrease_to(rejected=2, hint=0)  # at or below match: stale
    assert progress.maybe_decrease_to(rejected=4, hint=0)
    assert progress.next == 3  # back to match + 1


def test_a_snapshot_that_arrived_leaves_the_probe_past_it() -> None:
    progress = Progress(match=2, next=3, inflights=Inflights(4, None))
    progress.become_snapshot(20)
    assert progress.is_paused() and progress.state is ProgressState.SNAPSHOT
    progress.become_probe()
    assert progress.next == 21


def test_hard_state_defaults_to_nothing_voted() -> None:
    assert HardState() == HardState(term=0, vote=None, commit=0)
