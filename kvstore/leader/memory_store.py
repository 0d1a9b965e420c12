"""A `RaftStore` in plain dicts with `LmdbRaftStore`'s contract, for tests of
the host and for simulations.

Durability model: everything a `write` returned is durable, and nothing
else. A pass works on copies of the groups it touches and publishes them
only once all of it succeeded, so a crash (an exception, or a pass never
written) loses exactly that pass. A simulated process crash keeps this
object and builds a new host on it, which loads what was committed.

It counts its passes and fsyncs (`writes`, `syncs`), so tests can check
that a pass is one transaction for every group with work.

Pure: no I/O, no threads, no clock.
"""

import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from kvstore.leader.persistence import (
    GroupApplied, LoadedGroup, PassResult, PassWrite, write_pass,
)
from kvstore.leader.raft.messages import Entry, HardState, Snapshot
from kvstore.leader.raft.storage import limit_size
from kvstore.leader.restore_fence import Fence
from kvstore.leader.state_machine import REQUEST_ID_TTL_MS, RequestRecord, Versioned


@dataclass
class _Group:
    entries: dict[int, Entry] = field(default_factory=dict)
    hard_state: HardState = HardState()
    snapshot: Snapshot = Snapshot()
    compacted: tuple[int, int] = (0, 0)
    applied: int = 0
    data: dict[bytes, Versioned] = field(default_factory=dict)
    requests: dict[bytes, RequestRecord] = field(default_factory=dict)
    request_order: list[tuple[int, bytes]] = field(default_factory=list)  # (proposed_ms, id)

    def copy(self) -> "_Group":
        return replace(self, entries=dict(self.entries), data=dict(self.data),
                       requests=dict(self.requests), request_order=list(self.request_order))

    def last_index(self) -> int:
        return max(self.entries, default=self.compacted[0])


class _Partition:
    """`PartitionState` over one group's copy."""

    def __init__(self, group: _Group) -> None:
        self._g = group

    def applied_index(self) -> int:
        return self._g.applied

    def set_applied_index(self, index: int) -> None:
        self._g.applied = index

    def get(self, key: bytes) -> Versioned | None:
        return self._g.data.get(key)

    def put(self, key: bytes, state: Versioned) -> None:
        self._g.data[bytes(key)] = state

    def delete(self, key: bytes) -> None:
        self._g.data.pop(key, None)

    def request(self, request_id: bytes) -> RequestRecord | None:
        return self._g.requests.get(request_id)

    def remember(self, request_id: bytes, record: RequestRecord) -> None:
        old = self._g.requests.get(request_id)
        if old is not None:
            self._g.request_order.remove((old.proposed_ms, request_id))
        self._g.requests[bytes(request_id)] = record
        bisect.insort(self._g.request_order, (record.proposed_ms, bytes(request_id)))

    def forget_requests(self, up_to_ms: int, limit: int) -> None:
        order = self._g.request_order
        while limit and order and order[0][0] <= up_to_ms:
            _, request_id = order.pop(0)
            del self._g.requests[request_id]
            limit -= 1

    def items(self) -> Iterator[tuple[bytes, Versioned]]:
        return iter(sorted(self._g.data.items()))

    def requests(self) -> Iterator[tuple[bytes, RequestRecord]]:
        return iter(sorted(self._g.requests.items()))

    def clear(self) -> None:
        self._g.data.clear()
        self._g.requests.clear()
        self._g.request_order.clear()


class _Transaction:
    def __init__(self, committed: dict[int, _Group]) -> None:
        self._committed = committed
        self.touched: dict[int, _Group] = {}

    def _group(self, group: int) -> _Group:
        if group not in self.touched:
            self.touched[group] = self._committed.get(group, _Group()).copy()
        return self.touched[group]

    def partition(self, group: int) -> _Partition:
        return _Partition(self._group(group))

    def term(self, group: int, index: int) -> int:
        g = self._group(group)
        return g.compacted[1] if index == g.compacted[0] else g.entries[index].term

    def compacted_index(self, group: int) -> int:
        return self._group(group).compacted[0]

    def snapshot_index(self, group: int) -> int:
        return self._group(group).snapshot.index

    def put_entries(self, group: int, entries: Sequence[Entry]) -> None:
        g = self._group(group)
        for index in [i for i in g.entries if i >= entries[0].index]:
            del g.entries[index]
        g.entries.update((e.index, e) for e in entries)

    def drop_entries(self, group: int, through: int, term: int) -> None:
        g = self._group(group)
        for index in [i for i in g.entries if i <= through]:
            del g.entries[index]
        g.compacted = (through, term)

    def reset_log(self, group: int, snapshot: Snapshot) -> None:
        g = self._group(group)
        g.entries.clear()
        g.snapshot = snapshot
        g.compacted = (snapshot.index, snapshot.term)

    def put_snapshot(self, group: int, snapshot: Snapshot) -> None:
        self._group(group).snapshot = snapshot

    def put_hard_state(self, group: int, state: HardState) -> None:
        self._group(group).hard_state = state


class MemoryRaftStore:
    def __init__(self, *, request_id_ttl_ms: int = REQUEST_ID_TTL_MS) -> None:
        self._ttl_ms = request_id_ttl_ms
        self._groups: dict[int, _Group] = {}
        self.writes = 0  # passes committed
        self.syncs = 0  # of which fsynced
        self.last_write: PassWrite | None = None

    def load(self, group: int, tail_entries: int) -> LoadedGroup:
        g = self._groups.get(group, _Group())
        last = g.last_index()
        tail = tuple(g.entries[i] for i in range(max(g.compacted[0] + 1, last - tail_entries + 1),
                                                 last + 1))
        return LoadedGroup(g.hard_state, g.snapshot.index, g.snapshot.term, *g.compacted,
                           last_index=last, applied=g.applied, tail=tail)

    def read_entries(self, group: int, low: int, high: int,
                     max_bytes: int | None) -> list[Entry]:
        entries = self._groups[group].entries
        return limit_size([entries[i] for i in range(low, high)], max_bytes)

    def read_snapshot(self, group: int) -> Snapshot:
        return self._groups[group].snapshot if group in self._groups else Snapshot()

    def read(self, group: int, key: bytes) -> Versioned | None:
        g = self._groups.get(group)
        return None if g is None else g.data.get(key)

    def find_request(self, group: int, request_id: bytes) -> RequestRecord | None:
        g = self._groups.get(group)
        return None if g is None else g.requests.get(request_id)

    def write(self, batch: PassWrite) -> PassResult:
        txn = _Transaction(self._groups)
        result = write_pass(txn, batch, request_id_ttl_ms=self._ttl_ms)
        self._groups.update((group, txn.touched[group]) for group in txn.touched
                            if not _failed(result.groups.get(group)))
        self.writes += 1
        self.syncs += batch.sync
        self.last_write = batch
        return result

    def groups(self) -> list[int]:
        return sorted(self._groups)

    def fence(self, fences: Mapping[int, Fence]) -> None:
        """As `LmdbRaftStore.fence`."""
        for group, fence in fences.items():
            g = self._groups.setdefault(group, _Group())
            for index in [i for i in g.entries if i > fence.keep_through]:
                del g.entries[index]
            g.hard_state = fence.hard_state

    def copy(self) -> "MemoryRaftStore":
        """Everything it holds now, as a new store (a backup, in simulations)."""
        copy = MemoryRaftStore(request_id_ttl_ms=self._ttl_ms)
        copy._groups = {group: g.copy() for group, g in self._groups.items()}
        return copy

    def keys(self, group: int) -> dict[bytes, Versioned]:
        """The group's state machine, for tests."""
        g = self._groups.get(group)
        return {} if g is None else dict(g.data)


def _failed(applied: GroupApplied | None) -> bool:
    return applied is not None and applied.failure is not None
