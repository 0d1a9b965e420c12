"""The quorum decision for one leaderless request, given the replies so far.

The coordinator sends a request to the N replicas of a key's preference list
and feeds each outcome in as it arrives; these objects say whether the
request has succeeded (`done`), can no longer succeed (`failed`), why not
(`error_message`), and, for reads, what to answer (`merged`) and which
replicas to repair (`stale`). Pure logic: no I/O, no asyncio, no clock. The
coordinator owns deadlines and turns a deadline into `fail(node, reason)`;
how many replies a consistency level asks for is
`kvstore.rpc.validation.replica_count`.

Both states only move one way: answers only add acks or failures, so once
`done` the quorum stays done, and once `failed` (too few replicas left to
reach `required`) it stays failed. Answers that arrive after the quorum has
settled are still recorded, so a read can keep collecting replies for read
repair.
"""

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from kvstore.causality.versions import DVVSet, lww_sync, sync
from kvstore.errors import DataLoss, KVStoreError, ResourceExhausted, Unavailable


class _Tally:
    """Who has answered, who failed and why, and who has not answered yet."""

    _letter = "?"  # "r" or "w", for messages
    _verb = "answer"

    def __init__(self, replicas: Sequence[str], required: int) -> None:
        if len(set(replicas)) != len(replicas):
            raise ValueError(f"replicas must be distinct node ids, got {list(replicas)}")
        if not 1 <= required <= len(replicas):
            raise ValueError(
                f"required must be 1..{len(replicas)} (the number of replicas), got {required}"
            )
        self._replicas = tuple(replicas)
        self._required = required
        self._succeeded: list[str] = []
        self._failures: dict[str, str] = {}

    @property
    def replicas(self) -> tuple[str, ...]:
        return self._replicas

    @property
    def required(self) -> int:
        return self._required

    @property
    def failures(self) -> Mapping[str, str]:
        """Node id -> reason, for every replica that failed, in arrival order."""
        return MappingProxyType(self._failures)

    @property
    def pending(self) -> tuple[str, ...]:
        """The replicas that have not answered, in preference-list order."""
        answered = {*self._succeeded, *self._failures}
        return tuple(node for node in self._replicas if node not in answered)

    @property
    def done(self) -> bool:
        return len(self._succeeded) >= self._required

    @property
    def failed(self) -> bool:
        """True when the replicas still to answer can no longer make up `required`."""
        return len(self._succeeded) + len(self.pending) < self._required

    @property
    def settled(self) -> bool:
        return self.done or self.failed

    def fail(self, node_id: str, reason: str) -> None:
        self._check_first_answer(node_id)
        self._failures[node_id] = reason

    def error_message(self) -> str:
        """What went wrong, for the client: the level, what answered, what failed
        and why, and who has not answered yet.

        Meant for a quorum that failed or ran out of time, but it never raises:
        a reply can land between a deadline firing and this call, so the
        quorum may be done by then, and the message just says so.
        """
        n = len(self._replicas)
        parts = [
            f"{self._letter}={self._required} needs {self._required} of {n} replicas "
            f"to {self._verb}; {len(self._succeeded)} did"
        ]
        if self._failures:
            reasons = "; ".join(f"{node}: {why}" for node, why in self._failures.items())
            parts.append(f"{len(self._failures)} failed ({reasons})")
        pending = self.pending
        if pending:
            parts.append(f"{len(pending)} did not answer ({', '.join(pending)})")
        return ", ".join(parts)

    def _succeed(self, node_id: str) -> None:
        self._check_first_answer(node_id)
        self._succeeded.append(node_id)

    def _check_first_answer(self, node_id: str) -> None:
        if node_id not in self._replicas:
            raise ValueError(f"{node_id!r} is not one of the replicas {list(self._replicas)}")
        if node_id in self._failures or node_id in self._succeeded:
            raise ValueError(f"{node_id!r} has already answered")


class WriteQuorum(_Tally):
    """A write succeeds once `required` (W) replicas have acknowledged it."""

    _letter = "w"
    _verb = "acknowledge"

    @property
    def acks(self) -> int:
        return len(self._succeeded)

    def ack(self, node_id: str) -> None:
        self._succeed(node_id)


class ReadQuorum(_Tally):
    """A read succeeds once `required` (R) replicas have replied.

    A reply is the replica's set for the key, or None when it holds nothing.
    `lww=True` merges with last-write-wins (for clusters created that way).
    """

    _letter = "r"
    _verb = "answer"

    def __init__(self, replicas: Sequence[str], required: int, *, lww: bool = False) -> None:
        super().__init__(replicas, required)
        self._lww = lww
        self._replies: dict[str, DVVSet | None] = {}

    @property
    def replies(self) -> Mapping[str, DVVSet | None]:
        """Node id -> its reply, for every replica that replied, in arrival order."""
        return MappingProxyType(self._replies)

    def reply(self, node_id: str, dvvset: DVVSet | None) -> None:
        self._succeed(node_id)
        self._replies[node_id] = dvvset

    def merged(self) -> DVVSet | None:
        """The merge of every reply so far; None when no replica holds the key."""
        merge = lww_sync if self._lww else sync
        result: DVVSet | None = None
        for dvvset in self._replies.values():
            if dvvset is not None:
                result = dvvset if result is None else merge(result, dvvset)
        return result

    def stale(self, merged: DVVSet | None) -> tuple[str, ...]:
        """The replicas that replied with something other than `merged`: the
        read-repair targets, in preference-list order.

        "Other" is DVVSet equality (same history and same siblings, sorted by
        dot), not `versions.equal`, which compares histories only and so would
        pass a replica holding a different copy of a sibling under the same dot.
        A replica holding nothing (None) and an empty set hold the same thing.
        """
        target = _nothing_to_none(merged)
        return tuple(
            node
            for node in self._replicas
            if node in self._replies and _nothing_to_none(self._replies[node]) != target
        )


def _nothing_to_none(dvvset: DVVSet | None) -> DVVSet | None:
    if dvvset is None or (not dvvset.siblings and not dvvset.history.counters):
        return None
    return dvvset


def quorum_error(message: str, failures: Sequence[KVStoreError]) -> KVStoreError:
    """The error of a quorum that failed: Unavailable, unless every replica
    failed the same way for a reason of its own (a full store, a corrupt
    record): then that reason's error, so a one-replica cluster reports
    RESOURCE_EXHAUSTED or DATA_LOSS as a node does."""
    kinds = {type(failure) for failure in failures}
    if len(kinds) == 1:
        (kind,) = kinds
        if kind in (ResourceExhausted, DataLoss):
            return kind(message)
    return Unavailable(message)
