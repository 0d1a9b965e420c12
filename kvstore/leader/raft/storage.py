"""The stable log seam: what the Raft core reads of what the application has
persisted (`LogStorage`), and an in-memory implementation of it for the tests
and the simulation (`MemoryLogStorage`).

The core only reads storage; the application writes it, from each `Ready`
(hard state, entries, snapshot) before calling `advance`, and compacts it
after it takes a snapshot. The log on storage is the entries
`first_index()..last_index()`; the entries before were compacted away,
behind the latest snapshot (which may be newer than the last entry
compacted, when the application keeps a few entries for slow followers).
The term of the last entry compacted stays known: `term(first_index() - 1)`.

The core asks only within those bounds (it checks them itself), so an
implementation need not raise for out-of-range questions. Pure: no I/O.
"""

from collections.abc import Sequence
from typing import Protocol

from kvstore.leader.raft.messages import Entry, HardState, Snapshot


class LogStorage(Protocol):
    def hard_state(self) -> HardState:
        """The last hard state persisted (the zero one if none)."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (index 0 if none was ever taken or received)."""
        ...

    def first_index(self) -> int:
        """The index of the first entry kept: the snapshot's index + 1."""
        ...

    def last_index(self) -> int:
        """The index of the last entry; first_index() - 1 when there is none."""
        ...

    def term(self, index: int) -> int:
        """The term of the entry at `index`, first_index() - 1 <= index <= last_index()."""
        ...

    def entries(self, low: int, high: int, max_bytes: int | None) -> list[Entry]:
        """Entries low..high-1 (first_index() <= low < high <= last_index() + 1),
        stopping before the one that would take the payload past `max_bytes`,
        but never returning none."""
        ...


class MemoryLogStorage:
    """A `LogStorage` held in memory, with the writes the application makes.

    It survives a simulated crash of the node that owns it: a restart builds
    a new core on the same object, which then holds exactly what was
    persisted before the crash."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        # The last entry compacted away (the snapshot's, or an older one while
        # a new snapshot's entries are still kept): it stands before the first.
        self._compacted_index = 0
        self._compacted_term = 0
        self._entries: list[Entry] = []  # _entries[0].index == _compacted_index + 1

    # -- LogStorage --------------------------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def first_index(self) -> int:
        return self._compacted_index + 1

    def last_index(self) -> int:
        return self._compacted_index + len(self._entries)

    def term(self, index: int) -> int:
        if index == self._compacted_index:
            return self._compacted_term
        self._check(index, index + 1)
        return self._entries[index - self.first_index()].term

    def entries(self, low: int, high: int, max_bytes: int | None) -> list[Entry]:
        self._check(low, high)
        offset = self.first_index()
        return limit_size(self._entries[low - offset:high - offset], max_bytes)

    # -- what the application does ----------------------------------------

    def set_hard_state(self, state: HardState) -> None:
        self._hard_state = state

    def append(self, entries: Sequence[Entry]) -> None:
        """Add entries from a Ready: any entries from the first one's index on
        are replaced (a new leader overwrote an uncommitted tail)."""
        if not entries:
            return
        first = entries[0].index
        if not self.first_index() <= first <= self.last_index() + 1:
            raise ValueError(f"entries from {first} leave a gap after "
                             f"{self.first_index()}..{self.last_index()}")
        del self._entries[first - self.first_index():]
        self._entries.extend(entries)

    def truncate_after(self, index: int) -> None:
        """Drop the entries after `index` (a restore's fence cuts an
        uncommitted tail the backup held: `restore_fence`)."""
        if not self._compacted_index <= index:
            raise ValueError(f"cannot cut the log at {index}: compacted to "
                             f"{self._compacted_index}")
        del self._entries[index - self._compacted_index:]

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        if snapshot.index <= self._snapshot.index:
            raise ValueError(f"snapshot at {snapshot.index} is not newer than the one "
                             f"held ({self._snapshot.index})")
        self._snapshot = snapshot
        self._compacted_index, self._compacted_term = snapshot.index, snapshot.term
        self._entries = []

    def create_snapshot(self, index: int, data: bytes) -> Snapshot:
        """Record the application's snapshot at `index` (an applied entry, so
        one on storage). The entries stay until `compact`."""
        if not max(self._snapshot.index, self._compacted_index) < index <= self.last_index():
            raise ValueError(f"cannot snapshot at {index}: the snapshot is at "
                             f"{self._snapshot.index}, the log ends at {self.last_index()}")
        self._snapshot = Snapshot(index=index, term=self.term(index), data=data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop the entries up to `index`, which the snapshot must cover."""
        if not self._compacted_index < index <= self._snapshot.index:
            raise ValueError(f"cannot compact to {index}: compacted to "
                             f"{self._compacted_index}, snapshot at {self._snapshot.index}")
        term = self.term(index)
        del self._entries[:index - self._compacted_index]
        self._compacted_index, self._compacted_term = index, term

    def _check(self, low: int, high: int) -> None:
        if not (self.first_index() <= low < high <= self.last_index() + 1):
            raise IndexError(f"entries {low}..{high - 1} are outside "
                             f"{self.first_index()}..{self.last_index()}")


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix within `max_bytes` of payload, and at least one entry."""
    if max_bytes is None or not entries:
        return entries
    total = 0
    for count, entry in enumerate(entries):
        total += entry.size
        if total > max_bytes and count > 0:
            return entries[:count]
    return entries
