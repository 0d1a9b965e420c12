"""Phi accrual failure detection: steady heartbeats keep a peer up, silence
convicts it after a bounded time, a peer that comes back is up at once, and
jitter widens the tolerance. Times are plain floats: no clock, no sleeps."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.health.failure_detector import (
    FailureDetector,
    NodeStatus,
    PhiAccrualDetector,
    PhiSettings,
)

PROPERTIES = properties(200)

# Akka cluster's defaults: threshold 8, 100 ms minimum standard deviation, 3 s
# acceptable pause. With the module's own defaults (no pause, 50 ms) a peer
# with perfectly regular heartbeats is convicted ~1.26 s after its last one.
AKKA_CLUSTER = dict(threshold=8.0, min_std_seconds=0.1, acceptable_pause_seconds=3.0)


def steady(detector: PhiAccrualDetector, count: int, every: float = 1.0,
           start: float = 0.0) -> float:
    """Heartbeats at start, start+every, ...; returns the time of the last."""
    for i in range(count):
        detector.heartbeat(start + i * every)
    return start + (count - 1) * every


def expected_silence(threshold: float, mean: float, std: float) -> float:
    """The silence at which Akka's phi reaches `threshold`, solved here by
    bisection on Akka's formula (independently of the module's closed form)."""
    def akka_phi(y: float) -> float:
        e = math.exp(-y * (1.5976 + 0.070566 * y * y))
        return -math.log10(e / (1.0 + e))

    low, high = -10.0, 15.0  # Akka's form underflows past y ~ 25
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if akka_phi(middle) < threshold else (low, middle)
    return mean + high * std


def conviction_by_search(detector: PhiAccrualDetector, last: float) -> float:
    """The first time after `last` at which the detector convicts, by bisection."""
    low, high = last, last + 1000.0
    assert detector.is_available(low) and not detector.is_available(high)
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if detector.is_available(middle) else (low, middle)
    return high


# --- one peer ----------------------------------------------------------------


def test_regular_heartbeats_keep_phi_low():
    detector = PhiAccrualDetector()
    for i in range(300):
        now = float(i)
        # Just before each heartbeat: one mean interval of silence, phi = log10(2).
        assert detector.phi(now) < 0.5
        assert detector.is_available(now)
        detector.heartbeat(now)


def test_silence_convicts_after_a_bounded_time():
    detector = PhiAccrualDetector(PhiSettings(**AKKA_CLUSTER))
    last = steady(detector, 150)  # the window (100) holds only real 1 s intervals now
    silence = conviction_by_search(detector, last) - last
    assert silence == pytest.approx(expected_silence(8.0, 1.0 + 3.0, 0.1), abs=1e-9)
    assert 3.0 < silence < 10.0
    assert silence == pytest.approx(4.52, abs=0.01)


def test_default_settings_convict_a_perfectly_regular_peer_after_1_26_s():
    # Pinned so that changing the defaults is a deliberate act: with no
    # acceptable pause the tolerance is the 50 ms minimum deviation alone.
    detector = PhiAccrualDetector()
    last = steady(detector, 150)
    silence = conviction_by_search(detector, last) - last
    assert silence == pytest.approx(expected_silence(8.0, 1.0, 0.05), abs=1e-9)
    assert silence == pytest.approx(1.26, abs=0.01)


def test_phi_grows_with_silence_until_conviction():
    detector = PhiAccrualDetector(PhiSettings(**AKKA_CLUSTER))
    last = steady(detector, 20)
    phis = [detector.phi(last + k * 0.1) for k in range(200)]
    assert phis == sorted(phis)
    assert phis[0] < 1e-3 and phis[-1] > 8.0


def test_first_heartbeats_are_judged_against_first_interval():
    # Two synthetic intervals, 0.75 s and 1.25 s: mean 1 s, deviation 0.25 s.
    detector = PhiAccrualDetector(PhiSettings(first_interval_seconds=1.0))
    detector.heartbeat(10.0)
    silence = conviction_by_search(detector, 10.0) - 10.0
    assert silence == pytest.approx(expected_silence(8.0, 1.0, 0.25), abs=1e-9)
    assert silence == pytest.approx(2.31, abs=0.01)


def test_peer_that_comes_back_is_available_immediately():
    detector = PhiAccrualDetector(PhiSettings(**AKKA_CLUSTER))
    last = steady(detector, 150)
    before = detector.conviction_time()
    assert before is not None
    back = last + 60.0
    assert not detector.is_available(back)
    detector.heartbeat(back)
    assert detector.is_available(back)
    assert detector.phi(back) < 1e-6
    # The 60 s outage did not join the window: the tolerance is unchanged.
    assert detector.conviction_time() == pytest.approx(before + 60.0)


def test_jittery_intervals_widen_the_tolerance():
    regular, jittery = PhiAccrualDetector(), PhiAccrualDetector()
    jittery_last = 0.0
    for i in range(150):
        regular.heartbeat(float(i))
        jittery_last += 0.5 if i % 2 else 1.5  # same 1 s mean, 0.5 s deviation
        jittery.heartbeat(jittery_last)
    regular_last = 149.0
    regular_silence = conviction_by_search(regular, regular_last) - regular_last
    jittery_silence = conviction_by_search(jittery, jittery_last) - jittery_last
    assert regular_silence == pytest.approx(1.26, abs=0.01)
    assert jittery_silence == pytest.approx(expected_silence(8.0, 1.0, 0.5), abs=1e-6)
    assert jittery_silence > regular_silence + 1.5
    assert regular.phi(regular_last + 2.0) > 8.0 > jittery.phi(jittery_last + 2.0)


def test_acceptable_pause_postpones_conviction_by_that_much():
    quick = PhiAccrualDetector()
    patient = PhiAccrualDetector(PhiSettings(acceptable_pause_seconds=2.5))
    steady(quick, 150)
    steady(patient, 150)
    assert patient.conviction_time() == pytest.approx(quick.conviction_time() + 2.5)


def test_window_forgets_old_intervals():
    detector = PhiAccrualDetector(PhiSettings(window=10))
    last = steady(detector, 20, every=5.0)  # slow link...
    last = steady(detector, 11, every=1.0, start=last + 1.0)  # ...now fast: 10 fresh intervals
    assert detector.conviction_time() == pytest.approx(last + expected_silence(8.0, 1.0, 0.05))


def test_a_peer_never_heard_from_is_not_suspected():
    detector = PhiAccrualDetector()
    assert detector.phi(1e6) == 0.0 and detector.is_available(1e6)
    assert detector.conviction_time() is None and detector.last_heartbeat is None


def test_expect_starts_the_clock_without_a_heartbeat():
    detector = PhiAccrualDetector()
    detector.expect(100.0)
    assert detector.last_heartbeat is None
    assert detector.conviction_time() == pytest.approx(100.0 + expected_silence(8.0, 1.0, 0.25))
    # The first real heartbeat starts afresh: the wait before it is no interval.
    detector.heartbeat(100.9)
    detector.expect(500.0)  # no effect once started
    assert detector.last_heartbeat == 100.9
    assert detector.conviction_time() == pytest.approx(100.9 + expected_silence(8.0, 1.0, 0.25))


def test_a_reordered_older_heartbeat_is_ignored():
    detector = PhiAccrualDetector()
    last = steady(detector, 10)
    deadline = detector.conviction_time()
    detector.heartbeat(last - 0.5)
    assert detector.last_heartbeat == last
    assert detector.conviction_time() == deadline


def test_conviction_time_is_where_phi_crosses_the_threshold():
    detector = PhiAccrualDetector(PhiSettings(threshold=3.0, acceptable_pause_seconds=0.7))
    for t in (0.0, 0.9, 2.1, 3.0, 4.2, 5.0):
        detector.heartbeat(t)
    deadline = detector.conviction_time()
    assert deadline == pytest.approx(conviction_by_search(detector, 5.0), abs=1e-9)
    assert detector.phi(deadline - 1e-6) < 3.0 < detector.phi(deadline + 1e-6)


@pytest.mark.parametrize(
    "changes",
    [
        dict(threshold=0.0),
        dict(threshold=-1.0),
        dict(threshold=math.inf),
        dict(window=0),
        dict(window=2.5),
        dict(window=True),
        dict(min_std_seconds=0.0),
        dict(acceptable_pause_seconds=-0.1),
        dict(first_interval_seconds=0.0),
        dict(first_interval_seconds=math.nan),
    ],
)
def test_bad_settings_are_refused(changes):
    with pytest.raises(ValueError, match=next(iter(changes))):
        PhiAccrualDetector(PhiSettings(**changes))
    with pytest.raises(ValueError, match=next(iter(changes))):
        FailureDetector(PhiSettings(**changes))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "1.0", None])
def test_times_must_be_finite_numbers(bad):
    detector = PhiAccrualDetector()
    with pytest.raises(ValueError, match="finite"):
        detector.heartbeat(bad)
    with pytest.raises(ValueError, match="finite"):
        detector.phi(bad)


settings_strategy = st.builds(
    PhiSettings,
    threshold=st.floats(0.5, 16.0),
    window=st.integers(1, 30),
    min_std_seconds=st.floats(0.001, 1.0),
    acceptable_pause_seconds=st.floats(0.0, 30.0),
    first_interval_seconds=st.floats(0.01, 10.0),
)


@PROPERTIES
@given(
    settings_=settings_strategy,
    intervals=st.lists(st.floats(0.0, 20.0), max_size=40),
    silences=st.lists(st.floats(0.0, 1e7), min_size=2, max_size=30),
)
def test_phi_never_decreases_in_silence_and_is_never_negative_or_nan(settings_, intervals,
                                                                     silences):
    detector = PhiAccrualDetector(settings_)
    now = 1000.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    phis = [detector.phi(now + silence) for silence in sorted(silences)]
    assert all(phi >= 0.0 and not math.isnan(phi) for phi in phis)
    assert phis == sorted(phis)


@PROPERTIES
@given(settings_=settings_strategy, intervals=st.lists(st.floats(0.001, 20.0), max_size=40))
def test_conviction_time_agrees_with_phi(settings_, intervals):
    detector = PhiAccrualDetector(settings_)
    now = 0.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    deadline = detector.conviction_time()
    assert deadline is not None and deadline > now
    step = 1e-6 * max(1.0, deadline)
    assert detector.is_available(deadline - step)
    assert not detector.is_available(deadline + step)


# --- many peers --------------------------------------------------------------


def test_a_fresh_cluster_is_up_until_its_nodes_miss_the_first_deadline():
    detector = FailureDetector()
    for node in ("n1", "n2", "n3"):
        detector.watch(node, 0.0)
    assert detector.up_nodes(0.0) == {"n1", "n2", "n3"}
    assert detector.changes(0.5) == []
    for t in (0.9, 1.8):
        detector.heartbeat("n1", t)
        detector.heartbeat("n2", t)
    # n3 never answered: convicted ~2.31 s after it was first watched.
    assert detector.is_up("n3", 2.2) and not detector.is_up("n3", 2.4)
    assert detector.changes(2.4) == [("n3", False)]
    assert detector.down_nodes(2.4) == {"n3"}
    assert detector.up_nodes(2.4) == {"n1", "n2"}


def test_changes_report_each_transition_once():
    detector = FailureDetector(PhiSettings(**AKKA_CLUSTER))
    for i in range(10):
        detector.heartbeat("n1", float(i))
        detector.heartbeat("n2", float(i))
    assert detector.changes(9.0) == []
    detector.heartbeat("n2", 12.0)
    assert detector.changes(20.0) == [("n1", False), ("n2", False)]
    assert detector.changes(21.0) == []
    detector.heartbeat("n1", 30.0)
    assert detector.changes(30.0) == [("n1", True)]
    assert detector.changes(30.5) == []


def test_an_outage_between_two_looks_is_still_reported():
    detector = FailureDetector(PhiSettings(**AKKA_CLUSTER))
    for i in range(10):
        detector.heartbeat("n1", float(i))
    assert detector.changes(9.0) == []
    detector.heartbeat("n1", 40.0)  # silent for 31 s, back before anyone looked
    assert detector.changes(41.0) == [("n1", False), ("n1", True)]
    assert detector.changes(42.0) == []


def test_status_lists_every_watched_node_with_its_phi():
    detector = FailureDetector()
    detector.watch("n2", 0.0)
    detector.heartbeat("n1", 0.0)  # an unwatched node's heartbeat watches it
    status = detector.status(1.0)
    assert list(status) == ["n1", "n2"]
    assert all(isinstance(s, NodeStatus) and s.up for s in status.values())
    assert status["n1"].phi == pytest.approx(math.log10(2))
    up, phi = detector.status(5.0)["n1"]
    assert not up and phi == detector.phi("n1", 5.0) >= 8.0
    assert detector.watched() == ("n1", "n2")


def test_asking_about_a_node_never_watched_is_an_error():
    detector = FailureDetector()
    with pytest.raises(KeyError, match="n9"):
        detector.is_up("n9", 0.0)
    with pytest.raises(KeyError, match="n9"):
        detector.phi("n9", 0.0)


def test_forgotten_nodes_leave_every_answer():
    detector = FailureDetector()
    detector.watch("n1", 0.0)
    detector.watch("n2", 0.0)
    detector.heartbeat("n2", 50.0)  # a down-and-up not reported yet
    detector.forget("n2")
    detector.forget("n7")
    assert detector.watched() == ("n1",)
    assert detector.changes(50.0) == [("n1", False)]
    assert "n2" not in detector.status(50.0)


@PROPERTIES
@given(
    schedule=st.lists(
        st.tuples(st.floats(0.0, 6.0), st.sampled_from(["n1", "n2", "n3", "look"])),
        max_size=60,
    )
)
def test_reported_changes_alternate_and_end_at_the_current_state(schedule):
    detector = FailureDetector()
    for node in ("n1", "n2", "n3"):
        detector.watch(node, 0.0)
    events: dict[str, list[bool]] = {"n1": [], "n2": [], "n3": []}
    now = 0.0
    for step, what in schedule:
        now += step
        if what == "look":
            for node, up in detector.changes(now):
                events[node].append(up)
        else:
            detector.heartbeat(what, now)
    for node, up in detector.changes(now):
        events[node].append(up)
    for node, seen in events.items():
        assert seen == [k % 2 == 1 for k in range(len(seen))]  # False, True, False, ...
        assert (seen[-1] if seen else True) == detector.is_up(node, now)
