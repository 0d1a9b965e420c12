"""A leader's heartbeat rounds in its term, and the linearizable reads that
wait on them (ReadIndex: the Raft thesis, section 6.4).

A read that reaches the leader is recorded with the commit index of that
moment. It is released once the leader knows it still led *after* the read
arrived: a quorum of voters (the leader included) acknowledged a heartbeat
round started after it. Then no other leader can have committed anything the
read would miss, so serving it at that index once applied is linearizable.

Rounds are numbered from 1 in each term and every heartbeat carries the
round it belongs to; a voter's acknowledgement of round r also acknowledges
every earlier round. Reads that arrive between two rounds share the next one
(`needs_round`), so a burst of reads costs one round, not one each.

The same rounds back the leader lease (`ReadMode.LEASE`): the latest
confirmed round and the tick it started at. Pure bookkeeping.
"""

from collections import deque
from dataclasses import dataclass

from kvstore.leader.raft.messages import NodeId


@dataclass(frozen=True, slots=True)
class PendingRead:
    index: int  # the leader's commit index when the read arrived
    context: bytes
    requester: NodeId  # the leader itself, or the follower that forwarded it


class ReadRounds:
    def __init__(self, leader: NodeId, voters: tuple[NodeId, ...], quorum: int) -> None:
        self._leader = leader
        self._voters = voters
        self._quorum = quorum
        self._round = 0  # the last round started
        self._started_at: dict[int, int] = {}  # round -> tick, for rounds not yet confirmed
        self._acked: dict[NodeId, int] = {}  # voter -> the highest round it acknowledged
        self._confirmed = 0  # the highest round a quorum acknowledged
        self._confirmed_at: int | None = None  # the tick that round started at
        self._waiting: list[PendingRead] = []  # arrived since the last round started
        self._pending: deque[tuple[int, PendingRead]] = deque()  # (round, read)

    @property
    def current_round(self) -> int:
        return self._round

    def add(self, read: PendingRead) -> None:
        self._waiting.append(read)

    def needs_round(self) -> bool:
        return bool(self._waiting)

    def start_round(self, tick: int) -> tuple[int, list[PendingRead]]:
        """Begin a round (its heartbeats go out now); the reads waiting join
        it. Returns the round and the reads the leader's own acknowledgement
        releases (all of them when it is the only voter)."""
        self._round += 1
        self._started_at[self._round] = tick
        self._pending.extend((self._round, read) for read in self._waiting)
        self._waiting.clear()
        return self._round, self.ack(self._leader, self._round)

    def ack(self, voter: NodeId, round_: int) -> list[PendingRead]:
        """A voter echoed `round_`; returns the reads that are now confirmed."""
        if voter not in self._voters or round_ > self._round:
            return []
        self._acked[voter] = max(self._acked.get(voter, 0), round_)
        acked = sorted((self._acked.get(v, 0) for v in self._voters), reverse=True)
        confirmed = acked[self._quorum - 1]
        if confirmed <= self._confirmed:
            return []
        self._confirmed = confirmed
        self._confirmed_at = self._started_at[confirmed]
        for old in [r for r in self._started_at if r <= confirmed]:
            del self._started_at[old]
        released: list[PendingRead] = []
        while self._pending and self._pending[0][0] <= confirmed:
            released.append(self._pending.popleft()[1])
        return released

    def lease_valid(self, tick: int, lease_ticks: int) -> bool:
        """A quorum acknowledged a round that started less than `lease_ticks`
        ticks ago (on this leader's clock)."""
        return self._confirmed_at is not None and tick < self._confirmed_at + lease_ticks
