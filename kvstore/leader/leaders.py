"""Who leads each partition's Raft group, as one process knows it: the
`LeaderBook` a node or a coordinator keeps so that a write or a
linearizable read goes straight to the leader.

It learns from the node's own host (the leader each group it replicates
knows, with its term), from refusals (NOT_LEADER names the leader the
refuser knows) and from answers (a node that applied a write led its
partition then). A leader that does not answer is forgotten, so the next
request starts elsewhere, but it stays the one *last known*, which errors
name. A report of an older term than the one known is ignored; a hint
without a term (a refusal's) replaces whatever is known, being newer news.

Pure: no I/O, no clock.
"""

from dataclasses import dataclass

from kvstore.leader.raft.messages import NodeId


@dataclass(frozen=True, slots=True)
class Leadership:
    leader: NodeId
    term: int  # 0: not known (a hint from a refusal)


class LeaderBook:
    def __init__(self) -> None:
        self._known: dict[int, Leadership] = {}
        self._last: dict[int, NodeId] = {}

    def learn(self, partition: int, leader: NodeId | None, term: int = 0) -> bool:
        """Record what was heard; whether the known leader changed. `leader`
        None (a group that knows no leader) forgets the one known at an
        older term."""
        known = self._known.get(partition)
        if known is not None and term and known.term > term:
            return False  # older news
        if leader is None:
            if known is not None and (not term or known.term < term):
                del self._known[partition]
                return True
            return False
        self._last[partition] = leader
        changed = known is None or known.leader != leader
        self._known[partition] = Leadership(leader, term or (known.term if known else 0))
        return changed

    def forget(self, partition: int, node: NodeId) -> None:
        """`node` did not answer as the partition's leader."""
        known = self._known.get(partition)
        if known is not None and known.leader == node:
            del self._known[partition]

    def leader_of(self, partition: int) -> NodeId | None:
        known = self._known.get(partition)
        return None if known is None else known.leader

    def known(self, partition: int) -> Leadership | None:
        return self._known.get(partition)

    def last_known(self, partition: int) -> NodeId | None:
        """The leader last heard of, even if it has since been forgotten."""
        return self._last.get(partition)
