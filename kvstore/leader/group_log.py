"""`GroupLog`: one group's durable Raft log as the core reads it (the
`LogStorage` protocol), over what the store has committed.

It holds what the core asks for most in memory: the hard state, the bounds
of the log, the snapshot's and the compaction point's (index, term), and a
cache of the last entries (new entries are read back mostly from the tail:
appends to followers, committed entries to apply). Anything older is read
from the store's committed state (`StoredLog`), and so is a snapshot's
data, which can be large and is needed only to send it.

The store changes on disk only inside a pass's transaction; the host calls
`record` with that pass's write once it has committed, on the thread that
runs the core, before it calls the core's `advance`. So the core always
reads exactly the committed state: nothing is read while a pass is being
written (every core waits for its `advance` then), and the entries of a
Ready are read from here only after `advance` marked them stable.

Pure: no I/O of its own.
"""

from kvstore.leader.persistence import GroupApplied, GroupWrite, LoadedGroup, StoredLog
from kvstore.leader.raft.messages import Entry, HardState, Snapshot
from kvstore.leader.raft.storage import limit_size

CACHED_ENTRIES = 256


class GroupLog:
    def __init__(self, group: int, loaded: LoadedGroup, stored: StoredLog,
                 cached_entries: int = CACHED_ENTRIES) -> None:
        self.group = group
        self._stored = stored
        self._cached = cached_entries
        self._hard_state = loaded.hard_state
        self._snapshot = (loaded.snapshot_index, loaded.snapshot_term)
        self._compacted = (loaded.compacted_index, loaded.compacted_term)
        self._last = loaded.last_index
        self._tail = list(loaded.tail[-cached_entries:]) if cached_entries else []

    # -- LogStorage --------------------------------------------------------------

    def hard_state(self) -> HardState:
        return self._hard_state

    def snapshot(self) -> Snapshot:
        if self._snapshot[0] == 0:
            return Snapshot()
        return self._stored.read_snapshot(self.group)

    def snapshot_index(self) -> int:
        return self._snapshot[0]

    def first_index(self) -> int:
        return self._compacted[0] + 1

    def last_index(self) -> int:
        return self._last

    def term(self, index: int) -> int:
        if index == self._compacted[0]:
            return self._compacted[1]
        cached = self._cached_entry(index)
        if cached is not None:
            return cached.term
        return self._stored.read_entries(self.group, index, index + 1, None)[0].term

    def entries(self, low: int, high: int, max_bytes: int | None) -> list[Entry]:
        if self._tail and low >= self._tail[0].index:
            start = self._tail[0].index
            return limit_size(self._tail[low - start:high - start], max_bytes)
        return self._stored.read_entries(self.group, low, high, max_bytes)

    # -- after a pass committed -----------------------------------------------------

    def record(self, write: GroupWrite, done: GroupApplied) -> None:
        """Follow what the pass's transaction did, in its order (compaction,
        a received snapshot, entries, hard state)."""
        if done.snapshot is not None:
            self._snapshot = done.snapshot
        if done.compacted is not None:
            self._compacted = done.compacted
            self._tail = [e for e in self._tail if e.index > done.compacted[0]]
        if write.snapshot is not None:
            index, term = write.snapshot.index, write.snapshot.term
            self._snapshot = self._compacted = (index, term)
            self._last = index
            self._tail = []
        if write.entries:
            self._append(list(write.entries))
        if write.hard_state is not None:
            self._hard_state = write.hard_state

    def _append(self, entries: list[Entry]) -> None:
        first = entries[0].index
        if self._tail and self._tail[0].index < first <= self._tail[-1].index + 1:
            del self._tail[first - self._tail[0].index:]
            self._tail.extend(entries)
        else:
            self._tail = entries
        self._last = entries[-1].index
        if len(self._tail) > self._cached:
            del self._tail[:len(self._tail) - self._cached]

    def _cached_entry(self, index: int) -> Entry | None:
        if self._tail and self._tail[0].index <= index <= self._tail[-1].index:
            return self._tail[index - self._tail[0].index]
        return None
