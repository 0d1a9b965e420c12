"""What a restore from a backup does to each Raft group of the restored
member, so that it cannot break Raft's safety (pure: no I/O).

A backup is the member's past. Since it was taken the member may have voted
in later terms and acknowledged entries that were then committed counting
it; restored, it has forgotten both. Were it to come back as it was, it
could vote a second time in a term (two leaders in one term) or help elect
a leader that lacks an entry it had acknowledged (a committed write lost).
etcd avoids this by re-adding a restored member as a new one; without
membership changes, kvstore fences it instead:

- `highest_term` is the highest term any other member of the cluster holds
  while the restored member is stopped (`kvstore admin restore` asks every
  one of them, and refuses if any does not answer): every term the member
  can have voted in is at most that.
- Each group's term becomes `highest_term + 1`, with no vote, and its
  `fence` that term: the core (`raft.Raft`) grants no vote or pre-vote and
  never campaigns until it follows a leader of a term at or above the
  fence (elected without it) up to an entry of that leader's term; only
  then has its log every committed entry again.
- The log is cut back to what the backup knew was committed (or applied):
  a tail beyond it may be one a later leader overwrote; the leader sends
  what follows.

Its term, higher than the others', makes the group's current leader step
down once when the member answers it: a restore costs each of the
member's groups one election.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from kvstore.leader.persistence import LoadedGroup
from kvstore.leader.raft.messages import HardState


@dataclass(frozen=True)
class Fence:
    """A group's state after the restore: its hard state, and the last log
    index it keeps (the entries after it are dropped)."""

    hard_state: HardState
    keep_through: int


def fence_for(loaded: LoadedGroup, highest_term: int) -> Fence:
    """The fence of a group as the backup holds it (`loaded`), given the
    highest term the rest of the cluster holds."""
    if highest_term < 0:
        raise ValueError(f"a term is never negative, got {highest_term}")
    term = max(highest_term, loaded.hard_state.term) + 1
    # The commit index may be stored lazily; what was applied was committed.
    committed = max(loaded.hard_state.commit, loaded.applied, loaded.compacted_index)
    keep_through = min(committed, max(loaded.last_index, loaded.compacted_index))
    return Fence(HardState(term=term, vote=None, commit=keep_through, fence=term), keep_through)


class FenceableStore(Protocol):
    """What fencing needs of a Raft store (`LmdbRaftStore`, `MemoryRaftStore`)."""

    def groups(self) -> list[int]:
        """The groups it holds state of."""
        ...

    def load(self, group: int, tail_entries: int) -> LoadedGroup: ...

    def fence(self, fences: Mapping[int, Fence]) -> None:
        """Write every group's fence (cut its log, set its hard state) in
        one durable transaction."""
        ...


def fence_store(store: FenceableStore, highest_term: int, groups: Iterable[int]) -> int:
    """Fence every group of the restored node (`groups`, the partitions it
    replicates) in `store`, a restored backup, and any other the backup
    holds; how many. A group the backup holds nothing of (it was taken
    before the group first wrote) is fenced too: an empty member that
    forgot its votes is as dangerous as any other."""
    every = sorted(set(groups) | set(store.groups()))
    store.fence({group: fence_for(store.load(group, 0), highest_term) for group in every})
    return len(every)
