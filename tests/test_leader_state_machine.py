"""Leader mode's state machine (`kvstore.leader.state_machine`), the bytes of
its commands (`commands`) and of its snapshots (`images`): versions are log
indexes, compare-and-set on them, request ids applied once, the applied
index that makes a second delivery harmless, and data in a format this
node does not know refused with a message that says so."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import DataLoss, InvalidArgument
from kvstore.leader import commands, images
from kvstore.leader.commands import Delete, Put
from kvstore.leader.data_format import FORMAT, UnsupportedFormat
from kvstore.leader.memory_store import _Group, _Partition
from kvstore.leader.state_machine import (
    FORGET_PER_APPLY, Outcome, PartitionImage, RequestRecord, Status, Versioned, apply,
    export, restore,
)
from tests.properties import properties

pytestmark = pytest.mark.timeout(60)


def fresh() -> _Partition:
    return _Partition(_Group())


class Log:
    """Applies commands at consecutive indexes, as committed entries would."""

    def __init__(self, ttl_ms: int = 600_000) -> None:
        self.state = fresh()
        self.index = 0
        self.ttl_ms = ttl_ms

    def __call__(self, command: commands.Command | None) -> Outcome | None:
        self.index += 1
        return apply(self.state, self.index, command, request_id_ttl_ms=self.ttl_ms)


def put(key: bytes, value: bytes, rid: bytes, *, if_version: int | None = None,
        ms: int = 0) -> Put:
    return Put(key, value, rid, proposed_ms=ms, if_version=if_version)


def delete(key: bytes, rid: bytes, *, if_version: int | None = None, ms: int = 0) -> Delete:
    return Delete(key, rid, proposed_ms=ms, if_version=if_version)


# -- versions and compare-and-set -----------------------------------------------------------------


def test_a_keys_version_is_the_index_of_its_last_write() -> None:
    log = Log()
    log(None)  # the leader's no-op at 1
    assert log(put(b"k", b"v1", b"r1")) == Outcome(Status.APPLIED, 2, 2)
    log(put(b"other", b"x", b"r2"))
    assert log(put(b"k", b"v2", b"r3")) == Outcome(Status.APPLIED, 4, 4)
    assert log.state.get(b"k") == Versioned(4, b"v2")
    assert log.state.get(b"other") == Versioned(3, b"x")


def test_a_delete_leaves_the_key_absent_with_version_zero() -> None:
    log = Log()
    log(put(b"k", b"v", b"r1"))
    assert log(delete(b"k", b"r2")) == Outcome(Status.APPLIED, 0, 2)
    assert log.state.get(b"k") is None
    assert log(delete(b"never", b"r3")) == Outcome(Status.APPLIED, 0, 3)


def test_if_version_applies_only_when_the_version_matches() -> None:
    log = Log()
    log(put(b"k", b"v1", b"r1"))
    assert log(put(b"k", b"v2", b"r2", if_version=7)) == Outcome(Status.VERSION_MISMATCH, 1, 2)
    assert log.state.get(b"k") == Versioned(1, b"v1")
    assert log(put(b"k", b"v2", b"r3", if_version=1)) == Outcome(Status.APPLIED, 3, 3)
    assert log(delete(b"k", b"r4", if_version=1)) == Outcome(Status.VERSION_MISMATCH, 3, 4)
    assert log(delete(b"k", b"r5", if_version=3)) == Outcome(Status.APPLIED, 0, 5)


def test_if_version_zero_means_only_if_absent() -> None:
    log = Log()
    assert log(put(b"k", b"v1", b"r1", if_version=0)) == Outcome(Status.APPLIED, 1, 1)
    assert log(put(b"k", b"v2", b"r2", if_version=0)) == Outcome(Status.VERSION_MISMATCH, 1, 2)
    log(delete(b"k", b"r3"))
    assert log(put(b"k", b"v3", b"r4", if_version=0)) == Outcome(Status.APPLIED, 4, 4)


# -- request ids ----------------------------------------------------------------------------------


def test_a_retried_write_applies_once_and_gets_the_first_outcome() -> None:
    log = Log()
    first = log(put(b"k", b"v1", b"same"))
    log(put(b"k", b"v2", b"other"))
    retry = log(put(b"k", b"v1", b"same"))
    assert retry == Outcome(Status.APPLIED, 1, 1, duplicate=True) and first is not None
    assert log.state.get(b"k") == Versioned(2, b"v2")  # the retry did not write again


def test_a_retried_compare_and_set_keeps_its_first_answer() -> None:
    log = Log()
    log(put(b"k", b"v1", b"r1"))
    assert log(put(b"k", b"x", b"cas", if_version=5)).status is Status.VERSION_MISMATCH
    for _ in range(4):
        log(None)
    # The key is still at version 1, but the retry is the same request: same answer.
    assert log(put(b"k", b"x", b"cas", if_version=5)) == Outcome(
        Status.VERSION_MISMATCH, 1, 2, duplicate=True)
    # Even a retry that would match now: it is the request that failed.
    assert log(delete(b"k", b"cas", if_version=1)).duplicate


def test_request_ids_are_forgotten_once_expired_by_the_log_s_own_clock() -> None:
    log = Log(ttl_ms=1000)
    log(put(b"k", b"v1", b"r1", ms=0))
    assert log(put(b"k", b"v2", b"r1", ms=999)).duplicate
    again = log(put(b"k", b"v3", b"r1", ms=1000))
    assert again == Outcome(Status.APPLIED, 3, 3)  # expired: a new request with an old id


def test_expired_ids_are_forgotten_a_few_per_apply_oldest_first() -> None:
    log = Log(ttl_ms=100)
    for n in range(20):
        log(put(b"k", b"v", b"old-%d" % n, ms=n))
    log(put(b"k", b"v", b"new", ms=1000))
    remembered = sorted(rid for rid, _ in log.state.requests())
    assert len(remembered) == 21 - FORGET_PER_APPLY
    assert [b"old-%d" % n for n in range(FORGET_PER_APPLY)] == sorted(
        set(b"old-%d" % n for n in range(20)) - set(remembered))


# -- the applied index ----------------------------------------------------------------------------


def test_entries_at_or_below_the_applied_index_are_not_applied_again() -> None:
    log = Log()
    log(put(b"k", b"v1", b"r1"))
    log(put(b"k", b"v2", b"r2"))
    assert apply(log.state, 1, put(b"k", b"v1", b"r1")) is None
    assert apply(log.state, 2, put(b"k", b"v2", b"r2")) is None
    assert log.state.get(b"k") == Versioned(2, b"v2") and log.state.applied_index() == 2


def test_a_gap_in_the_entries_is_refused_rather_than_skipped() -> None:
    state = fresh()
    with pytest.raises(ValueError, match="skipped"):
        apply(state, 2, put(b"k", b"v", b"r"))


def test_no_ops_move_the_applied_index() -> None:
    log = Log()
    assert log(None) is None and log(None) is None
    assert log.state.applied_index() == 2


# -- snapshots ------------------------------------------------------------------------------------


def test_export_and_restore_carry_keys_ids_and_the_applied_index() -> None:
    log = Log()
    log(put(b"a", b"1", b"r1"))
    log(put(b"b", b"2", b"r2", if_version=3))
    log(delete(b"c", b"r3"))
    image = export(log.state)
    other = fresh()
    other.put(b"stale", Versioned(9, b"x"))
    restore(other, images.decode(images.encode(image)))
    assert export(other) == image
    assert other.get(b"stale") is None and other.applied_index() == 3
    assert apply(other, 4, put(b"a", b"again", b"r1")).duplicate


def test_a_damaged_image_is_refused() -> None:
    data = bytearray(images.encode(PartitionImage(5, ((b"k", Versioned(5, b"v")),))))
    data[12] ^= 0x01
    with pytest.raises(DataLoss, match="checksum"):
        images.decode(bytes(data))
    with pytest.raises(DataLoss, match="truncated"):
        images.decode(bytes(data[:6]))


def test_an_image_in_an_unknown_format_is_refused_with_a_message() -> None:
    data = bytes([FORMAT + 1]) + images.encode(PartitionImage(1))[1:]
    with pytest.raises(UnsupportedFormat, match=f"format {FORMAT + 1}.*reads format {FORMAT}"):
        images.decode(data)


# -- commands -------------------------------------------------------------------------------------

keys = st.binary(min_size=1, max_size=40)
request_ids = st.binary(min_size=1, max_size=commands.MAX_REQUEST_ID_BYTES)
versions = st.none() | st.integers(0, (1 << 64) - 1)
millis = st.integers(0, (1 << 64) - 1)
any_command = st.one_of(
    st.builds(Put, keys, st.binary(max_size=100), request_ids, millis, versions),
    st.builds(Delete, keys, request_ids, millis, versions))


@properties(300)
@given(any_command)
def test_commands_round_trip(command: commands.Command) -> None:
    assert commands.decode(commands.encode(command)) == command


@properties(300)
@given(st.binary(max_size=60))
def test_any_bytes_decode_to_a_command_or_a_clear_error(data: bytes) -> None:
    try:
        commands.decode(data)
    except (DataLoss, UnsupportedFormat) as exc:
        assert str(exc)


@properties(200)
@given(st.builds(PartitionImage, st.integers(0, 1 << 40),
                 st.lists(st.tuples(keys, st.builds(Versioned, st.integers(0, 1 << 40),
                                                    st.binary(max_size=30))),
                          max_size=5).map(tuple),
                 st.lists(st.tuples(request_ids, st.builds(
                     RequestRecord, st.builds(Outcome, st.sampled_from(Status),
                                              st.integers(0, 1 << 40), st.integers(0, 1 << 40)),
                     millis)), max_size=5).map(tuple)))
def test_images_round_trip(image: PartitionImage) -> None:
    assert images.decode(images.encode(image)) == image


def test_a_log_entry_in_an_unknown_format_is_refused_with_a_message() -> None:
    data = bytes([FORMAT + 1]) + commands.encode(put(b"k", b"v", b"r"))[1:]
    with pytest.raises(UnsupportedFormat, match="a log entry is in format 2.*newer kvstore"):
        commands.decode(data)


def test_damaged_commands_are_refused_not_guessed() -> None:
    data = commands.encode(delete(b"key", b"rid"))
    with pytest.raises(DataLoss, match="a delete carries a value"):
        commands.decode(data + b"x")
    with pytest.raises(DataLoss, match="corrupt"):
        commands.decode(data[:-1])
    with pytest.raises(DataLoss, match="truncated"):
        commands.decode(data[:5])


def test_commands_without_a_key_or_request_id_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="key is empty"):
        Put(b"", b"v", b"r")
    with pytest.raises(InvalidArgument, match="request id"):
        Delete(b"k", b"")
    with pytest.raises(InvalidArgument, match="if_version"):
        Put(b"k", b"v", b"r", if_version=-1)
