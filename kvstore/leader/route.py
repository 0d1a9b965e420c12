"""Where one leader-mode request goes, attempt by attempt, and when it gives
up: a sans-I/O machine, as the leaderless request machines are; the
asyncio shell (`access`) carries its steps out.

A write must reach its partition's leader; a linearizable read may be
served by any replica whose host can reach the leader (a follower's
ReadIndex asks it), so it starts at this node when it is a replica; a
stale read may be answered by any replica. The route:

- starts at the leader this process knows (a write), or at this node when
  it replicates the partition (a read), else at the leader known, else at
  the partition's first replica;
- follows a refusal's hint: NOT_LEADER names the leader the refuser knows;
- moves on from a node that does not answer, or refuses for a reason that
  another node may not have (stopping, overloaded, its group halted);
- when every replica was tried and none knows a leader (an election is
  under way, or cannot succeed), pauses a little and starts over;
- gives up at its deadline: the request's own, or `leader_timeout` after it
  began, whichever is first. On the minority side of a network partition
  no leader can be elected, so a request fails in seconds instead of at its
  deadline; the error is UNAVAILABLE with reason NOT_LEADER (no node here
  knows a leader) or NO_QUORUM (one took the request but did not commit or
  confirm it in time), and names the partition and the leader last known.

A write that reached a node and was not refused may have been proposed
(its answer was lost, or did not come in time) and may still commit: every
later failure says outcome `unknown`, never `not_applied`. Trying the
write again elsewhere is safe: it carries the client's request id, and the
state machine applies an id once.

Pure: no I/O, no clock (the shell passes `now`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from kvstore.errors import (
    NOT_APPLIED, UNKNOWN, DeadlineExceeded, KVStoreError, Unavailable,
)
from kvstore.leader.raft.messages import NodeId

FIRST_PAUSE_SECONDS = 0.025  # doubled after each round that found no leader
MAX_PAUSE_SECONDS = 0.2


class Kind(Enum):
    WRITE = "write"
    READ = "read"  # linearizable
    STALE_READ = "stale read"


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send the request to `node` (possibly this one), to be answered within `timeout` s."""

    node: NodeId
    timeout: float


@dataclass(frozen=True, slots=True)
class Pause:
    """No replica knows a leader: wait `seconds` (less if a leader is learnt), then go on."""

    seconds: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    error: KVStoreError


Step = Attempt | Pause | GiveUp


class Route:
    def __init__(self, partition: int, replicas: Sequence[NodeId], kind: Kind, *,
                 self_id: NodeId | None, leader: NodeId | None, last_known: NodeId | None,
                 now: float, timeout: float, leader_timeout: float) -> None:
        if not replicas:
            raise ValueError(f"partition {partition} has no replicas")
        self._partition = partition
        self._replicas = tuple(replicas)
        self._kind = kind
        self._timeout = timeout
        self._leader_timeout = leader_timeout
        self._request_deadline = now + timeout
        self._deadline = min(self._request_deadline, now + leader_timeout)
        local = [self_id] if self_id in self._replicas else []
        known = [leader] if leader in self._replicas else []
        first = known + local if kind is Kind.WRITE else local + known
        self._order = tuple(dict.fromkeys(first + list(self._replicas)))
        self._leader = leader if leader is not None else last_known
        self._hint: NodeId | None = None
        self._round: set[NodeId] = set()  # tried since the last pause (a stale read: ever)
        self._pauses = 0
        self._maybe_applied = False
        self._took_it = False  # a node accepted the request but did not finish it
        self._final: KVStoreError | None = None

    @property
    def leader_last_known(self) -> NodeId | None:
        return self._leader

    def next(self, now: float) -> Step:
        if self._final is not None:
            return GiveUp(self._final)
        left = self._deadline - now
        if left <= 0:
            self._final = self._expired()
            return GiveUp(self._final)
        if self._kind is Kind.STALE_READ:
            node = next((n for n in self._order if n not in self._round), None)
            if node is None:
                return GiveUp(Unavailable(
                    f"no replica of partition {self._partition} answered the stale read "
                    f"(tried {', '.join(self._order)}); retry when one is back",
                    reason="NO_REPLICA", metadata={"partition": str(self._partition)}))
        else:
            node = self._hint if self._hint not in self._round else None
            if node is None:
                node = next((n for n in self._order if n not in self._round), None)
            if node is None:
                self._round.clear()  # the hint stays: the next round starts there
                pause = min(MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2 ** self._pauses)
                self._pauses += 1
                return Pause(min(pause, left))
        self._round.add(node)
        return Attempt(node, left)

    def refused(self, node: NodeId, error: KVStoreError) -> None:
        """`node` answered with `error`."""
        if error.outcome == UNKNOWN:
            self._maybe_applied = True
        if isinstance(error, DeadlineExceeded):
            self._took_it = True  # it could not finish in the time it had: ours is up too
            return
        if not isinstance(error, Unavailable) or error.reason == "OUTCOME_UNKNOWN":
            # A definite answer (a version mismatch, bad input), or a write
            # applied unseen whose id is forgotten: trying again elsewhere
            # would not change it, or could apply it twice.
            self._final = error
            return
        if error.reason == "NO_QUORUM":
            self._took_it = True
        hint = error.metadata.get("leader")
        if error.reason == "NOT_LEADER" and hint in self._replicas and hint != node:
            # Followed unless tried in this round already: two nodes naming
            # each other must not keep the request bouncing between them.
            self._hint = self._leader = hint

    def unanswered(self, node: NodeId) -> None:
        """`node` did not answer (the link failed, or no answer came in time)."""
        self._took_it = True
        if self._kind is Kind.WRITE:
            self._maybe_applied = True  # it may have arrived, and been proposed
        if self._hint == node:
            self._hint = None

    def _expired(self) -> KVStoreError:
        metadata = {"partition": str(self._partition)}
        if self._leader is not None:
            metadata["leader"] = self._leader
            where = f"the leader last known is {self._leader}"
        else:
            where = "no leader was known"
        note = ""
        if self._kind is Kind.WRITE:
            metadata["outcome"] = UNKNOWN if self._maybe_applied else NOT_APPLIED
            note = ("; the write may still apply" if self._maybe_applied
                    else "; the write was not applied")
        what = f"the {self._kind.value} of partition {self._partition}"
        if self._request_deadline <= self._deadline:
            return DeadlineExceeded(
                f"{what} did not complete within its deadline ({self._timeout:g} s); "
                f"{where}{note}", reason="DEADLINE_EXCEEDED", metadata=metadata)
        if self._took_it:
            return Unavailable(
                f"{what} was not {'committed' if self._kind is Kind.WRITE else 'confirmed'} "
                f"by a quorum within {self._leader_timeout:g} s ({where}): a majority of its "
                f"replicas ({', '.join(self._replicas)}) may be down or cut off from this "
                f"one{note}", reason="NO_QUORUM", metadata=metadata)
        return Unavailable(
            f"{what} found no leader within {self._leader_timeout:g} s ({where}): a majority "
            f"of its replicas ({', '.join(self._replicas)}) may be down or cut off from this "
            f"one{note}", reason="NOT_LEADER", metadata=metadata)
