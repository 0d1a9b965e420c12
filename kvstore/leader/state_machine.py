"""Leader mode's state machine: what applying a committed command does to
one partition's keys, and the outcome its proposer is told.

- A key's version is the log index of its last write in its partition's
  log; 0 means absent. A put makes the key's version the index of its
  entry; a delete removes the key (version 0).
- `if_version` is compare-and-set: the write applies only if the key's
  version is exactly that (0: only if absent); else nothing changes and
  the outcome is VERSION_MISMATCH with the key's current version.
- Every command's request id is remembered with its outcome, so a retry
  (the same request proposed again, as a new entry, because the client did
  not learn the first outcome) gets the first outcome back, marked
  `duplicate`, and changes nothing: a retried non-idempotent write applies
  once. Ids are forgotten `request_id_ttl_ms` after their proposal, by the
  clock reading the leader put in the entry, a few per apply, oldest first:
  so every replica forgets the same ids at the same point of the log.
- The applied index moves with every entry, no-ops included, in the same
  transaction as the data (the `PartitionState` is one transaction's view);
  an entry at or below it was applied already and is skipped, so a restart
  that hands an entry out again never applies it twice.

Snapshots: `export` and `restore` turn a partition's whole state (keys,
remembered ids, applied index) into a `PartitionImage` and back; its bytes
are `images`'.

Pure: the storage is behind `PartitionState`; no I/O, no clock.
"""

from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol

from kvstore.leader.commands import Command, Put

REQUEST_ID_TTL_MS = 600_000  # as long as the leaderless engine's request-id memory
# Ids forgotten per apply at the most: bounded work per entry, and still
# faster than ids arrive (one per command), so the backlog never grows.
FORGET_PER_APPLY = 4


class Status(Enum):
    APPLIED = "applied"
    VERSION_MISMATCH = "version_mismatch"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command did. APPLIED: `version` is the key's version after it
    (a put's is `index`; after a delete, 0). VERSION_MISMATCH: nothing
    changed; `version` is the key's current version. `index` is the entry
    that carried the command (for a duplicate: the first one's)."""

    status: Status
    version: int
    index: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Versioned:
    """A key's value and version as stored."""

    version: int
    value: bytes


@dataclass(frozen=True, slots=True)
class RequestRecord:
    outcome: Outcome
    proposed_ms: int


class PartitionState(Protocol):
    """One partition's state inside one write transaction."""

    def applied_index(self) -> int: ...

    def set_applied_index(self, index: int) -> None: ...

    def get(self, key: bytes) -> Versioned | None: ...

    def put(self, key: bytes, state: Versioned) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def request(self, request_id: bytes) -> RequestRecord | None: ...

    def remember(self, request_id: bytes, record: RequestRecord) -> None: ...

    def forget_requests(self, up_to_ms: int, limit: int) -> None:
        """Forget at most `limit` ids proposed at or before `up_to_ms`, in
        (proposed_ms, request id) order: the same ids on every replica."""
        ...

    def items(self) -> Iterator[tuple[bytes, Versioned]]: ...

    def requests(self) -> Iterator[tuple[bytes, RequestRecord]]: ...

    def clear(self) -> None:
        """Drop every key and remembered id (the applied index stays)."""
        ...


def apply(state: PartitionState, index: int, command: Command | None, *,
          request_id_ttl_ms: int = REQUEST_ID_TTL_MS) -> Outcome | None:
    """Apply the committed entry at `index` (`command` None: the no-op).
    None when there is no outcome: a no-op, or an entry applied before."""
    applied = state.applied_index()
    if index <= applied:
        return None
    if index != applied + 1:
        raise ValueError(f"entry {index} handed to a state machine that applied {applied}: "
                         "the entries between would be skipped")
    state.set_applied_index(index)
    if command is None:
        return None
    horizon = command.proposed_ms - request_id_ttl_ms
    state.forget_requests(horizon, FORGET_PER_APPLY)
    earlier = state.request(command.request_id)
    if earlier is not None and earlier.proposed_ms > horizon:
        return replace(earlier.outcome, duplicate=True)
    outcome = _write(state, index, command)
    state.remember(command.request_id, RequestRecord(outcome, command.proposed_ms))
    return outcome


def _write(state: PartitionState, index: int, command: Command) -> Outcome:
    current = state.get(command.key)
    version = 0 if current is None else current.version
    if command.if_version is not None and command.if_version != version:
        return Outcome(Status.VERSION_MISMATCH, version, index)
    if isinstance(command, Put):
        state.put(command.key, Versioned(index, command.value))
        return Outcome(Status.APPLIED, index, index)
    if current is not None:
        state.delete(command.key)
    return Outcome(Status.APPLIED, 0, index)


# -- snapshots ----------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionImage:
    """A partition's whole state as of `applied`: what a snapshot carries."""

    applied: int
    keys: tuple[tuple[bytes, Versioned], ...] = ()
    requests: tuple[tuple[bytes, RequestRecord], ...] = ()


def export(state: PartitionState) -> PartitionImage:
    return PartitionImage(state.applied_index(), tuple(state.items()), tuple(state.requests()))


def restore(state: PartitionState, image: PartitionImage) -> None:
    """Replace the partition's state with the image's (a snapshot from the
    leader: the entries it covers are applied by it, not one by one)."""
    state.clear()
    for key, versioned in image.keys:
        state.put(key, versioned)
    for request_id, record in image.requests:
        state.remember(request_id, record)
    state.set_applied_index(image.applied)
