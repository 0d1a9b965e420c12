"""kvclient's pure cores: consistency levels, the error table, backoff, address
rotation and retry decisions, the sibling rule, and argument checking. No
network: the clients below are constructed but never reach a server."""

from __future__ import annotations

import random
from typing import Any

import grpc
import pytest

import kvclient
from google.rpc import error_details_pb2, status_pb2

from kvclient import errors, framing, requests
from kvclient.channels import channel_options
from kvclient.config import ClientConfig, check_timeout, parse_addresses
from kvclient.consistency import parse_consistency
from kvclient.pb import kv_pb2
from kvclient.results import GetResult, choose_value
from kvclient.retry import AddressRotation, AttemptLatency, Attempts, RetryPolicy

# Never reached: constructing a sync channel does not connect.
NOWHERE = "127.0.0.1:1"


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


# --- consistency -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "level"),
    [("one", kv_pb2.Consistency.ONE), ("QUORUM", kv_pb2.Consistency.QUORUM),
     ("All", kv_pb2.Consistency.ALL), ("quorum", kv_pb2.Consistency.QUORUM)],
)
def test_named_levels_are_case_insensitive(given: str, level: int) -> None:
    parsed = parse_consistency(given)
    assert parsed is not None and parsed.WhichOneof("kind") == "level" and parsed.level == level


@pytest.mark.parametrize("count", [1, 3, 2**32 - 1])
def test_positive_int_is_a_replica_count(count: int) -> None:
    parsed = parse_consistency(count)
    assert parsed is not None and parsed.WhichOneof("kind") == "count" and parsed.count == count


def test_none_leaves_the_server_default() -> None:
    assert parse_consistency(None) is None
    assert not requests.get_request(b"k", None).HasField("r")


@pytest.mark.parametrize("bad", ["two", "", "quorum ", 0, -1, 2**32, True, 1.5, b"one", [1]])
def test_unknown_levels_are_refused_naming_the_allowed_ones(bad: object) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        parse_consistency(bad, "w")  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("INVALID_ARGUMENT: w must be")
    assert all(word in message for word in ('"one"', '"quorum"', '"all"', "positive int"))
    assert isinstance(caught.value, ValueError)


def test_client_refuses_a_bad_level_before_sending() -> None:
    with kvclient.Client(NOWHERE) as client:
        with pytest.raises(errors.InvalidArgument, match="r must be"):
            client.get(b"k", r="most")


# --- error table -----------------------------------------------------------

SPEC_CLASSES = [
    "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unavailable", "DeadlineExceeded", "ResourceExhausted", "DataLoss",
    "Internal", "Unknown", "Unimplemented", "PermissionDenied", "Unauthenticated", "Cancelled",
]


def test_every_status_code_but_ok_has_its_own_exception_class() -> None:
    codes = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
    assert set(errors.ERROR_BY_CODE) == set(codes)
    assert len(set(errors.ERROR_BY_CODE.values())) == len(codes)
    for code, cls in errors.ERROR_BY_CODE.items():
        assert issubclass(cls, errors.KVError) and cls.code is code
    assert {cls.__name__ for cls in errors.ERROR_BY_CODE.values()} == set(SPEC_CLASSES)
    assert all(getattr(errors, name) in errors.ERROR_BY_CODE.values() for name in SPEC_CLASSES)


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_rpc_error_becomes_typed_error_with_code_and_details(code: grpc.StatusCode) -> None:
    error = errors.from_rpc_error(FakeRpcError(code, "what to change"))
    assert type(error) is errors.ERROR_BY_CODE[code]
    assert error.code is code and error.details == "what to change"
    assert str(error) == f"{code.name}: what to change"


def test_rpc_error_without_a_status_is_unknown() -> None:
    error = errors.from_rpc_error(grpc.RpcError())
    assert isinstance(error, errors.Unknown) and str(error) == "UNKNOWN"


def test_batch_item_codes_map_by_number() -> None:
    for code in grpc.StatusCode:
        assert errors.status_code_from_int(code.value[0]) is code
    assert errors.status_code_from_int(999) is grpc.StatusCode.UNKNOWN


# --- backoff ---------------------------------------------------------------


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    policy = RetryPolicy(max_attempts=50, backoff_base=0.02, backoff_cap=1.0)
    ceilings = [policy.backoff_ceiling(n) for n in range(50)]
    assert ceilings[:3] == [0.02, 0.04, 0.08]
    assert all(a <= b for a, b in zip(ceilings, ceilings[1:]))
    assert max(ceilings) == 1.0 and ceilings[-1] == 1.0
    rng = random.Random(7)
    for retry, ceiling in enumerate(ceilings):
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jitter spans the range, not a constant


def test_backoff_survives_absurd_attempt_numbers() -> None:
    assert RetryPolicy(backoff_base=0.5, backoff_cap=3.0).backoff_ceiling(10_000) == 3.0


def test_backoff_is_reproducible_from_a_seed() -> None:
    policy = RetryPolicy()
    first = [policy.backoff(n, random.Random(42)) for n in range(6)]
    again = [policy.backoff(n, random.Random(42)) for n in range(6)]
    assert first == again


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"backoff_base": -1.0},
                                    {"backoff_cap": float("nan")}])
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(errors.InvalidArgument):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# --- address rotation and retry decisions ----------------------------------


def test_successive_calls_start_at_successive_addresses() -> None:
    rotation = AddressRotation(3)
    assert [rotation.first() for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert [rotation.after(i) for i in range(3)] == [1, 2, 0]


def _attempts(rotation: AddressRotation, *, max_attempts: int = 5, timeout: float = 10.0,
              cap: float = 0.05) -> Attempts:
    policy = RetryPolicy(max_attempts=max_attempts, backoff_base=0.01, backoff_cap=cap)
    return Attempts(policy, rotation, now=0.0, timeout=timeout, rng=random.Random(1))


def _refused(outcome: str) -> errors.Unavailable:
    return errors.Unavailable("w=2 not reached", metadata={"outcome": outcome})


def test_a_refusal_after_an_attempt_that_may_have_applied_leaves_the_outcome_unknown() -> None:
    attempts = _attempts(AddressRotation(2), max_attempts=2)
    attempts.after_failure(_refused("unknown"), now=0.0)
    with pytest.raises(errors.Unavailable) as last:
        attempts.after_failure(_refused("not_applied"), now=0.0)
    assert last.value.outcome == "unknown"
    assert "an earlier attempt may have applied the write" in str(last.value)


def test_refusals_on_every_attempt_mean_nothing_was_applied() -> None:
    attempts = _attempts(AddressRotation(2), max_attempts=2)
    attempts.after_failure(_refused("not_applied"), now=0.0)
    with pytest.raises(errors.Unavailable) as last:
        attempts.after_failure(_refused("not_applied"), now=0.0)
    assert last.value.outcome == "not_applied"


def test_unavailable_fails_over_to_the_next_address_in_order() -> None:
    rotation = AddressRotation(3)
    rotation.first()  # another call took address 0
    attempts = _attempts(rotation)
    seen = [attempts.address]
    for _ in range(3):
        attempts.after_failure(FakeRpcError(grpc.StatusCode.UNAVAILABLE), now=0.0)
        seen.append(attempts.address)
    assert seen == [1, 2, 0, 1]


def test_aborted_is_retried_on_the_same_address() -> None:
    attempts = _attempts(AddressRotation(3))
    delay = attempts.after_failure(FakeRpcError(grpc.StatusCode.ABORTED), now=0.0)
    assert 0.0 <= delay <= 0.01 and attempts.address == 0


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode
                                  if c not in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE,
                                               grpc.StatusCode.ABORTED)])
def test_other_codes_are_raised_at_once(code: grpc.StatusCode) -> None:
    attempts = _attempts(AddressRotation(2))
    with pytest.raises(errors.ERROR_BY_CODE[code]) as caught:
        attempts.after_failure(FakeRpcError(code, "no"), now=0.0)
    assert caught.value.details == "no" and isinstance(caught.value.__cause__, FakeRpcError)


def test_the_last_error_is_raised_when_attempts_run_out() -> None:
    attempts = _attempts(AddressRotation(1), max_attempts=3)
    for _ in range(2):
        attempts.after_failure(FakeRpcError(grpc.StatusCode.ABORTED, "conflict"), now=0.0)
    with pytest.raises(errors.Unavailable, match="down"):
        attempts.after_failure(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down"), now=0.0)


def test_no_retry_is_scheduled_past_the_deadline() -> None:
    attempts = _attempts(AddressRotation(1), max_attempts=100, timeout=1.0, cap=0.5)
    now = 0.0
    with pytest.raises(errors.DeadlineExceeded, match="last error: UNAVAILABLE: down") as caught:
        while True:
            assert attempts.time_left(now) > 0
            now += attempts.after_failure(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down"), now)
    assert now < 1.0 and isinstance(caught.value.__cause__, FakeRpcError)


def test_each_attempt_gets_what_is_left_of_the_call() -> None:
    attempts = _attempts(AddressRotation(1), timeout=2.0)
    assert attempts.time_left(0.5) == 1.5
    with pytest.raises(errors.DeadlineExceeded, match="2 s timeout ran out after 0 attempt"):
        attempts.time_left(2.0)


def test_a_streamed_operations_typed_error_is_judged_as_its_call_would_be() -> None:
    attempts = _attempts(AddressRotation(2))
    assert attempts.after_failure(errors.Unavailable("stream broke"), now=0.0) >= 0
    assert attempts.address == 1  # failed over, as after an UNAVAILABLE call
    refused = errors.InvalidArgument("key is empty")
    with pytest.raises(errors.InvalidArgument) as caught:
        attempts.after_failure(refused, now=0.0)
    assert caught.value is refused and caught.value.__cause__ is None


def _overloaded(retry_after: float = 0.05, expected_ms: str = "0") -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        "overloaded: 512 requests in flight", reason="OVERLOADED",
        metadata={"outcome": "not_applied", "bound": "max_requests_in_flight",
                  "expected_latency_ms": expected_ms},
        retry_after=retry_after)


def test_an_overload_refusal_is_retried_elsewhere_after_its_delay_not_as_a_failed_attempt(
        ) -> None:
    attempts = _attempts(AddressRotation(3), max_attempts=2, timeout=100.0, cap=1.0)
    seen, delays = [attempts.address], []
    for _ in range(10):  # ten refusals in a row: more than max_attempts
        delays.append(attempts.after_failure(_overloaded(0.05), now=0.0))
        seen.append(attempts.address)
    assert seen == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]
    # At least the server's delay, plus a full-jitter backoff that grows.
    ceilings = [min(1.0, 0.01 * 2**n) for n in range(10)]
    assert all(0.05 <= d <= 0.05 + c for d, c in zip(delays, ceilings))
    # A real failure still counts: max_attempts=2 allows one retry of it.
    attempts.after_failure(errors.Unavailable("down"), now=0.0)
    with pytest.raises(errors.Unavailable):
        attempts.after_failure(errors.Unavailable("down"), now=0.0)


def test_an_overload_refusal_that_cannot_be_retried_in_time_is_raised_as_it_is() -> None:
    attempts = _attempts(AddressRotation(1), timeout=1.0)
    refusal = _overloaded(retry_after=2.0)
    with pytest.raises(errors.ResourceExhausted) as caught:
        attempts.after_failure(refusal, now=0.0)
    assert caught.value is refusal and caught.value.reason == "OVERLOADED"
    assert caught.value.outcome == "not_applied"


def test_an_overload_is_not_retried_with_less_left_than_the_server_expects_a_request_to_need(
        ) -> None:
    attempts = _attempts(AddressRotation(1), timeout=2.0, cap=0.01)
    assert attempts.after_failure(_overloaded(0.05, expected_ms="1000"), now=0.0) < 0.07
    refusal = _overloaded(0.05, expected_ms="1000")
    with pytest.raises(errors.ResourceExhausted) as caught:
        attempts.after_failure(refusal, now=0.95)  # 1.05 s left, less the delay: under 1 s
    assert caught.value is refusal
    # A server that says nothing (or nonsense) of its latency: only the delay counts.
    for said in ("", "soon"):
        later = _attempts(AddressRotation(1), timeout=2.0, cap=0.01)
        assert later.after_failure(_overloaded(0.05, expected_ms=said), now=1.9) < 0.07


def test_an_overload_is_not_retried_with_less_left_than_this_clients_attempts_take() -> None:
    # The server answers fast once it reads a request (it says 10 ms), but
    # this client's attempts took about a second: its own queue and the
    # network. Retrying with 0.5 s left would end DEADLINE_EXCEEDED.
    latency = AttemptLatency()
    for _ in range(20):
        latency.observe(1.0)
    assert 1.0 <= latency.expected < 1.2
    policy = RetryPolicy(max_attempts=5, backoff_base=0.01, backoff_cap=0.01)
    attempts = Attempts(policy, AddressRotation(1), now=0.0, timeout=2.0,
                        rng=random.Random(1), latency=latency)
    assert attempts.after_failure(_overloaded(0.05, expected_ms="10"), now=0.0) < 0.07
    refusal = _overloaded(0.05, expected_ms="10")
    with pytest.raises(errors.ResourceExhausted) as caught:
        attempts.after_failure(refusal, now=1.5)
    assert caught.value is refusal


def test_attempt_latency_follows_what_attempts_take_and_their_spread() -> None:
    latency = AttemptLatency()
    assert latency.expected == 0.0  # nothing seen: nothing is held against a retry
    latency.observe(0.2)
    assert latency.latency == 0.2 and latency.expected == pytest.approx(0.6)
    for _ in range(100):
        latency.observe(0.01)
    assert latency.expected < 0.02  # the spread decays once attempts are steady


def test_resource_exhausted_is_retried_only_when_overloaded_with_a_delay() -> None:
    for error in (errors.ResourceExhausted("message too large"),
                  errors.ResourceExhausted("overloaded", reason="OVERLOADED"),
                  errors.ResourceExhausted("the store is full", reason="STORE_FULL",
                                           retry_after=0.1),
                  errors.ResourceExhausted("slow down", reason="RATE_LIMITED", retry_after=0.1)):
        with pytest.raises(errors.ResourceExhausted) as caught:
            _attempts(AddressRotation(2)).after_failure(error, now=0.0)
        assert caught.value is error


def test_a_refusal_after_an_attempt_that_may_have_applied_does_not_say_not_applied() -> None:
    attempts = _attempts(AddressRotation(2), timeout=1.0)
    attempts.after_failure(_refused("unknown"), now=0.0)
    with pytest.raises(errors.ResourceExhausted) as last:
        attempts.after_failure(_overloaded(retry_after=5.0), now=0.0)
    assert last.value.outcome == "unknown"


# --- the KV.Session stream's pure parts ----------------------------------------


@pytest.mark.parametrize(("seconds", "ms"), [(0.2, 200), (0.0001, 1), (1e-9, 1),
                                              (0.2004, 201), (1e12, 2**32 - 1)])
def test_an_operation_carries_its_deadline_in_whole_milliseconds_never_zero(
        seconds: float, ms: int) -> None:
    op = requests.session_operation("Get", requests.get_request(b"k", None), 7, seconds)
    assert (op.id, op.timeout_ms, op.WhichOneof("kind"), op.get.key) == (7, ms, "get", b"k")


def test_every_method_has_its_operation_kind() -> None:
    kinds = kv_pb2.SessionOperation.DESCRIPTOR.oneofs_by_name["kind"].fields
    assert sorted(requests.SESSION_KIND.values()) == sorted(f.name for f in kinds)


def test_a_result_is_the_calls_response_or_raises_its_typed_error() -> None:
    answer = kv_pb2.SessionResult(id=1, put=kv_pb2.PutResponse(context=b"c"))
    assert requests.session_response("Put", answer).context == b"c"
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="1 did")
    status.details.add().Pack(error_details_pb2.ErrorInfo(
        reason="QUORUM_NOT_REACHED", metadata={"outcome": "unknown"}))
    with pytest.raises(errors.Unavailable, match="1 did") as caught:
        requests.session_response("Put", kv_pb2.SessionResult(id=1, error=status))
    assert (caught.value.reason, caught.value.outcome) == ("QUORUM_NOT_REACHED", "unknown")
    with pytest.raises(errors.Internal, match="Get operation with put"):
        requests.session_response("Get", answer)


def test_messages_are_packed_within_their_budget_and_a_large_item_goes_alone() -> None:
    small = [kv_pb2.PingRequest(payload=b"x" * 89) for _ in range(10)]  # 91 bytes each
    large = kv_pb2.PingRequest(payload=b"y" * 1000)
    runs = list(framing.pack([*small[:5], large, *small[5:]], budget=350))
    assert [len(run) for run in runs] == [3, 2, 1, 3, 2]
    assert runs[2] == [large]
    assert list(framing.pack([])) == []


def test_messages_are_packed_within_their_count_of_items_too() -> None:
    pings = [kv_pb2.PingRequest(payload=b"%d" % i) for i in range(10)]
    runs = list(framing.pack(pings, budget=1 << 20, max_items=4))
    assert [len(run) for run in runs] == [4, 4, 2]
    assert [item for run in runs for item in run] == pings


# --- results and the sibling rule ------------------------------------------


def _get_response(*siblings: bytes) -> kv_pb2.GetResponse:
    return kv_pb2.GetResponse(found=bool(siblings), siblings=list(siblings), context=b"ctx",
                              timestamp=7 if siblings else 0)


def test_absent_key_has_no_value_and_no_siblings() -> None:
    result = requests.get_result(_get_response(), None)
    assert result == GetResult(value=None, siblings=[], context=b"ctx", timestamp=0, found=False)


def test_one_sibling_is_the_value_and_the_resolver_is_not_asked() -> None:
    def never(_: list[bytes]) -> bytes:
        raise AssertionError("no resolution needed")

    result = requests.get_result(_get_response(b"only"), never)
    assert result.value == b"only" and result.siblings == [b"only"] and result.found
    assert result.timestamp == 7


def test_several_siblings_without_resolver_give_the_newest() -> None:
    result = requests.get_result(_get_response(b"old", b"mid", b"new"), None)
    assert result.value == b"new" and result.siblings == [b"old", b"mid", b"new"]


def test_several_siblings_with_resolver_give_its_answer() -> None:
    asked: list[list[bytes]] = []

    def longest(siblings: list[bytes]) -> bytes:
        asked.append(list(siblings))
        siblings.clear()  # must not damage the result's siblings
        return b"merged"

    result = requests.get_result(_get_response(b"a", b"bb"), longest)
    assert result.value == b"merged" and result.siblings == [b"a", b"bb"]
    assert asked == [[b"a", b"bb"]]


def test_resolver_must_return_bytes() -> None:
    with pytest.raises(TypeError, match="resolver must return bytes"):
        choose_value([b"a", b"b"], lambda s: "text")  # type: ignore[arg-type,return-value]
    as_bytearray = lambda s: bytearray(b"ab")  # noqa: E731
    assert choose_value([b"a", b"b"], as_bytearray) == b"ab"  # type: ignore[arg-type]


def test_results_are_frozen() -> None:
    result = requests.put_result(kv_pb2.PutResponse(context=b"c", timestamp=3))
    assert (result.context, result.timestamp) == (b"c", 3)
    with pytest.raises(AttributeError):
        result.context = b"x"  # type: ignore[misc]


# --- argument checking ------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda c: c.get(1),
    lambda c: c.put(b"k", 2.5),
    lambda c: c.put(1, b"v"),
    lambda c: c.put(b"k", b"v", context="ctx"),  # a context is opaque bytes, never text
    lambda c: c.delete(None),
    lambda c: c.get_many([b"a", None]),
    lambda c: c.get_many(b"ab"),
    lambda c: c.get_many("ab"),
    lambda c: c.put_many({1: b"v"}),
    lambda c: c.put_many([(b"k",)]),
    lambda c: c.put_many([b"kv"]),
    lambda c: c.ping(7),
])
def test_arguments_of_other_types_raise_type_error(call) -> None:  # type: ignore[no-untyped-def]
    with kvclient.Client(NOWHERE) as client, pytest.raises(TypeError, match="bytes|tuple|iterable"):
        call(client)


def test_str_keys_values_and_payloads_are_sent_as_utf8() -> None:
    request = requests.put_request("clé", "välue ✓", context=None, w=None, request_id=b"i" * 16)
    assert (request.key, request.value) == ("clé".encode(), "välue ✓".encode())
    assert requests.get_request("clé", r=None).key == "clé".encode()
    assert requests.get_many_request(["a", b"b"], r=None).keys == [b"a", b"b"]
    from_dict = requests.put_many_request({"x": "1"}, w=None)
    assert [(p.key, p.value) for p in from_dict.puts] == [(b"x", b"1")]
    assert requests.ping_request("hi").payload == b"hi"
    with pytest.raises(ValueError, match="key is a str that UTF-8 cannot encode"):
        requests.get_request("\ud800", r=None)


def test_delete_many_makes_one_request_per_key_each_with_its_own_id() -> None:
    ids = iter(bytes([n]) * 16 for n in range(10))
    deletes = requests.delete_many_requests([b"a", "b"], w="all", random_bytes=lambda n: next(ids))
    assert [(d.key, d.context) for d in deletes] == [(b"a", b""), (b"b", b"")]
    assert [d.request_id for d in deletes] == [bytes([n]) * 16 for n in range(2)]
    assert all(d.w.level == kv_pb2.Consistency.ALL for d in deletes)
    with pytest.raises(TypeError, match="not a single key"):
        requests.delete_many_requests(b"ab", w=None)


def test_a_batch_of_calls_raises_its_first_failed_item_with_its_fields() -> None:
    failed = errors.Unavailable("1 did, 2 failed", reason="QUORUM_NOT_REACHED",
                                metadata={"outcome": "unknown"})
    assert requests.batch_results([b"a"], ["ok"]) == ["ok"]
    with pytest.raises(errors.Unavailable, match=r"batch item 1 \(key b'b'\) failed: 1 did") as e:
        requests.batch_results([b"a", b"b", b"c"], ["ok", failed, errors.Internal("later")])
    assert e.value.reason == "QUORUM_NOT_REACHED" and e.value.outcome == "unknown"


def test_bytes_like_arguments_are_converted() -> None:
    request = requests.put_request(bytearray(b"k"), memoryview(b"v"), context=bytearray(b"c"),
                                   w="all", request_id=b"i" * 16)
    assert (request.key, request.value, request.context) == (b"k", b"v", b"c")


def test_put_many_takes_dicts_pairs_and_triples_each_with_its_own_id() -> None:
    ids = iter(bytes([n]) * 16 for n in range(10))
    request = requests.put_many_request([(b"a", b"1"), (b"b", b"2", b"ctx"), (b"c", b"3", None)],
                                        w=2, random_bytes=lambda n: next(ids))
    assert [(p.key, p.value, p.context) for p in request.puts] == [
        (b"a", b"1", b""), (b"b", b"2", b"ctx"), (b"c", b"3", b"")]
    assert [p.request_id for p in request.puts] == [bytes([n]) * 16 for n in range(3)]
    assert request.w.count == 2 and not any(p.HasField("w") for p in request.puts)
    from_dict = requests.put_many_request({b"x": b"1", b"y": b"2"}, w=None)
    assert [(p.key, p.value) for p in from_dict.puts] == [(b"x", b"1"), (b"y", b"2")]
    assert len({p.request_id for p in from_dict.puts}) == 2


def test_request_ids_are_16_random_bytes() -> None:
    ids = {requests.new_request_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 16 for i in ids)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan")])
def test_timeouts_must_be_positive(bad: float) -> None:
    with pytest.raises(errors.InvalidArgument, match="timeout must be > 0"):
        check_timeout(bad)
    with kvclient.Client(NOWHERE) as client, pytest.raises(errors.InvalidArgument):
        client.get_many([], timeout=bad)
    with pytest.raises(errors.InvalidArgument):
        kvclient.Client(NOWHERE, timeout=bad)


def test_timeout_must_be_a_number() -> None:
    with pytest.raises(TypeError):
        check_timeout("1")  # type: ignore[arg-type]


def test_addresses_are_one_string_or_a_non_empty_list() -> None:
    assert parse_addresses("h:1") == ("h:1",)
    assert parse_addresses(["h:1", "h:2"]) == ("h:1", "h:2")
    with pytest.raises(errors.InvalidArgument):
        parse_addresses([])
    with pytest.raises(TypeError):
        parse_addresses([b"h:1"])  # type: ignore[list-item]


def test_message_limit_reaches_the_channel_options() -> None:
    config = ClientConfig.create(NOWHERE, timeout=1.0, max_attempts=1, backoff_base=0.0,
                                 backoff_cap=0.0, resolver=None, max_message_bytes=1024)
    options = dict(channel_options(config.max_message_bytes))
    assert options["grpc.max_send_message_length"] == 1024
    assert options["grpc.max_receive_message_length"] == 1024
    assert options["grpc.max_reconnect_backoff_ms"] <= 1000  # a restarted server is found again


def test_the_bounds_of_a_stream_message_are_checked() -> None:
    def create(**bounds: Any) -> ClientConfig:
        return ClientConfig.create(NOWHERE, timeout=1.0, max_attempts=1, backoff_base=0.0,
                                   backoff_cap=0.0, resolver=None, max_message_bytes=1024,
                                   **bounds)

    assert create().message_batch_bytes == framing.MESSAGE_BUDGET_BYTES
    assert create(message_batch_operations=8).message_batch_operations == 8
    with pytest.raises(errors.InvalidArgument, match="message_batch_bytes"):
        create(message_batch_bytes=0)
    with pytest.raises(TypeError, match="message_batch_operations"):
        create(message_batch_operations=2.5)
    with pytest.raises(errors.InvalidArgument, match="message_batch_bytes"):
        kvclient.Client(NOWHERE, message_batch_bytes=-1)


def test_batch_responses_of_the_wrong_length_are_internal_errors() -> None:
    request = requests.get_many_request([b"a", b"b"], None)
    with pytest.raises(errors.Internal, match="1 items for a batch of 2"):
        requests.get_many_results(request, kv_pb2.GetManyResponse(items=[{}]), None)


def test_failed_batch_item_names_index_and_key() -> None:
    request = requests.put_many_request([(b"ok", b"1"), (b"k" * 500, b"2")], w=None)
    response = kv_pb2.PutManyResponse(items=[
        {"status": {}}, {"status": {"code": grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                                    "message": "store is full"}}])
    with pytest.raises(errors.ResourceExhausted) as caught:
        requests.put_many_results(request, response)
    assert caught.value.details.startswith("batch item 1 (key b'kkkk")
    assert caught.value.details.endswith("...) failed: store is full")
    assert len(caught.value.details) < 120


def test_closed_client_refuses_calls() -> None:
    client = kvclient.Client(NOWHERE)
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.ping()
