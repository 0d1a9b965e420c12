"""The tombstone purge rule as a pure plan: from what the collecting replica
has learned about one partition, which expired tombstones may go, on which
replicas, in which order; and what it still needs to learn before it knows.

The rule and why it is safe are stated in `kvstore.leaderless.tombstones`,
the driver that gathers the facts, asks `plan` and carries the purges out.
Here: `PurgeFacts`, where anything not yet learned is unknown and an
unknown fact never counts as safe; `plan`, the purges the facts allow;
`wanted`, the questions to ask next, so that cheap facts that can rule the
whole partition out (the round's roots, who is up, this replica's expired
tombstones, the hints anywhere, one node at a time) come before the
buckets, and asking stops as soon as no answer could allow a purge.
`wanted` applies the same rule as `plan` with every unknown taken as
favourable, so the two cannot disagree about what the rule is.

Pure: no I/O, no asyncio, no clock; the grace period is applied by the
replica that answers `ExpiredHere`.
"""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeAlias


@dataclass(frozen=True)
class Tombstone:
    """An expired tombstone-only state this replica holds."""

    key: bytes
    digest: bytes  # of the state, as Merkle buckets compare it
    bucket: int  # the Merkle bucket the key falls in (where the others' digests are asked)


@dataclass(frozen=True)
class Purge:
    """Have `node_id` remove `key` if it still holds exactly the state whose digest is `digest`."""

    node_id: str
    key: bytes
    digest: bytes


@dataclass(frozen=True)
class ExpiredHere:
    """This replica's tombstone-only keys of the partition older than the grace period."""


@dataclass(frozen=True)
class HintsAt:
    """How many hints `node_id` (this node too) keeps for keys of the partition."""

    node_id: str


@dataclass(frozen=True)
class BucketAt:
    """key -> state digest of one bucket of replica `node_id`'s tree of the partition."""

    node_id: str
    bucket: int


Question: TypeAlias = ExpiredHere | HintsAt | BucketAt
Answer: TypeAlias = Sequence[Tombstone] | int | Mapping[bytes, bytes]


@dataclass(frozen=True)
class PurgeFacts:
    """What the collector knows about one partition; anything absent is unknown."""

    node_id: str  # this replica, which collects
    replicas: tuple[str, ...]  # the partition's other replicas, in preference order
    nodes: tuple[str, ...]  # every other node of the cluster: a hint may be anywhere
    up: frozenset[str]  # the nodes the failure detector holds up
    agreed: frozenset[str]  # replicas whose root equalled this one's in the round just made
    expired: tuple[Tombstone, ...] | None = None  # None: not read yet
    hints: Mapping[str, int] = field(default_factory=dict)  # node -> hints for the partition
    buckets: Mapping[tuple[str, int], Mapping[bytes, bytes]] = field(default_factory=dict)

    def learned(self, answers: Sequence[tuple[Question, Answer]]) -> "PurgeFacts":
        """These facts with the answers to some questions added."""
        expired, hints, buckets = self.expired, dict(self.hints), dict(self.buckets)
        for question, answer in answers:
            if isinstance(question, ExpiredHere) and isinstance(answer, Sequence):
                expired = tuple(answer)
            elif isinstance(question, HintsAt) and isinstance(answer, int):
                hints[question.node_id] = answer
            elif isinstance(question, BucketAt) and isinstance(answer, Mapping):
                buckets[(question.node_id, question.bucket)] = answer
            else:
                raise TypeError(f"{answer!r} does not answer {question!r}")
        return replace(self, expired=expired, hints=hints, buckets=buckets)


def plan(facts: PurgeFacts) -> list[Purge]:
    """The purges the facts allow, in the order to make them: key by key,
    every other replica first (in preference order), this one last. Empty
    unless every condition of the rule is known to hold."""
    steps: list[Purge] = []
    for tombstone in _purgeable(facts, hopeful=False):
        for node_id in (*facts.replicas, facts.node_id):
            steps.append(Purge(node_id, tombstone.key, tombstone.digest))
    return steps


def wanted(facts: PurgeFacts) -> list[Question]:
    """What to learn next, in the order to ask it; empty when no answer
    could change the plan (it is then final)."""
    if _obstacle(facts, hopeful=True) is not None:
        return []
    if facts.expired is None:
        return [ExpiredHere()]
    candidates = _purgeable(facts, hopeful=True)
    if not candidates:
        return []
    for node_id in (facts.node_id, *facts.nodes):
        if node_id not in facts.hints:
            return [HintsAt(node_id)]  # one at a time: a hint anywhere ends the asking
    questions = (BucketAt(replica, tombstone.bucket)
                 for tombstone in candidates for replica in facts.replicas)
    return [q for q in dict.fromkeys(questions) if (q.node_id, q.bucket) not in facts.buckets]


def _purgeable(facts: PurgeFacts, *, hopeful: bool) -> list[Tombstone]:
    """The expired tombstones every condition allows to go; `hopeful`
    takes every unknown fact as favourable (what asking might still find)."""
    if facts.expired is None or _obstacle(facts, hopeful=hopeful) is not None:
        return []
    return [tombstone for tombstone in facts.expired
            if all(_holds_exactly(facts, replica, tombstone, hopeful=hopeful)
                   for replica in facts.replicas)]


def obstacle(facts: PurgeFacts) -> str | None:
    """Why nothing of the partition may be purged (the first reason found),
    or None: then only the keys' own states decide."""
    return _obstacle(facts, hopeful=False)


def _obstacle(facts: PurgeFacts, *, hopeful: bool) -> str | None:
    return next(_obstacles(facts, hopeful=hopeful), None)


def _obstacles(facts: PurgeFacts, *, hopeful: bool) -> Iterator[str]:
    # Is every replica sure to hold every key as this one does, as far as
    # the roots tell?
    for replica in facts.replicas:
        if replica not in facts.agreed:
            yield f"{replica} did not report the same Merkle root"
    # Could a hint anywhere carry an older value of a key of the partition?
    for node_id in dict.fromkeys((*facts.replicas, *facts.nodes)):
        if node_id not in facts.up:
            yield f"{node_id} is down"
    for node_id in (facts.node_id, *facts.nodes):
        held = facts.hints.get(node_id)
        if held is None and not hopeful:
            yield f"the hints {node_id} keeps are not known"
        elif held:
            yield f"{node_id} keeps {held} hints for the partition"


def _holds_exactly(facts: PurgeFacts, replica: str, tombstone: Tombstone, *,
                   hopeful: bool) -> bool:
    bucket = facts.buckets.get((replica, tombstone.bucket))
    if bucket is None:
        return hopeful
    return bucket.get(tombstone.key) == tombstone.digest
