"""The checks a chaos run must pass, as pure functions of its history and of
the final state of the keys.

- `check_lost_writes`: no acknowledged put is lost.
- `check_never_written`: no read returned a value no put had written.
- `check_quorum_reads`: with a strict quorum and R + W > N, a read sees
  every write acknowledged before it began.
- `check_duplicate_siblings`: no read returned one value twice (a write
  applied twice, e.g. a retry the store did not recognise).
- `check_superseded`: no write that an acknowledged write's context covered
  is among its key's final siblings (nothing deleted or replaced came back).
- `divergent_keys`: which keys' replicas do not hold equal states.
- `differing_partitions`: which partitions' replicas report different
  Merkle roots (and `partitions_with_keys`: how many hold any key).

Pure: no I/O, no clock. Every check flags only what no legitimate execution
could produce (the lost-write check under the one assumption below, about
writes of unknown outcome), and says how much it could check.

Supersession. A put's value may rightly be gone from the final state when a
later write replaced it: a blind write applied at a replica that held the
value, or a write (or delete) with a context that covered it. Either way the
replacing write was applied after the put was invoked. A write is applied
(if ever) no later than its completion when acknowledged; when its outcome is
unknown, the store may still apply it after the client gave up (a request
held by a paused process runs when the process resumes), so it counts as
possibly applied until `unknown_horizon` seconds after its completion. A
definite failure was never applied. So an acknowledged put is *checkable*
when no other write to its key could have been applied after it was invoked;
a checkable put whose value is not among the key's final siblings is lost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from chaos.history import FAIL, OK, UNKNOWN, Op, text
from kvstore import causal_context
from kvstore.causality.versions import DVVSet, VersionVector


@dataclass(frozen=True)
class LostWrite:
    key: str
    value: str
    invoke: float
    complete: float
    final_siblings: tuple[str, ...]


@dataclass(frozen=True)
class LostWritesReport:
    acknowledged_puts: int
    checked_puts: int  # acknowledged puts nothing could have superseded
    checked_keys: int  # keys with at least one checked put
    lost: list[LostWrite] = field(default_factory=list)
    unread_keys: list[str] = field(default_factory=list)  # no final state to check against


def _effect_end(write: Op, unknown_horizon: float) -> float | None:
    """The latest time `write` may have been applied; None: never applied."""
    if write.outcome == OK:
        return write.complete
    if write.outcome == UNKNOWN:
        return write.complete + unknown_horizon
    assert write.outcome == FAIL
    return None


def check_lost_writes(ops: Iterable[Op], final: Mapping[str, Sequence[str] | None],
                      unknown_horizon: float) -> LostWritesReport:
    """Acknowledged puts missing from `final` (key -> its final siblings; None
    or absent: the key could not be read) that nothing could have superseded."""
    writes_by_key: dict[str, list[tuple[float, Op]]] = defaultdict(list)
    for op in ops:
        if op.is_write and (end := _effect_end(op, unknown_horizon)) is not None:
            writes_by_key[op.key].append((end, op))
    acknowledged = checked = 0
    checked_keys: set[str] = set()
    lost: list[LostWrite] = []
    unread: set[str] = set()
    for key, writes in writes_by_key.items():
        writes.sort(key=lambda entry: entry[0], reverse=True)
        for _, put in writes:
            if put.kind != "put" or put.outcome != OK:
                continue
            acknowledged += 1
            # The latest effect of any *other* write: the first or second
            # entry, since they are sorted by effect time.
            others = (e for e, write in writes[:2] if write is not put)
            if next(others, float("-inf")) > put.invoke:
                continue  # another write may have replaced it
            siblings = final.get(key)
            if siblings is None:
                unread.add(key)
                continue
            checked += 1
            checked_keys.add(key)
            if put.value not in siblings:
                assert put.value is not None
                lost.append(LostWrite(key, put.value, put.invoke, put.complete, tuple(siblings)))
    return LostWritesReport(acknowledged, checked, len(checked_keys),
                            sorted(lost, key=lambda w: w.invoke), sorted(unread))


@dataclass(frozen=True)
class StaleRead:
    key: str
    value: str  # the acknowledged put's value the read did not return
    put_complete: float
    read_invoke: float
    read_complete: float
    siblings: tuple[str, ...]


@dataclass(frozen=True)
class QuorumReadsReport:
    checked: int  # (strict put, later read) pairs with R + W > N checked
    stale: list[StaleRead] = field(default_factory=list)


def check_quorum_reads(ops: Iterable[Op], replicas: int, unknown_horizon: float,
                       disk_losses: Sequence[float] = ()) -> QuorumReadsReport:
    """The strict-quorum promise: once a put with `strict` (no stand-ins) is
    acknowledged by W replicas, a get invoked later that R replicas answered,
    with R + W > N, returns its value, unless another write to the key may
    have replaced it before the get completed (one not known to have failed,
    invoked before the get completed, that may have been applied after the
    put was invoked). A disk lost (`disk_losses`: when a node lost its
    data) between the put's invocation and the get's completion voids the
    promise for that pair: quorums intersect only on replicas that keep
    what they acknowledged."""
    writes_by_key: dict[str, list[Op]] = defaultdict(list)
    gets_by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.is_write and op.outcome != FAIL:
            writes_by_key[op.key].append(op)
        elif op.kind == "get" and op.outcome == OK and op.replicas:
            gets_by_key[op.key].append(op)
    checked = 0
    stale: list[StaleRead] = []
    for key, writes in writes_by_key.items():
        for put in writes:
            if put.kind != "put" or put.outcome != OK or not put.strict or not put.replicas:
                continue
            for get in gets_by_key.get(key, ()):
                if get.invoke <= put.complete or get.replicas + put.replicas <= replicas:
                    continue
                if any(put.invoke < lost < get.complete for lost in disk_losses):
                    continue
                if any(other is not put and other.invoke < get.complete
                       and (_effect_end(other, unknown_horizon) or 0.0) > put.invoke
                       for other in writes):
                    continue  # may have been replaced
                checked += 1
                assert put.value is not None
                if put.value not in (get.siblings or ()):
                    stale.append(StaleRead(key, put.value, put.complete, get.invoke,
                                           get.complete, get.siblings or ()))
    return QuorumReadsReport(checked, sorted(stale, key=lambda s: s.read_invoke))


@dataclass(frozen=True)
class NeverWritten:
    key: str
    value: str
    read_invoke: float
    read_complete: float
    why: str  # "no put wrote it" or "its put was invoked after the read completed"


@dataclass(frozen=True)
class NeverWrittenReport:
    values_read: int
    never_written: list[NeverWritten] = field(default_factory=list)


def check_never_written(ops: Iterable[Op]) -> NeverWrittenReport:
    """Every sibling of every successful read must be the value of a put to
    the same key, whatever its outcome, invoked before the read completed."""
    ops = list(ops)
    put_invoked: dict[tuple[str, str], float] = {}
    for op in ops:
        if op.kind == "put" and op.value is not None:
            key = (op.key, op.value)
            put_invoked[key] = min(op.invoke, put_invoked.get(key, op.invoke))
    values_read = 0
    bad: list[NeverWritten] = []
    for op in ops:
        if op.kind != "get" or op.outcome != OK:
            continue
        for value in op.siblings or ():
            values_read += 1
            invoked = put_invoked.get((op.key, value))
            if invoked is None:
                bad.append(NeverWritten(op.key, value, op.invoke, op.complete, "no put wrote it"))
            elif invoked > op.complete:
                bad.append(NeverWritten(op.key, value, op.invoke, op.complete,
                                        f"its put was invoked at {invoked:.3f} s, "
                                        "after the read completed"))
    return NeverWrittenReport(values_read, bad)


@dataclass(frozen=True)
class Resurrected:
    key: str
    value: str  # the final sibling that should have been gone
    dot: str  # its write event, "node:counter"
    superseded_by: str  # the acknowledged write whose context covered it
    superseded_at: float  # when that write completed


@dataclass(frozen=True)
class SupersededReport:
    context_writes: int  # acknowledged writes that passed a context
    checked_keys: int  # keys with such a write and an agreed final state
    resurrected: list[Resurrected] = field(default_factory=list)


def check_superseded(ops: Iterable[Op], agreed: Mapping[str, DVVSet | None]) -> SupersededReport:
    """A write (or delete) applied with a context replaces every sibling that
    context covers, and every replica that merges its state drops them too:
    once it is acknowledged, no sibling whose dot the context covers may be
    among the key's final siblings (`agreed`: key -> the state every replica
    ended with). One that is came back: its history was lost, e.g. a
    tombstone collected while a copy of the older value lived on. Sound
    whatever else happened: a write applied twice (a retry at two replicas)
    has two dots, and the context covers only those it saw."""
    contexts: dict[str, list[tuple[VersionVector, Op]]] = defaultdict(list)
    writes = 0
    for op in ops:
        if op.is_write and op.outcome == OK and op.context:
            writes += 1
            contexts[op.key].append((causal_context.decode(bytes.fromhex(op.context)), op))
    checked = 0
    back: list[Resurrected] = []
    for key, covering in contexts.items():
        if key not in agreed:
            continue  # the key's replicas never agreed: reported elsewhere
        checked += 1
        state = agreed[key]
        for sibling in () if state is None else state.live:
            for context, write in covering:
                if context.counters.get(sibling.dot.node_id, 0) >= sibling.dot.counter:
                    back.append(Resurrected(
                        key, text(sibling.value), f"{sibling.dot.node_id}:{sibling.dot.counter}",
                        f"{write.kind} by client {write.client} at {write.invoke:.3f} s",
                        write.complete))
                    break
    return SupersededReport(writes, checked, back)


@dataclass(frozen=True)
class DuplicateSibling:
    key: str
    value: str
    read_invoke: float
    siblings: tuple[str, ...]


def check_duplicate_siblings(ops: Iterable[Op]) -> list[DuplicateSibling]:
    """Reads that returned the same value as two siblings: since every put
    writes a value of its own, one put was applied twice."""
    found = []
    for op in ops:
        if op.kind == "get" and op.outcome == OK and op.siblings:
            seen: set[str] = set()
            for value in op.siblings:
                if value in seen:
                    found.append(DuplicateSibling(op.key, value, op.invoke, op.siblings))
                    break
                seen.add(value)
    return found


@dataclass(frozen=True)
class DuplicateDots:
    key: str
    value: str
    dots: tuple[str, ...]  # "node:counter" of each sibling holding the value


def duplicate_dots(states: Mapping[str, DVVSet | None]) -> list[DuplicateDots]:
    """Stored states holding one value in several live siblings, with their
    dots: which replicas applied the same write."""
    found = []
    for key, state in sorted(states.items()):
        by_value: dict[bytes, list[str]] = defaultdict(list)
        for sibling in state.live if state is not None else ():
            by_value[sibling.value].append(f"{sibling.dot.node_id}:{sibling.dot.counter}")
        found += [DuplicateDots(key, value.decode("utf-8", "backslashreplace"), tuple(dots))
                  for value, dots in by_value.items() if len(dots) > 1]
    return found


def divergent_keys(states: Mapping[str, Mapping[str, DVVSet | None]]) -> list[str]:
    """Keys whose replicas (node id -> state, None: holds nothing) differ."""
    divergent = []
    for key, by_node in states.items():
        distinct = list(by_node.values())
        if any(state != distinct[0] for state in distinct[1:]):
            divergent.append(key)
    return sorted(divergent)


Roots = Mapping[str, Mapping[int, bytes]]  # node id -> partition -> its Merkle root there


def differing_partitions(roots: Roots, replicas_of: Mapping[int, Sequence[str]]) -> list[int]:
    """Partitions (-> their replicas' node ids) whose replicas do not all
    report the same root. A replica that reported none (it did not answer)
    counts as differing: agreement must be seen, not assumed. A replica
    holding no keys of a partition reports the empty tree's root, so two
    such replicas agree and one with keys does not."""
    differing = []
    for partition, nodes in sorted(replicas_of.items()):
        reported = [roots.get(node, {}).get(partition) for node in nodes]
        if None in reported or len(set(reported)) > 1:
            differing.append(partition)
    return differing


def partitions_with_keys(roots: Roots, replicas_of: Mapping[int, Sequence[str]],
                         empty_root: bytes) -> int:
    """Partitions some replica of which reports a root other than the empty
    tree's: equal roots prove something only where there are keys."""
    return sum(any(roots.get(node, {}).get(partition, empty_root) != empty_root
                   for node in nodes)
               for partition, nodes in replicas_of.items())
