"""Admission control: a request past a bound of requests or bytes in flight
(the process's, or its stream's) is refused at once with OVERLOADED and a
retry delay, as is one that a busy process could not answer within its
deadline; one request alone always gets in; holds keep a request's share
until the work it left running is done; and the settings a config file gives
are checked by name."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import NOT_APPLIED, OVERLOADED, Overloaded
from kvstore.rpc.admission import (EXPECTED_LATENCY, PROCESS_BYTES,
                                   PROCESS_REQUESTS, SESSION_BYTES, SESSION_REQUESTS, Admission,
                                   AdmissionLimits, Ticket)
from kvstore.server.config import ConfigError, load_coordinator_config, load_node_config
from tests.properties import properties

pytestmark = pytest.mark.timeout(30)


def _admission(refused: list[str] | None = None, **limits: int | float) -> Admission:
    record = refused.append if refused is not None else (lambda bound: None)
    return Admission(AdmissionLimits(**limits), on_refused=record)  # type: ignore[arg-type]


def test_past_the_count_bound_a_request_is_refused_at_once_and_admitted_again_once_one_ends(
        ) -> None:
    refused: list[str] = []
    admission = _admission(refused, max_requests=2, retry_after=0.05)
    first, _second = admission.admit(10), admission.admit(10)
    with pytest.raises(Overloaded) as caught:
        admission.admit(10)
    refusal = caught.value
    assert refusal.reason == OVERLOADED and refusal.outcome == NOT_APPLIED
    assert refusal.retry_after == 0.05
    assert refusal.metadata["bound"] == PROCESS_REQUESTS
    assert re.search(r"2 requests in flight, max_requests_in_flight=2", str(refusal))
    assert refused == [PROCESS_REQUESTS]
    first.release()
    admission.admit(10)
    assert (admission.process.requests, admission.process.bytes) == (2, 20)


def test_past_the_bytes_bound_a_request_is_refused_but_one_alone_always_gets_in() -> None:
    admission = _admission(max_bytes=100)
    huge = admission.admit(1000)  # larger than the bound, but nothing else holds bytes
    with pytest.raises(Overloaded) as caught:
        admission.admit(1)
    assert caught.value.metadata["bound"] == PROCESS_BYTES
    huge.release()
    small = admission.admit(60)
    with pytest.raises(Overloaded):
        admission.admit(41)
    admission.admit(40)
    small.release()
    assert admission.process.bytes == 40


def test_a_streams_own_bounds_come_first_and_leave_other_streams_alone() -> None:
    admission = _admission(max_requests=10, session_max_requests=2, session_max_bytes=50)
    one, other = admission.session_gate(), admission.session_gate()
    admission.admit(1, one)
    admission.admit(1, one)
    with pytest.raises(Overloaded) as caught:
        admission.admit(1, one)
    assert caught.value.metadata["bound"] == SESSION_REQUESTS
    admission.admit(49, other)
    with pytest.raises(Overloaded) as caught:
        admission.admit(2, other)
    assert caught.value.metadata["bound"] == SESSION_BYTES
    assert admission.process.requests == 3  # every stream's requests count for the process


def test_a_ticket_holds_its_share_until_the_request_and_every_hold_are_done() -> None:
    admission = _admission(max_requests=1)
    ticket = admission.admit(7)
    replication, hint = ticket.hold(), ticket.hold()
    ticket.release()  # answered; its replication still runs
    with pytest.raises(Overloaded):
        admission.admit(1)
    replication()
    replication()  # a hold lets go once, however often it is called
    assert admission.process.requests == 1
    hint()
    assert (admission.process.requests, admission.process.bytes) == (0, 0)
    admission.admit(1)


def test_a_busy_process_refuses_a_deadline_too_short_for_what_requests_take_now() -> None:
    refused: list[str] = []
    admission = _admission(refused, max_requests=4)
    for seconds in [0.1, 0.3] * 200:  # 200 ms on average, 100 ms from it
        admission.observe_latency(seconds)
    assert admission.answered.latency == pytest.approx(0.2, abs=0.01)
    assert admission.answered.deviation == pytest.approx(0.1, abs=0.01)
    expected = admission.expected_latency
    assert expected == pytest.approx(0.6, abs=0.05)  # the average and four deviations
    admission.admit(1, deadline=0.01)  # not busy: a short deadline is the client's choice
    admission.admit(1)  # half full from here on
    admission.admit(1, deadline=expected + 0.01)  # enough time left
    with pytest.raises(Overloaded) as caught:
        admission.admit(1, deadline=0.3)
    assert caught.value.metadata["bound"] == EXPECTED_LATENCY
    assert caught.value.metadata["expected_latency_ms"] == f"{expected * 1000:.0f}"
    assert "this one's deadline is 300 ms away" in str(caught.value)
    assert caught.value.retry_after is not None and refused == [EXPECTED_LATENCY]
    admission.admit(1)  # without a deadline, only the bounds apply


@pytest.mark.parametrize("limits", [dict(max_requests=0), dict(session_max_bytes=-1),
                                    dict(max_bytes=1.5), dict(retry_after=-1),
                                    dict(session_max_requests=True)])
def test_bad_limits_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(limits))):
        AdmissionLimits(**limits)  # type: ignore[arg-type]


@properties(300)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 300)), max_size=80),
       st.integers(1, 5), st.integers(1, 500))
def test_what_is_admitted_never_passes_a_bound_unless_alone(
        steps: list[tuple[bool, int, int]], max_requests: int, max_bytes: int) -> None:
    admission = _admission(max_requests=max_requests, max_bytes=max_bytes)
    held: list[tuple[Ticket, int]] = []
    for admit, index, cost in steps:
        if admit or not held:
            fits = len(held) < max_requests and (
                not sum(c for _, c in held) or sum(c for _, c in held) + cost <= max_bytes)
            try:
                held.append((admission.admit(cost), cost))
            except Overloaded:
                assert not fits
            else:
                assert fits
        else:
            ticket, _ = held.pop(index % len(held))
            ticket.release()
        total = sum(c for _, c in held)
        assert admission.process.requests == len(held) <= max_requests
        assert admission.process.bytes == total
        assert total <= max_bytes or len([c for _, c in held if c]) == 1


def test_the_config_file_sets_the_bounds_and_a_bad_one_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "node.toml"
    config.write_text('[node]\nmax_requests_in_flight = 64\nmax_request_bytes_in_flight = "8MiB"\n'
                      'session_max_in_flight = 16\nsession_max_bytes_in_flight = "1MiB"\n'
                      'overload_retry_after_ms = 20\n')
    limits = load_node_config(config, {"node_id": "n1"}).admission
    assert limits == AdmissionLimits(max_requests=64, max_bytes=8 << 20, session_max_requests=16,
                                     session_max_bytes=1 << 20, retry_after=0.02)
    config.write_text("[node]\nsession_max_in_flight = 0\n")
    with pytest.raises(ConfigError, match="session_max_in_flight must be 1"):
        load_node_config(config, {"node_id": "n1"})
    config.write_text("[cluster]\nreplicas = 1\n[[cluster.members]]\nid = 'n1'\n"
                      "address = '127.0.0.1:7101'\n"
                      "[coordinator]\noverload_retry_after_ms = 90000\n")
    with pytest.raises(ConfigError, match="overload_retry_after_ms must be 0..60000"):
        load_coordinator_config(config, {"coordinator_id": "c1"})


def test_the_batch_bounds_are_checked_against_the_message_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "node.toml"
    config.write_text('[node]\nmessage_batch_bytes = "256KiB"\nmessage_batch_operations = 32\n')
    loaded = load_node_config(config, {"node_id": "n1"})
    assert (loaded.message_batch_bytes, loaded.message_batch_operations) == (256 << 10, 32)
    config.write_text('[node]\nmessage_batch_bytes = "3MiB"\n')  # over half of the 4 MiB limit
    with pytest.raises(ConfigError, match=re.escape("message_batch_bytes must be in [4096, ")):
        load_node_config(config, {"node_id": "n1"})
    config.write_text("[node]\nmessage_batch_operations = 0\n")
    with pytest.raises(ConfigError, match="message_batch_operations must be 1..65536"):
        load_node_config(config, {"node_id": "n1"})
