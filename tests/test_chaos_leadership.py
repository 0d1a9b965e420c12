"""The leader-mode chaos run's leadership figures: leader changes and how
long each partition went without a leader, counted from polls."""

import pytest

from chaos.leadership import LeadershipTimeline, leaders_in
from kvclient.pb import admin_pb2

pytestmark = pytest.mark.timeout(10)


def test_a_gap_runs_from_the_last_poll_with_the_old_leader_to_the_first_with_a_new_one() -> None:
    timeline = LeadershipTimeline()
    timeline.observe(0.0, {1: ("n1", 2), 2: ("n2", 2)})
    timeline.observe(0.2, {1: ("n1", 2), 2: ("n2", 2)})
    timeline.observe(0.4, {2: ("n2", 2)})  # n1 killed: partition 1 has none
    timeline.observe(0.6, {2: ("n2", 2)})
    assert timeline.open_gaps == 1 and timeline.gaps == []
    timeline.observe(1.7, {1: ("n3", 3), 2: ("n2", 2)})
    assert timeline.gaps == [pytest.approx(1.5)]
    assert timeline.changes == 1 and timeline.open_gaps == 0


def test_a_leader_back_after_a_pause_is_a_gap_but_no_change() -> None:
    timeline = LeadershipTimeline()
    timeline.observe(0.0, {1: ("n1", 2)})
    timeline.observe(0.2, {})
    timeline.observe(0.4, {1: ("n1", 2)})
    assert (timeline.changes, timeline.gaps) == (0, [pytest.approx(0.4)])


def test_a_deposed_leader_answering_in_an_older_term_changes_nothing() -> None:
    timeline = LeadershipTimeline()
    timeline.observe(0.0, {1: ("n1", 2)})
    timeline.observe(0.2, {1: ("n2", 3)})
    timeline.observe(0.4, {1: ("n1", 2)})
    assert (timeline.changes, timeline.gaps, timeline.open_gaps) == (1, [], 0)


def test_partitions_count_only_once_they_had_a_leader() -> None:
    timeline = LeadershipTimeline()
    timeline.observe(0.0, {})
    timeline.observe(3.0, {1: ("n1", 1)})
    assert (timeline.changes, timeline.gaps) == (0, [])
    assert "no partition was ever without a leader" in timeline.describe()


def test_the_leader_of_a_partition_is_the_node_that_says_so_in_the_highest_term() -> None:
    def status(node: str, *groups: tuple[int, str, int]) -> admin_pb2.StatusResponse:
        return admin_pb2.StatusResponse(id=node, raft=[
            admin_pb2.RaftGroupStatus(partition=p, role=role, term=term)
            for p, role, term in groups])

    answers = [status("n1", (1, "leader", 4), (2, "follower", 5)),
               status("n2", (1, "leader", 5), (2, "leader", 5)),
               status("n3", (3, "candidate", 6))]
    assert leaders_in(answers) == {1: ("n2", 5), 2: ("n2", 5)}


def test_the_report_gives_the_changes_and_the_times_to_elect() -> None:
    timeline = LeadershipTimeline()
    for at, leaders in [(0.0, {1: ("n1", 1), 2: ("n1", 1)}), (0.2, {}),
                        (1.2, {1: ("n2", 2)}), (2.2, {1: ("n2", 2), 2: ("n3", 2)})]:
        timeline.observe(at, leaders)
    assert timeline.describe() == (
        "2 leader change(s); 2 time(s) a partition was without a leader: median 1.70 s, "
        "max 2.20 s to elect (4 polls, every 0.2 s)")
