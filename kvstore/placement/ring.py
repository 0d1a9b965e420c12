"""The partitioned hash ring: which partition a key falls in, and which nodes
hold it.

The hash space is cut into Q equal partitions (Q a power of two, fixed when a
cluster is created). Storage keys carry their partition as a prefix so one
partition can be scanned, compared and moved on its own.

Placement is Dynamo's strategy 3 (Dynamo paper, section 6.2): members claim
whole partitions in proportion to their weight (`Ring.create`), and a change
of membership is computed from the current assignment (`Ring.with_members`,
like Riak's claim) so that as few partitions move as possible: a leaving
member's partitions go to the members furthest below their share, a joining
member takes partitions from those furthest above theirs, and two members
that stay as they were never trade partitions. The preference list of a
partition is its owner followed by the owners of the next partitions
clockwise, skipping nodes (and, where members have zones, zones) already
chosen.

Pure logic: no I/O, no clock, no randomness. The same inputs give the same
ring on every process, whatever order the members are listed in.
"""

import hashlib
import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PARTITIONS = 64


def validate_partition_count(partitions: int) -> None:
    if partitions < 1 or partitions > 1 << 16 or partitions & (partitions - 1):
        raise ValueError(
            f"partitions must be a power of two between 1 and 65536, got {partitions}"
        )


def key_hash(key: bytes) -> int:
    """A 64-bit position on the ring, stable across processes and versions."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def partition_of(key: bytes, partitions: int) -> int:
    """The partition (0..partitions-1) that owns `key`: the top bits of its hash."""
    return key_hash(key) >> (64 - partitions.bit_length() + 1)


# How far apart a node's partitions should be, as in Riak's target_n_val: a
# node that owns two partitions less than this far apart appears fewer times
# than it could in the preference lists that span both. Claim only prefers
# such spacing; balance and minimal movement always come first.
TARGET_N = 4


@dataclass(frozen=True, slots=True)
class Member:
    """A node taking part in the ring: claims partitions in proportion to weight."""

    node_id: str
    weight: int = 1
    zone: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not self.node_id:
            raise ValueError(
                f"a member's node_id must be a non-empty string, got {self.node_id!r}"
            )
        if isinstance(self.weight, bool) or not isinstance(self.weight, int) or self.weight < 1:
            raise ValueError(
                f"member {self.node_id!r} has weight {self.weight!r}; weights are integers >= 1"
            )
        if self.zone is not None and (not isinstance(self.zone, str) or not self.zone):
            raise ValueError(
                f"member {self.node_id!r} has zone {self.zone!r}; a zone is a non-empty "
                "string, or None for no zone"
            )


def _canonical_members(members: Iterable[Member], partitions: int) -> tuple[Member, ...]:
    """The members sorted by id (so listing order never matters), validated."""
    validate_partition_count(partitions)
    members = tuple(members)
    if not members:
        raise ValueError("a ring needs at least one member")
    for member in members:
        if not isinstance(member, Member):
            raise ValueError(f"ring members must be Member values, got {member!r}")
    repeated = sorted(node for node, n in Counter(m.node_id for m in members).items() if n > 1)
    if repeated:
        raise ValueError(f"member ids must be unique; repeated: {', '.join(repeated)}")
    if partitions < len(members):
        raise ValueError(
            f"{partitions} partitions cannot give each of {len(members)} members one; "
            "use fewer members or a cluster created with more partitions"
        )
    return tuple(sorted(members, key=lambda m: m.node_id))


def _quotas(members: Sequence[Member], partitions: int) -> tuple[dict[str, int], int]:
    """Each member's fair share of partitions, as integers over a common scale.

    Shares are proportional to weight, except that a member whose share would
    be under one partition gets exactly one: a member owning none would never
    appear in a preference list. Integers keep every comparison exact, so
    every process computes the same claim.
    """
    floored: set[str] = set()
    while True:
        rest = [m for m in members if m.node_id not in floored]
        weight = sum(m.weight for m in rest)
        spare = partitions - len(floored)
        small = {m.node_id for m in rest if m.weight * spare < weight}
        if not small:
            break
        floored |= small
    # The heaviest member is never floored while partitions >= members, so
    # `weight` (the scale) is positive and the quotas sum to partitions * scale.
    quotas = {m.node_id: weight if m.node_id in floored else m.weight * spare for m in members}
    return quotas, weight


class _Claim:
    """The working state of one claim: who owns what, and each member's
    distance from its fair share (`deficit`, in partitions times `scale`)."""

    def __init__(self, members: Sequence[Member], owners: list[str | None]) -> None:
        self.owners = owners
        self.rank = {m.node_id: i for i, m in enumerate(members)}
        self.quota, self.scale = _quotas(members, len(owners))
        self.owned: dict[str, set[int]] = {m.node_id: set() for m in members}
        for partition, owner in enumerate(owners):
            if owner is not None:
                self.owned[owner].add(partition)

    def result(self) -> tuple[str, ...]:
        owners = tuple(o for o in self.owners if o is not None)
        assert len(owners) == len(self.owners), "claim left a partition without an owner"
        return owners

    def deficit(self, node: str) -> int:
        return self.quota[node] - len(self.owned[node]) * self.scale

    def give(self, partition: int, node: str) -> None:
        previous = self.owners[partition]
        if previous is not None:
            self.owned[previous].discard(partition)
        self.owners[partition] = node
        self.owned[node].add(partition)

    def neighbours(self, partition: int) -> dict[str, int]:
        """The owners near `partition` (itself excluded), each at its nearest distance."""
        count = len(self.owners)
        near: dict[str, int] = {}
        for distance in range(1, TARGET_N):
            for other in ((partition - distance) % count, (partition + distance) % count):
                owner = self.owners[other]
                if other != partition and owner is not None and owner not in near:
                    near[owner] = distance
        return near

    def fill(self) -> None:
        """Give every unowned partition to a member, neediest members first."""
        free = [p for p, owner in enumerate(self.owners) if owner is None]
        if free:
            self._place(free, self._shares(len(free)))

    def _shares(self, count: int) -> dict[str, int]:
        # Handing partitions one at a time to the member furthest below its
        # share brings everyone as close to its share as the free partitions
        # allow (within one partition, when starting from nothing).
        heap = [(-self.deficit(node), self.rank[node], node) for node in self.owned]
        heapq.heapify(heap)
        shares = dict.fromkeys(self.owned, 0)
        for _ in range(count):
            negative_deficit, rank, node = heapq.heappop(heap)
            shares[node] += 1
            heapq.heappush(heap, (negative_deficit + self.scale, rank, node))
        return {node: n for node, n in shares.items() if n}

    def _place(self, free: list[int], shares: dict[str, int]) -> None:
        """Hand out `free` clockwise, each member getting exactly its share.

        Like smooth weighted round robin, each partition goes to a member
        whose handout lags furthest behind an even pace, which spreads every
        member's partitions around the ring; among members within one
        partition of the most behind, the one with no partition nearby wins.
        """
        total, given = len(free), dict.fromkeys(shares, 0)
        for step, partition in enumerate(free, start=1):
            lag = {n: shares[n] * step - given[n] * total for n in shares if given[n] < shares[n]}
            most = max(lag.values())
            near = self.neighbours(partition)
            node = max(
                (n for n, behind in lag.items() if behind >= most - total),
                key=lambda n: (near.get(n, TARGET_N), lag[n], -self.rank[n]),
            )
            self.give(partition, node)
            given[node] += 1

    def untangle(self, reach: int = 4 * TARGET_N) -> None:
        """Split a member's adjacent partitions by swapping owners nearby.

        Wherever partitions p and p+1 have the same owner, swap p+1's owner
        with that of a partition a little further on when neither ends up
        next to its own owner. Only for a fresh ring: a swap trades
        partitions between members, which a membership change must not do.
        """
        count = len(self.owners)
        for p in range(count):
            first = (p + 1) % count
            if self.owners[p] != self.owners[first]:
                continue
            for step in range(2, min(reach, count)):
                other = (first + step) % count
                if self._swap_separates(first, other):
                    break

    def _swap_separates(self, first: int, other: int) -> bool:
        a, b = self.owners[first], self.owners[other]
        if a is None or b is None or a == b:
            return False
        self.give(first, b)
        self.give(other, a)
        if self._touches_itself(first) or self._touches_itself(other):
            self.give(first, a)
            self.give(other, b)
            return False
        return True

    def _touches_itself(self, partition: int) -> bool:
        owners, count = self.owners, len(self.owners)
        before, after = (partition - 1) % count, (partition + 1) % count
        return owners[partition] in (owners[before], owners[after])

    def rebalance(self, takers: set[str], changed: set[str]) -> None:
        """Move partitions one at a time while a move brings two members closer
        to their shares.

        Only moves to a `taker` (a member that joined or changed weight) or
        from a member in `changed` are allowed: members that stay as they
        were never trade partitions among themselves, which keeps joins and
        leaves minimal. Each move lowers the sum of squared distances from
        the shares, so the loop ends.
        """
        while (move := self._best_move(takers, changed)) is not None:
            giver, taker = move
            partition = max(
                self.owned[giver],
                key=lambda p: (self._spacing(taker, p), -self._spacing(giver, p), -p),
            )
            self.give(partition, taker)

    def _best_move(self, takers: set[str], changed: set[str]) -> tuple[str, str] | None:
        if len(self.owned) < 2:
            return None
        givers = sorted(self.owned, key=lambda n: (self.deficit(n), self.rank[n]))
        needy = sorted(self.owned, key=lambda n: (-self.deficit(n), self.rank[n]))
        pairs = [(next(g for g in givers if g != t), t) for t in takers]
        pairs += [(g, next(t for t in needy if t != g)) for g in changed]
        best = max(
            pairs,
            key=lambda pair: (
                self.deficit(pair[1]) - self.deficit(pair[0]),
                -self.rank[pair[0]],
                -self.rank[pair[1]],
            ),
            default=None,
        )
        # Worth it only when the giver is more than one partition further
        # above its share than the taker is: otherwise the move just swaps
        # which of the two is off.
        if best is None or self.deficit(best[1]) - self.deficit(best[0]) <= self.scale:
            return None
        return best

    def _spacing(self, node: str, partition: int) -> int:
        """How near `node`'s closest other partition is to `partition` (at most TARGET_N)."""
        owners, count = self.owners, len(self.owners)
        for distance in range(1, min(TARGET_N, (count + 1) // 2 + 1)):
            before, after = (partition - distance) % count, (partition + distance) % count
            if node in (owners[before], owners[after]):
                return distance
        return TARGET_N


RING_FORMAT = 1


@dataclass(frozen=True)
class Ring:
    """An immutable assignment of every partition to one member.

    Build one with `Ring.create` or `Ring.from_dict`, change it with
    `with_members`. `owners[p]` is the node id owning partition p.
    """

    members: tuple[Member, ...]
    owners: tuple[str, ...]
    _walks: dict[int, tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        members = _canonical_members(self.members, len(self.owners))
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "owners", tuple(self.owners))
        ids = {m.node_id for m in members}
        strangers = sorted({o for o in self.owners if o not in ids}, key=str)
        if strangers:
            raise ValueError(f"partitions are owned by non-members: {strangers}")
        idle = sorted(ids - set(self.owners))
        if idle:
            raise ValueError(f"every member must own a partition; these own none: {idle}")

    @classmethod
    def create(cls, members: Iterable[Member], partitions: int) -> "Ring":
        """A first assignment: each member claims its weighted share, spread out."""
        members = _canonical_members(members, partitions)
        claim = _Claim(members, [None] * partitions)
        claim.fill()
        claim.rebalance(takers={m.node_id for m in members}, changed=set())
        claim.untangle()
        return cls(members, claim.result())

    def with_members(self, members: Iterable[Member]) -> "Ring":
        """The ring after joins, leaves and weight changes, moving few partitions.

        Partitions of members that left go to the members furthest below
        their share; then members that joined or changed weight trade
        partitions until everyone is within about one partition of its share.
        Members that stay with the same weight never trade with each other,
        so a partition only moves off a leaving member, onto a joining one,
        or to or from a member whose weight changed. Zones do not affect
        ownership, only preference lists.
        """
        members = _canonical_members(members, self.partition_count)
        old_weights = {m.node_id: m.weight for m in self.members}
        joined = {m.node_id for m in members if m.node_id not in old_weights}
        changed = {
            m.node_id
            for m in members
            if m.node_id in old_weights and old_weights[m.node_id] != m.weight
        }
        staying = {m.node_id for m in members}
        claim = _Claim(members, [o if o in staying else None for o in self.owners])
        claim.fill()
        claim.rebalance(takers=joined | changed, changed=changed)
        return Ring(members, claim.result())

    @property
    def partition_count(self) -> int:
        return len(self.owners)

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(m.node_id for m in self.members)

    def owner(self, partition: int) -> str:
        """The node id that owns `partition`."""
        self._check_partition(partition)
        return self.owners[partition]

    def partitions_of(self, node_id: str) -> list[int]:
        """The partitions `node_id` owns, ascending; empty for a non-member."""
        return [p for p, owner in enumerate(self.owners) if owner == node_id]

    def moves_to(self, new: "Ring") -> list[tuple[int, str, str]]:
        """(partition, old owner, new owner) for each partition that changes hands."""
        if new.partition_count != self.partition_count:
            raise ValueError(
                f"rings differ in partition count ({self.partition_count} and "
                f"{new.partition_count}); partitions are fixed when a cluster is created"
            )
        return [
            (p, old, owner)
            for p, (old, owner) in enumerate(zip(self.owners, new.owners))
            if old != owner
        ]

    def preference_list(self, partition: int, n: int) -> list[str]:
        """The min(n, members) distinct nodes that hold `partition`, in order.

        The owner comes first, then the owners of the next partitions
        clockwise. Where members have zones, the walk takes one node per zone
        in a round, so the list spans min(n, zones) zones; a later round may
        repeat zones (a member without a zone counts as the zone None).
        """
        self._check_partition(partition)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (the number of replicas) must be an integer >= 1, got {n!r}")
        walk = self._walk(partition)
        zone_of = {m.node_id: m.zone for m in self.members}
        wanted = min(n, len(walk))
        chosen: list[str] = []
        while len(chosen) < wanted:
            zones_this_round: set[str | None] = set()
            for node in walk:
                if node not in chosen and zone_of[node] not in zones_this_round:
                    chosen.append(node)
                    zones_this_round.add(zone_of[node])
                    if len(chosen) == wanted:
                        break
        return chosen

    def preference_list_for_key(self, key: bytes, n: int) -> list[str]:
        """The preference list of the partition `key` falls in."""
        return self.preference_list(partition_of(key, self.partition_count), n)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description; owners are indexes into the member list."""
        index = {m.node_id: i for i, m in enumerate(self.members)}
        return {
            "format": RING_FORMAT,
            "partitions": self.partition_count,
            "members": [
                {"id": m.node_id, "weight": m.weight, "zone": m.zone} for m in self.members
            ],
            "owners": [index[owner] for owner in self.owners],
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Ring":
        """The ring `to_dict` described; ValueError if `data` is not such a description."""
        try:
            if data["format"] != RING_FORMAT:
                raise ValueError(f"unknown ring format {data['format']!r}")
            members = [
                Member(node_id=m["id"], weight=m["weight"], zone=m.get("zone"))
                for m in data["members"]
            ]
            owners = data["owners"]
            if len(owners) != data["partitions"]:
                raise ValueError(f"{len(owners)} owners for {data['partitions']} partitions")
            if not all(type(i) is int and 0 <= i < len(members) for i in owners):
                raise ValueError("an owner is not an index into the member list")
            return cls(tuple(members), tuple(members[i].node_id for i in owners))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a ring description: {exc}") from exc

    def __repr__(self) -> str:
        members = ", ".join(
            f"{m.node_id}x{len(self.partitions_of(m.node_id))}" for m in self.members
        )
        return f"Ring(partitions={self.partition_count}, members=[{members}])"

    def _check_partition(self, partition: int) -> None:
        if isinstance(partition, bool) or not isinstance(partition, int):
            raise ValueError(f"a partition is an integer, got {partition!r}")
        if not 0 <= partition < self.partition_count:
            raise ValueError(
                f"partition {partition} is out of range 0..{self.partition_count - 1}"
            )

    def _walk(self, partition: int) -> tuple[str, ...]:
        """Every member once, in the order met walking clockwise from `partition`."""
        walk = self._walks.get(partition)
        if walk is None:
            count, seen = self.partition_count, dict[str, None]()
            for step in range(count):
                seen.setdefault(self.owners[(partition + step) % count])
                if len(seen) == len(self.members):
                    break
            walk = self._walks[partition] = tuple(seen)
        return walk
