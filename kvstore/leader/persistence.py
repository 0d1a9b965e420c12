"""What one persist pass writes, in what order, and the seam of the stores
that write it (`RaftStore`: LMDB in `lmdb_store`, memory in `memory_store`).

A pass is one transaction and (when anything asks for it) one fsync for
every group of a node that has work: each group's Ready (hard state,
entries, a snapshot from the leader), its committed entries applied to the
state machine with the applied index beside the data, and any compaction
the host asked for. `write_pass` is that transaction's logic, the same for
every store, over the primitive operations of `PassTransaction`.

Per group, in this order:
1. decode every command and image the group's write carries, before
   writing anything of it: one that cannot be read (a format this node does
   not know, damage) fails the group alone (`GroupApplied.failure`), which
   then writes nothing and stops (the host halts it) while the other
   groups' writes go on;
2. compaction: a snapshot of the state machine as it stands (the applied
   index of the previous pass) and the log dropped up to `keep` entries
   before it;
3. a snapshot from the leader: it replaces the log and the state machine;
4. entries (replacing the log from the first one's index on) and the hard
   state;
5. the committed entries, applied in order; each one's applied index goes
   with its data, and one at or below the stored applied index is skipped.

Pure: storage is behind `PassTransaction`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvstore.errors import KVStoreError
from kvstore.leader import commands, images
from kvstore.leader.commands import Command
from kvstore.leader.raft.messages import Entry, HardState, Snapshot
from kvstore.leader.state_machine import (
    REQUEST_ID_TTL_MS, Outcome, PartitionImage, PartitionState, RequestRecord, Versioned, apply,
    export, restore,
)


@dataclass(frozen=True)
class GroupWrite:
    group: int
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None  # the leader's: replaces log and state
    committed: tuple[Entry, ...] = ()  # to apply, in order
    # Snapshot the state machine and drop the log before it, but for this many entries.
    compact_keeping: int | None = None


@dataclass(frozen=True)
class PassWrite:
    groups: tuple[GroupWrite, ...]
    sync: bool  # a term, vote or log changed: fsync before anything depends on it


@dataclass(frozen=True)
class GroupApplied:
    group: int
    outcomes: tuple[tuple[int, Outcome], ...] = ()  # (entry index, outcome) per command applied
    applied: int = 0
    snapshot: tuple[int, int] | None = None  # (index, term) of a snapshot this pass took
    compacted: tuple[int, int] | None = None  # (index, term): the log now starts after it
    failure: str | None = None  # the group's data could not be read: nothing of it was written


@dataclass(frozen=True)
class PassResult:
    groups: Mapping[int, GroupApplied] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadedGroup:
    """What a store holds of a group when it opens (all zero: nothing)."""

    hard_state: HardState = HardState()
    snapshot_index: int = 0
    snapshot_term: int = 0
    compacted_index: int = 0  # the last entry dropped: the log starts after it
    compacted_term: int = 0
    last_index: int = 0
    applied: int = 0  # the state machine's, stored with its data
    tail: tuple[Entry, ...] = ()  # the last entries, ending at last_index


class StoredLog(Protocol):
    """Reads of a store's committed Raft state."""

    def read_entries(self, group: int, low: int, high: int,
                     max_bytes: int | None) -> list[Entry]:
        """Entries low..high-1 of `group`, all on the store, within
        `max_bytes` of payload but at least one."""
        ...

    def read_snapshot(self, group: int) -> Snapshot:
        """The group's latest snapshot, data included."""
        ...


class RaftStore(StoredLog, Protocol):
    """A node's Raft groups and their state machines, durable."""

    def load(self, group: int, tail_entries: int) -> LoadedGroup: ...

    def read(self, group: int, key: bytes) -> Versioned | None:
        """A key's committed value and version (None: absent)."""
        ...

    def find_request(self, group: int, request_id: bytes) -> RequestRecord | None:
        """The outcome remembered for a request id, if any."""
        ...

    def write(self, batch: PassWrite) -> PassResult:
        """Do the pass in one transaction, durable (fsynced when
        `batch.sync`) on return; all of it or, on an exception, none."""
        ...


class PassTransaction(Protocol):
    """The primitive operations of one pass's transaction."""

    def partition(self, group: int) -> PartitionState: ...

    def term(self, group: int, index: int) -> int:
        """An entry's term; or the last compacted entry's."""
        ...

    def compacted_index(self, group: int) -> int: ...

    def snapshot_index(self, group: int) -> int: ...

    def put_entries(self, group: int, entries: Sequence[Entry]) -> None:
        """Append, replacing every entry from the first one's index on."""
        ...

    def drop_entries(self, group: int, through: int, term: int) -> None:
        """Compact: drop the entries up to `through` (whose term was `term`)."""
        ...

    def reset_log(self, group: int, snapshot: Snapshot) -> None:
        """Drop every entry and store `snapshot`: the log starts after it."""
        ...

    def put_snapshot(self, group: int, snapshot: Snapshot) -> None: ...

    def put_hard_state(self, group: int, state: HardState) -> None: ...


def write_pass(txn: PassTransaction, batch: PassWrite, *,
               request_id_ttl_ms: int = REQUEST_ID_TTL_MS) -> PassResult:
    return PassResult({write.group: write_group(txn, write, request_id_ttl_ms)
                       for write in batch.groups})


def write_group(txn: PassTransaction, write: GroupWrite, request_id_ttl_ms: int) -> GroupApplied:
    group = write.group
    try:
        decoded = _decode(write)
    except _Unreadable as exc:
        return GroupApplied(group, failure=str(exc))
    state = txn.partition(group)
    taken = compacted = None
    if write.compact_keeping is not None and write.snapshot is None:
        taken, compacted = _compact(txn, group, state, write.compact_keeping)
    if write.snapshot is not None:
        txn.reset_log(group, write.snapshot)
        assert decoded.image is not None
        restore(state, decoded.image)
    if write.entries:
        txn.put_entries(group, write.entries)
    if write.hard_state is not None:
        txn.put_hard_state(group, write.hard_state)
    outcomes = []
    for entry, command in zip(write.committed, decoded.commands):
        outcome = apply(state, entry.index, command, request_id_ttl_ms=request_id_ttl_ms)
        if outcome is not None:
            outcomes.append((entry.index, outcome))
    return GroupApplied(group, tuple(outcomes), state.applied_index(), taken, compacted)


class _Unreadable(Exception):
    pass


@dataclass(frozen=True)
class _Decoded:
    commands: list[Command | None]
    image: PartitionImage | None


def _decode(write: GroupWrite) -> _Decoded:
    decoded: list[Command | None] = []
    for entry in write.committed:
        try:
            decoded.append(commands.decode(entry.data) if entry.data else None)
        except KVStoreError as exc:
            raise _Unreadable(f"partition {write.group}, entry {entry.index}: {exc}") from exc
    image = None
    if write.snapshot is not None:
        index = write.snapshot.index
        try:
            image = images.decode(write.snapshot.data)
        except KVStoreError as exc:
            raise _Unreadable(f"partition {write.group}, snapshot at {index}: {exc}") from exc
        if image.applied != index:
            raise _Unreadable(f"partition {write.group}: the snapshot at {index} holds the "
                              f"state as of index {image.applied}")
    return _Decoded(decoded, image)


def _compact(txn: PassTransaction, group: int, state: PartitionState,
             keep: int) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    applied = state.applied_index()
    taken = None
    if applied > txn.snapshot_index(group):
        term = txn.term(group, applied)
        txn.put_snapshot(group, Snapshot(applied, term, images.encode(export(state))))
        taken = (applied, term)
    through = min(applied, txn.snapshot_index(group)) - keep
    if through <= txn.compacted_index(group):
        return taken, None
    term = txn.term(group, through)
    txn.drop_entries(group, through, term)
    return taken, (through, term)
