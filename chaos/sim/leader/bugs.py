"""Deliberately broken variants of leader mode, to prove the leader-mode
simulation catches what it is meant to catch (`make sim MODE=leader
BUG=...`, tests/test_leader_sim.py). Each is a small patch of one
production function, applied only inside `chaos.sim.bugs.planted(name)`:

- `commit-on-a-minority`: a leader's commit index follows the match
  indexes of one member fewer than a quorum (on three replicas: the
  furthest member's, usually its own).
- `vote-twice-in-a-term`: a voter forgets the vote it gave in its term,
  and grants another candidate of the same term its vote too.
- `vote-for-any-log`: a vote is granted whatever the candidate's log,
  without the check that it is at least as up to date as the voter's.
- `read-without-read-index`: a leader answers a linearizable read at its
  commit index at once, without the heartbeat round that confirms it still
  leads.
- `read-before-applied`: a replica serves a read as soon as it knows the
  read's index, before its state machine has applied that index.
- `restore-without-fence`: a node restored from a backup comes back as the
  backup left it (its old term and vote, its whole log), not fenced.
"""

from collections.abc import Callable
from typing import Any

from kvstore.leader import restore_fence
from kvstore.leader.persistence import LoadedGroup
from kvstore.leader.raft.leadership import Leadership
from kvstore.leader.raft.log import RaftLog
from kvstore.leader.raft.messages import Vote
from kvstore.leader.raft.raft import Raft
from kvstore.leader.raft.reads import PendingRead
from kvstore.leader.state_machine import Versioned
from kvstore.leader.waiters import GroupWaiters, ReadValue, Release

Patches = list[tuple[Any, str, Callable[..., Any]]]


def _commit_on_a_minority() -> Patches:
    def broken(self: Leadership) -> bool:
        matches = sorted((p.match for p in self.progress.values()), reverse=True)
        minority_index = matches[max(0, self._config.quorum - 2)]
        if not self._log.maybe_commit(minority_index, self._term):
            return False
        self._broadcast_commit = True
        if self._postponed_reads:
            for read in self._postponed_reads:
                self._read(PendingRead(self._log.committed, read.context, read.requester))
            self._postponed_reads = []
        return True

    return [(Leadership, "_maybe_commit", broken)]


def _vote_twice_in_a_term() -> Patches:
    on_vote = Raft._on_vote

    def broken(self: Raft, m: Vote) -> None:
        if not m.pre_vote and m.term == self.term:
            self.vote, self.leader = None, None
        on_vote(self, m)

    return [(Raft, "_on_vote", broken)]


def _vote_for_any_log() -> Patches:
    def broken(self: RaftLog, index: int, term: int) -> bool:
        return True

    return [(RaftLog, "is_up_to_date", broken)]


def _read_without_read_index() -> Patches:
    def broken(self: Leadership, read: PendingRead) -> None:
        self._answer(read, read.index)

    return [(Leadership, "_read", broken)]


def _read_before_applied() -> Patches:
    def broken(self: GroupWaiters, applied: int,
               read: Callable[[bytes], Versioned | None]) -> list[Release]:
        released = []
        for _index, pending in self._indexed_reads:
            value = read(pending.key)
            result = ReadValue(0, None) if value is None else ReadValue(value.version,
                                                                        value.value)
            released.append(Release(pending.ticket, result))
        self._indexed_reads = []
        return released

    return [(GroupWaiters, "reads_done", broken)]


def _restore_without_fence() -> Patches:
    def broken(loaded: LoadedGroup, highest_term: int) -> restore_fence.Fence:
        return restore_fence.Fence(loaded.hard_state, loaded.last_index)

    return [(restore_fence, "fence_for", broken)]


LEADER_BUGS: dict[str, Callable[[], Patches]] = {
    "commit-on-a-minority": _commit_on_a_minority,
    "vote-twice-in-a-term": _vote_twice_in_a_term,
    "vote-for-any-log": _vote_for_any_log,
    "read-without-read-index": _read_without_read_index,
    "read-before-applied": _read_before_applied,
    "restore-without-fence": _restore_without_fence,
}
