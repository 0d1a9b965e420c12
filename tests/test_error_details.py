"""gRPC's rich error details, both ends: the node's `ErrorInfo` (reason and
fields such as a failed write's outcome) reaches kvclient's exceptions."""

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from kvclient import errors
from kvclient.pb import kv_pb2
from kvclient.requests import _check_item
from kvstore.errors import NOT_APPLIED, Overloaded, Unavailable
from kvstore.rpc.status import rich_status, status_details, status_of

pytestmark = pytest.mark.timeout(30)


def test_a_reason_and_its_fields_reach_the_client_exception() -> None:
    error = Unavailable("w=2 needs 2 of 3 replicas; refused", reason="QUORUM_NOT_REACHED",
                        metadata={"outcome": NOT_APPLIED, "required": "2", "acknowledged": "0"})
    reason, metadata, retry_after = errors.rich_details(status_details(error))
    assert reason == "QUORUM_NOT_REACHED"
    assert metadata == {"outcome": "not_applied", "required": "2", "acknowledged": "0"}
    assert retry_after is None
    typed = errors.error_for(grpc.StatusCode.UNAVAILABLE, str(error), reason=reason,
                             metadata=metadata)
    assert isinstance(typed, errors.Unavailable) and typed.outcome == "not_applied"
    assert (typed.required, typed.acknowledged) == (2, 0)
    assert errors.Unavailable("no details").required is None


def test_errors_are_also_the_builtins_they_mean() -> None:
    # Code written for timeouts and connection failures in general catches these.
    assert isinstance(errors.error_for(grpc.StatusCode.DEADLINE_EXCEEDED, "late"), TimeoutError)
    assert isinstance(errors.error_for(grpc.StatusCode.UNAVAILABLE, "down"), ConnectionError)
    assert isinstance(errors.error_for(grpc.StatusCode.INVALID_ARGUMENT, "bad"), ValueError)
    late = errors.DeadlineExceeded("deadline passed after 3 attempts")
    assert str(late) == "DEADLINE_EXCEEDED: deadline passed after 3 attempts"
    assert late.details == "deadline passed after 3 attempts" and late.errno is None


def test_an_error_without_a_reason_sends_no_details() -> None:
    assert status_details(Unavailable("the node is shutting down")) == ()
    assert errors.rich_details(()) == (None, {}, None)


def test_retry_info_gives_retry_after_and_malformed_details_are_ignored() -> None:
    status = status_pb2.Status(code=8, message="overloaded")
    status.details.add().Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)))
    trailing = (("grpc-status-details-bin", status.SerializeToString()),)
    assert errors.rich_details(trailing) == (None, {}, 1.5)
    assert errors.rich_details((("grpc-status-details-bin", b"\xff\xff not protobuf"),)) == (
        None, {}, None)


def test_a_batch_item_carries_its_reason_and_outcome() -> None:
    status = kv_pb2.ItemStatus(code=14, message="1 did, 2 failed", reason="QUORUM_NOT_REACHED",
                               metadata={"outcome": "unknown"})
    with pytest.raises(errors.Unavailable) as caught:
        _check_item(3, b"k", status)
    assert caught.value.reason == "QUORUM_NOT_REACHED" and caught.value.outcome == "unknown"
    assert "batch item 3" in caught.value.details


def test_an_overload_refusal_carries_its_reason_outcome_bound_and_retry_delay() -> None:
    refusal = Overloaded("overloaded: 512 requests in flight", bound="max_requests_in_flight",
                         retry_after=0.05, expected_latency=0.3)
    assert status_of(refusal) == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata, retry_after = errors.rich_details(status_details(refusal))
    assert reason == "OVERLOADED" and retry_after == 0.05
    assert metadata == {"outcome": "not_applied", "bound": "max_requests_in_flight",
                        "expected_latency_ms": "300"}
    typed = errors.from_status(rich_status(refusal))  # as a KV.Session result carries it
    assert isinstance(typed, errors.ResourceExhausted)
    assert (typed.reason, typed.outcome, typed.retry_after) == ("OVERLOADED", "not_applied", 0.05)
