"""Who is in the cluster: its members' ids and addresses, the replication
factor N, the partition count Q and the mode, and the ring built from them.

Membership is static for now: every process reads the same `[cluster]` table
of its config file, and the ring is a pure function of it, so every node and
coordinator computes the same preference lists. Pure: no I/O.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from kvstore.placement.ring import DEFAULT_PARTITIONS, Member, Ring, partition_of

# leaderless: Dynamo's quorums (kvstore.leaderless); leader: a Raft group
# per partition on its N replicas (kvstore.leader).
MODES = ("leaderless", "leader")


class MembershipError(ValueError):
    """The cluster description is inconsistent; the message says how."""


@dataclass(frozen=True)
class ClusterMember:
    node_id: str
    address: str  # HOST:PORT other processes reach it on
    weight: int = 1
    zone: str | None = None


@dataclass(frozen=True)
class ClusterSpec:
    members: tuple[ClusterMember, ...]
    replicas: int = 3
    partitions: int = DEFAULT_PARTITIONS
    mode: str = "leaderless"
    last_write_wins: bool = False
    _by_id: dict[str, ClusterMember] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.members:
            raise MembershipError("a cluster needs at least one member")
        by_id = {m.node_id: m for m in self.members}
        if len(by_id) != len(self.members):
            raise MembershipError("member ids must be unique")
        if len({m.address for m in self.members}) != len(self.members):
            raise MembershipError("member addresses must be unique")
        if not 1 <= self.replicas <= len(self.members):
            raise MembershipError(
                f"replicas (N) must be 1..{len(self.members)} (the number of members), "
                f"got {self.replicas}"
            )
        if self.mode not in MODES:
            raise MembershipError(
                f"mode {self.mode!r} is not available; choose one of {', '.join(MODES)}"
            )
        object.__setattr__(self, "_by_id", by_id)
        try:
            _ = self.ring  # build it now so a bad spec fails at load time
        except ValueError as exc:
            raise MembershipError(str(exc)) from exc

    @classmethod
    def single(cls, node_id: str, address: str, partitions: int) -> "ClusterSpec":
        """A node started with no peers: a one-node cluster, N=1."""
        return cls((ClusterMember(node_id, address),), replicas=1, partitions=partitions)

    @cached_property
    def ring(self) -> Ring:
        members = [Member(m.node_id, m.weight, m.zone) for m in self.members]
        return Ring.create(members, self.partitions)

    def member(self, node_id: str) -> ClusterMember:
        try:
            return self._by_id[node_id]
        except KeyError:
            raise MembershipError(f"{node_id!r} is not a member of the cluster") from None

    def partition_of(self, key: bytes) -> int:
        return partition_of(key, self.partitions)

    def preference_list(self, key: bytes) -> list[str]:
        """The N node ids that hold `key`, in preference order."""
        return self._preference_lists[self.partition_of(key)]

    @cached_property
    def _preference_lists(self) -> list[list[str]]:
        # One per partition, computed once: every request needs its key's.
        return [self.ring.preference_list(p, self.replicas) for p in range(self.partitions)]

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> "ClusterSpec":
        """From a config file's [cluster] table (see the README)."""
        known = {"members", "replicas", "partitions", "mode", "last_write_wins"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise MembershipError(f"unknown [cluster] setting(s): {', '.join(unknown)}")
        raw_members = table.get("members")
        if not isinstance(raw_members, list) or not raw_members:
            raise MembershipError("[cluster] needs members = [{id = ..., address = ...}, ...]")
        members = []
        for index, raw in enumerate(raw_members):
            if not isinstance(raw, Mapping) or not {"id", "address"} <= set(raw):
                raise MembershipError(f"[cluster] members[{index}] needs an id and an address")
            extra = sorted(set(raw) - {"id", "address", "weight", "zone"})
            if extra:
                raise MembershipError(f"[cluster] members[{index}] has unknown key(s) {extra}")
            members.append(ClusterMember(
                str(raw["id"]), str(raw["address"]), int(raw.get("weight", 1)),
                str(raw["zone"]) if raw.get("zone") else None,
            ))
        return cls(
            tuple(members),
            replicas=int(table.get("replicas", 3)),
            partitions=int(table.get("partitions", DEFAULT_PARTITIONS)),
            mode=str(table.get("mode", "leaderless")),
            last_write_wins=bool(table.get("last_write_wins", False)),
        )

    def to_toml(self) -> str:
        lines = [
            "[cluster]",
            f"replicas = {self.replicas}",
            f"partitions = {self.partitions}",
            f'mode = "{self.mode}"',
            f"last_write_wins = {'true' if self.last_write_wins else 'false'}",
        ]
        for m in self.members:
            lines += ["", "[[cluster.members]]", f'id = "{m.node_id}"', f'address = "{m.address}"',
                      f"weight = {m.weight}"]
            if m.zone:
                lines.append(f'zone = "{m.zone}"')
        return "\n".join(lines) + "\n"
