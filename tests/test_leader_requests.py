"""Leader mode's options in the client's requests and results, and the
server's refusal of each mode's options in the other: pure, no process."""

import grpc
import pytest

import kvclient
from kvclient import errors, requests
from kvclient.pb import kv_pb2
from kvstore.errors import InvalidArgument
from kvstore.rpc import validation

pytestmark = pytest.mark.timeout(10)


def test_if_version_and_stale_go_on_the_wire_only_when_given() -> None:
    plain = requests.put_request(b"k", b"v", context=None, w=None, request_id=b"r")
    assert not plain.HasField("if_version")
    cas = requests.put_request(b"k", b"v", context=None, w=None, request_id=b"r", if_version=0)
    assert cas.HasField("if_version") and cas.if_version == 0
    delete = requests.delete_request(b"k", context=None, w=None, request_id=b"r", if_version=7)
    assert delete.if_version == 7
    assert requests.get_request(b"k", None, stale=True).stale
    assert requests.get_many_request([b"a", b"b"], None, stale=True).stale


@pytest.mark.parametrize("bad, error", [(True, TypeError), ("3", TypeError), (1.0, TypeError),
                                        (-1, errors.InvalidArgument)])
def test_a_bad_if_version_is_refused_before_sending(bad: object, error: type) -> None:
    with pytest.raises(error, match="if_version"):
        requests.put_request(b"k", b"v", context=None, w=None, request_id=b"r",
                             if_version=bad)  # type: ignore[arg-type]


def test_stale_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="stale"):
        requests.get_request(b"k", None, stale=1)  # type: ignore[arg-type]


def test_put_many_takes_put_items_with_their_own_if_version() -> None:
    batch = requests.put_many_request(
        [kvclient.PutItem(b"a", b"1", if_version=4), (b"b", b"2"), kvclient.PutItem("c", "3")],
        w=None, random_bytes=lambda n: bytes(n))
    assert [p.HasField("if_version") for p in batch.puts] == [True, False, False]
    assert batch.puts[0].if_version == 4 and batch.puts[2].key == b"c"
    with pytest.raises(TypeError, match="PutItem"):
        requests.put_many_request([b"a"], w=None)  # type: ignore[list-item]


def test_results_carry_the_version_in_leader_mode_and_none_in_leaderless_mode() -> None:
    leader = requests.get_result(kv_pb2.GetResponse(found=True, siblings=[b"v"], version=9), None)
    assert (leader.value, leader.version) == (b"v", 9)
    absent = requests.get_result(kv_pb2.GetResponse(found=False, version=0), None)
    assert (absent.value, absent.version) == (None, 0)
    assert requests.get_result(kv_pb2.GetResponse(found=False), None).version is None
    assert requests.put_result(kv_pb2.PutResponse(version=12)).version == 12
    assert requests.put_result(kv_pb2.PutResponse(context=b"c")).version is None
    assert requests.delete_result(kv_pb2.DeleteResponse(version=0)).version == 0


def test_a_version_mismatch_is_a_failed_precondition_with_the_current_version() -> None:
    error = errors.error_for(grpc.StatusCode.FAILED_PRECONDITION, "moved on",
                             reason="VERSION_MISMATCH",
                             metadata={"current_version": "41", "outcome": "not_applied"})
    assert isinstance(error, errors.VersionMismatch)
    assert isinstance(error, errors.FailedPrecondition)
    assert (error.current_version, error.outcome) == (41, "not_applied")
    other = errors.error_for(grpc.StatusCode.FAILED_PRECONDITION, "siblings", reason="TOO_MANY")
    assert type(other) is errors.FailedPrecondition
    # FAILED_PRECONDITION is never retried: the client raises it at once.
    assert grpc.StatusCode.FAILED_PRECONDITION not in kvclient.retry.RETRYABLE_CODES


def test_each_mode_refuses_the_others_options_by_name() -> None:
    with pytest.raises(InvalidArgument, match="^stale applies only in leader mode"):
        validation.refuse_leader_fields(kv_pb2.GetRequest(key=b"k", stale=True))
    with pytest.raises(InvalidArgument, match=r"^puts\[2\]\.if_version applies only"):
        validation.refuse_leader_fields(kv_pb2.PutRequest(key=b"k", if_version=0), "puts[2].")
    validation.refuse_leader_fields(kv_pb2.PutRequest(key=b"k", context=b"c"))
    for request, name in ((kv_pb2.GetRequest(key=b"k", r=kv_pb2.Consistency(count=1)), "r"),
                          (kv_pb2.PutManyRequest(w=kv_pb2.Consistency(level=3)), "w"),
                          (kv_pb2.DeleteRequest(key=b"k", context=b"c"), "context"),
                          (kv_pb2.PutRequest(key=b"k", strict_quorum=True), "strict_quorum")):
        with pytest.raises(InvalidArgument, match=f"^{name} does not apply in leader mode"):
            validation.refuse_leaderless_fields(request)
    validation.refuse_leaderless_fields(kv_pb2.PutRequest(key=b"k", if_version=3))
