"""The proposals and reads of one group that wait for their answer, and how
each is answered (the host hands the answers to the driver's futures).

- A proposal waits for its entry, known by index and term. When the entry
  at that index applies: the same term is its own, answered with the state
  machine's outcome; another term means a later leader overwrote it, and
  it is answered NOT_APPLIED for certain (the log never takes an entry
  back at an index once another is committed there).
- When a snapshot covers the index instead, the entry applied unseen: the
  request id's remembered outcome answers it, or, if forgotten, the answer
  is that the outcome is unknown.
- A read waits for its read state (the index a linearizable read must see),
  then for the state machine to apply that index, and then reads the key.
  A read still waiting for its read state when the leader changes will not
  get one (the rounds it waited on died with the leadership): it is
  refused as not served, which is safe to retry anywhere.

Pure: no I/O; the state machine's reads come in as callables.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kvstore.errors import NOT_APPLIED, UNKNOWN, KVStoreError, Unavailable
from kvstore.leader.raft.messages import Entry, NodeId, ReadState
from kvstore.leader.state_machine import Outcome, RequestRecord, Versioned

Ticket = int


@dataclass(frozen=True)
class ReadValue:
    """A linearizable read's answer: the key's version (0: absent) and value."""

    version: int
    value: bytes | None


Result = Outcome | ReadValue | KVStoreError


@dataclass(frozen=True)
class Release:
    ticket: Ticket
    result: Result


@dataclass(frozen=True)
class _Proposal:
    ticket: Ticket
    term: int
    request_id: bytes


@dataclass(frozen=True)
class _Read:
    ticket: Ticket
    key: bytes


@dataclass
class GroupWaiters:
    group: int
    _proposals: dict[int, _Proposal] = field(default_factory=dict)  # by entry index
    _unindexed_reads: dict[bytes, _Read] = field(default_factory=dict)  # by read context
    _indexed_reads: list[tuple[int, _Read]] = field(default_factory=list)  # (index, read)

    def busy(self) -> bool:
        return bool(self._proposals or self._unindexed_reads or self._indexed_reads)

    def propose(self, ticket: Ticket, entry: Entry, request_id: bytes) -> None:
        self._proposals[entry.index] = _Proposal(ticket, entry.term, request_id)

    def read(self, ticket: Ticket, context: bytes, key: bytes) -> None:
        self._unindexed_reads[context] = _Read(ticket, key)

    def cancel(self, ticket: Ticket) -> None:
        for index, proposal in list(self._proposals.items()):
            if proposal.ticket == ticket:
                del self._proposals[index]
        for context, read in list(self._unindexed_reads.items()):
            if read.ticket == ticket:
                del self._unindexed_reads[context]
        self._indexed_reads = [(i, r) for i, r in self._indexed_reads if r.ticket != ticket]

    # -- answers ------------------------------------------------------------------------

    def applied(self, entries: tuple[Entry, ...], outcomes: dict[int, Outcome]) -> list[Release]:
        released = []
        for entry in entries:
            proposal = self._proposals.pop(entry.index, None)
            if proposal is None:
                continue
            outcome = outcomes.get(entry.index)
            if proposal.term != entry.term:
                released.append(Release(proposal.ticket, Unavailable(
                    f"the write was not applied: the leader of partition {self.group} changed "
                    f"and entry {entry.index} holds another write; retry it",
                    reason="LEADER_CHANGED", metadata={"outcome": NOT_APPLIED})))
            elif outcome is None:  # applied before this node restarted: it cannot tell how
                released.append(Release(proposal.ticket, _unknown(self.group)))
            else:
                released.append(Release(proposal.ticket, outcome))
        return released

    def snapshot_applied(self, index: int,
                         find_request: Callable[[bytes], RequestRecord | None]) -> list[Release]:
        released = []
        for at in sorted(i for i in self._proposals if i <= index):
            proposal = self._proposals.pop(at)
            record = find_request(proposal.request_id)
            if record is not None:
                outcome = record.outcome
                released.append(Release(proposal.ticket,
                                        replace(outcome, duplicate=outcome.index != at)))
            else:
                released.append(Release(proposal.ticket, _unknown(self.group)))
        return released

    def read_state(self, state: ReadState) -> None:
        read = self._unindexed_reads.pop(state.context, None)
        if read is not None:
            self._indexed_reads.append((state.index, read))

    def reads_done(self, applied: int,
                   read: Callable[[bytes], Versioned | None]) -> list[Release]:
        released, waiting = [], []
        for index, pending in self._indexed_reads:
            if index <= applied:
                value = read(pending.key)
                result = ReadValue(0, None) if value is None else ReadValue(value.version,
                                                                            value.value)
                released.append(Release(pending.ticket, result))
            else:
                waiting.append((index, pending))
        self._indexed_reads = waiting
        return released

    def leader_changed(self, refusal: KVStoreError) -> list[Release]:
        released = [Release(r.ticket, refusal) for r in self._unindexed_reads.values()]
        self._unindexed_reads.clear()
        return released

    def fail_all(self, error: KVStoreError) -> list[Release]:
        released = [Release(p.ticket, error) for p in self._proposals.values()]
        released += [Release(r.ticket, error) for r in self._unindexed_reads.values()]
        released += [Release(r.ticket, error) for _, r in self._indexed_reads]
        self._proposals.clear()
        self._unindexed_reads.clear()
        self._indexed_reads.clear()
        return released


def _unknown(group: int) -> Unavailable:
    return Unavailable(f"partition {group} applied the write's entry unseen (from a snapshot) "
                       "and no longer remembers its request id: whether it applied is unknown",
                       reason="OUTCOME_UNKNOWN", metadata={"outcome": UNKNOWN})


def not_leader(node: NodeId, group: int, leader: NodeId | None) -> Unavailable:
    """The refusal of a write or read sent to a node that does not lead the
    partition: nothing was done; the leader it knows, if any, is named."""
    if leader is not None and leader != node:
        where = f"the leader is {leader}: send it there"
    else:
        where = "no leader is known yet: retry shortly"
    metadata = {"outcome": NOT_APPLIED}
    if leader is not None and leader != node:
        metadata["leader"] = leader
    return Unavailable(f"{node} is not the leader of partition {group}; {where}",
                       reason="NOT_LEADER", metadata=metadata)
