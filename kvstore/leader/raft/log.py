"""One member's view of the Raft log: what stable storage holds, the entries
and snapshot not yet persisted ("unstable"), and the commit and applied
indexes.

The unstable part is what the next `Ready` hands out to persist; `advance`
marks it stable (`stable_to`), after which the application's storage holds
it. Unstable entries shadow storage from their first index on: a follower
that takes a new leader's entries over a conflicting uncommitted tail
appends them here at a lower index than storage's last, and the application
replaces the tail when it persists them.

Owns the log's rules: the consistency check (`try_append`), the up-to-date
check of elections (`is_up_to_date`), the commit index only moving forward
and never past the log, and the conflict search behind fast backtracking
(`find_conflict_by_term`). Pure: reads `LogStorage`, writes nothing.
"""

from kvstore.leader.raft.messages import Entry, Snapshot
from kvstore.leader.raft.storage import LogStorage, limit_size


class RaftLog:
    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        self._unstable: list[Entry] = []
        self._offset = storage.last_index() + 1  # the index of _unstable[0]
        self._unstable_snapshot: Snapshot | None = None
        self.committed = storage.first_index() - 1
        self.applied = storage.first_index() - 1

    # -- reading -----------------------------------------------------------

    def first_index(self) -> int:
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.index
        return self._storage_last()

    def last_term(self) -> int:
        term = self.term(self.last_index())
        assert term is not None
        return term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`; None when it was compacted away
        or is beyond the log."""
        if self._offset <= index < self._offset + len(self._unstable):
            return self._unstable[index - self._offset].term
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot.term if index == self._unstable_snapshot.index else None
        if self.storage.first_index() - 1 <= index <= self._storage_last():
            return self.storage.term(index)
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entries(self, low: int, high: int | None = None,
                max_bytes: int | None = None) -> list[Entry] | None:
        """Entries low..high-1 (to the end by default), within `max_bytes` of
        payload but at least one; None when some were compacted away."""
        high = self.last_index() + 1 if high is None else high
        if low < self.first_index():
            return None
        if low >= high:
            return []
        stored: list[Entry] = []
        if low < self._offset:
            stored = self.storage.entries(low, min(high, self._offset), max_bytes)
            if len(stored) < min(high, self._offset) - low:
                return stored  # the size limit cut it short
        if high <= self._offset:
            return stored
        start = max(low, self._offset) - self._offset
        unstable = self._unstable[start:high - self._offset]
        if not stored:
            return limit_size(unstable, max_bytes)
        budget = None if max_bytes is None else max_bytes - sum(e.size for e in stored)
        return stored + _within(unstable, budget)

    def snapshot(self) -> Snapshot:
        if self._unstable_snapshot is not None:
            return self._unstable_snapshot
        return self.storage.snapshot()

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """A candidate whose log ends at (last_index, last_term) is at least as
        up to date as this one (the Raft paper, 5.4.1)."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, or whose term
        is unknown (compacted); with its term (0 if unknown). Where two logs
        may last agree, given that the other has `term` at `index`."""
        while index > 0:
            ours = self.term(index)
            if ours is None:
                return index, 0
            if ours <= term:
                return index, ours
            index -= 1
        return 0, 0

    # -- what is to persist and apply ---------------------------------------

    def unstable_entries(self) -> list[Entry]:
        return list(self._unstable)

    def unstable_snapshot(self) -> Snapshot | None:
        return self._unstable_snapshot

    def has_entries_to_apply(self) -> bool:
        return self._unstable_snapshot is None and self.applied < self.committed

    def entries_to_apply(self, max_bytes: int | None) -> list[Entry]:
        """The committed entries not yet applied (persisted first by the
        application, in the same Ready when they are still unstable)."""
        if not self.has_entries_to_apply():
            return []
        entries = self.entries(self.applied + 1, self.committed + 1, max_bytes)
        assert entries is not None, "committed entries above applied are never compacted"
        return entries

    # -- changing --------------------------------------------------------------

    def append(self, entries: list[Entry]) -> int:
        """Append entries (the leader's own, or a follower's past a conflict);
        any entries from the first one's index on are replaced. Returns the
        last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        assert first > self.committed, f"entry {first} would overwrite a committed one"
        assert first <= self.last_index() + 1, f"entry {first} leaves a gap"
        if first == self._offset + len(self._unstable):
            self._unstable.extend(entries)
        elif first <= self._offset:
            # Replaces all that is unstable, and shadows storage from `first` on.
            self._offset = first
            self._unstable = list(entries)
        else:
            del self._unstable[first - self._offset:]
            self._unstable.extend(entries)
        return self.last_index()

    def try_append(self, prev_index: int, prev_term: int, entries: tuple[Entry, ...],
                   leader_commit: int) -> int | None:
        """The follower's side of AppendEntries: None if the log has no entry
        (prev_index, prev_term) (the consistency check fails); else take the
        entries (skipping those already held, replacing a conflicting tail),
        advance the commit index as far as the leader's and these entries
        allow, and return the index of the last entry the leader sent."""
        if not self.matches(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self._first_conflict(entries)
        if conflict is not None:
            assert conflict > self.committed, (
                f"entry {conflict} conflicts with the committed log (committed {self.committed})")
            self.append(list(entries[conflict - prev_index - 1:]))
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            assert index <= self.last_index(), (
                f"commit {index} is past the log's end {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to `index` if its entry is of `term` (a leader commits by
        counting replicas only entries of its own term: the Raft paper, 5.4.2)."""
        if index > self.committed and self.term(index) == term:
            self.commit_to(index)
            return True
        return False

    def restore(self, snapshot: Snapshot) -> None:
        """Take a leader's snapshot in place of the whole log."""
        self._unstable_snapshot = snapshot
        self._unstable = []
        self._offset = snapshot.index + 1
        self.committed = snapshot.index

    def stable_to(self, last: Entry | None, snapshot: Snapshot | None) -> None:
        """The application persisted the unstable snapshot and entries it was
        handed (up to `last`)."""
        if snapshot is not None and self._unstable_snapshot == snapshot:
            self._unstable_snapshot = None
            self.applied = max(self.applied, snapshot.index)
        if last is not None and self.term(last.index) == last.term and last.index >= self._offset:
            del self._unstable[:last.index + 1 - self._offset]
            self._offset = last.index + 1

    def applied_to(self, index: int) -> None:
        assert index <= self.committed, f"applied {index} is past the commit index"
        self.applied = max(self.applied, index)

    # -- helpers ---------------------------------------------------------------

    def _storage_last(self) -> int:
        """Storage's last index, but not what unstable entries shadow."""
        return min(self.storage.last_index(), self._offset - 1)

    def _first_conflict(self, entries: tuple[Entry, ...]) -> int | None:
        """The index of the first entry this log lacks or holds with another
        term (all later ones then need appending); None if it holds them all."""
        for entry in entries:
            if not self.matches(entry.index, entry.term):
                return entry.index
        return None


def _within(entries: list[Entry], budget: int | None) -> list[Entry]:
    """The prefix of `entries` that fits `budget` (possibly none)."""
    if budget is None:
        return entries
    taken: list[Entry] = []
    for entry in entries:
        budget -= entry.size
        if budget < 0:
            break
        taken.append(entry)
    return taken
