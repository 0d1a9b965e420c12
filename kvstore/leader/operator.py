"""What an operator asks of a node's Raft groups: how each stands (for
`Admin.Status`, `kvstore ring` and `cluster status`), and a leadership
transfer (`kvstore admin transfer-leader`).

A transfer is asked of the partition's leader: the node checks it leads,
asks its host to hand over (the core sends TimeoutNow once the target's
log is caught up), and answers once its own group has learnt that the
target leads, or refuses: FAILED_PRECONDITION naming the leader when it
does not lead, UNAVAILABLE when the leadership did not move in time (the
target is down or too far behind; the old leader goes on leading).
"""

from dataclasses import dataclass

from kvstore.errors import FailedPrecondition, InvalidArgument, Unavailable
from kvstore.leader.access import LeaderAccess
from kvstore.leader.driver import RaftDriver
from kvstore.leader.host import MultiRaft
from kvstore.leader.raft.messages import NodeId
from kvstore.leader.raft.raft import Role


@dataclass(frozen=True, slots=True)
class GroupView:
    partition: int
    role: str
    leader: NodeId | None
    term: int
    commit: int
    applied: int
    last_index: int
    quiesced: bool
    halted: str | None
    fenced: bool = False  # restored, not caught up yet (`HardState.fence`)


class RaftOperator:
    def __init__(self, node_id: NodeId, host: MultiRaft, driver: RaftDriver,
                 access: LeaderAccess) -> None:
        self._node_id = node_id
        self._host = host
        self._driver = driver
        self._access = access

    def groups(self) -> list[GroupView]:
        views = []
        for partition in self._host.groups():
            status = self._host.status(partition)
            views.append(GroupView(partition, status.role.value, status.leader, status.term,
                                   status.commit, status.applied, status.last_index,
                                   self._host.is_quiesced(partition),
                                   self._host.halted(partition), status.fence > 0))
        return views

    def led(self) -> int:
        return sum(self._host.status(p).role is Role.LEADER for p in self._host.groups())

    def without_leader(self) -> int:
        """Groups that know of no leader: electing one, or cut off from it."""
        return sum(self._host.status(p).leader is None for p in self._host.groups())

    def quiesced(self) -> int:
        return sum(self._host.is_quiesced(p) for p in self._host.groups())

    def apply_lag(self) -> int:
        lag = 0
        for partition in self._host.groups():
            status = self._host.status(partition)
            lag += status.commit - status.applied
        return lag

    async def transfer(self, partition: int, to: NodeId, timeout: float) -> tuple[NodeId, int]:
        """Move `partition`'s leadership to `to`; (leader, term) once it has."""
        if not 0 <= partition < self._access.partitions:
            raise InvalidArgument(f"partition {partition} does not exist; use "
                                  f"0..{self._access.partitions - 1}")
        replicas = self._access.replicas(partition)
        if to not in replicas:
            raise InvalidArgument(f"{to} is not a replica of partition {partition}; its "
                                  f"replicas are {', '.join(replicas)}")
        if partition not in self._host.groups():
            leader = self._access.book.leader_of(partition)
            raise FailedPrecondition(
                f"{self._node_id} holds no replica of partition {partition}; ask its leader"
                + (f", {leader}" if leader else f" (one of {', '.join(replicas)})"))
        status = self._host.status(partition)
        if status.leader == to:
            return to, status.term
        if status.role is not Role.LEADER:
            where = f"its leader is {status.leader}: ask it" if status.leader else \
                "it has no leader now: retry shortly"
            raise FailedPrecondition(f"{self._node_id} does not lead partition {partition}; "
                                     f"{where}", reason="NOT_LEADER",
                                     metadata={"leader": status.leader or ""})
        self._driver.transfer_leadership(partition, to)
        if not await self._access.wait_for_leader(partition, lambda leader: leader == to,
                                                  timeout):
            now = self._host.status(partition)
            raise Unavailable(
                f"partition {partition}'s leadership did not move to {to} within {timeout:g} s "
                f"({to} may be down or behind); its leader is {now.leader or 'none'} "
                f"(term {now.term})", reason="TRANSFER_TIMED_OUT")
        return to, self._host.status(partition).term
