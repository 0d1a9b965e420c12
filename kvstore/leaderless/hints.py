"""Hinted handoff policy: who stands in for a down replica, how many hints a
node may hold for each target, and how fast they are replayed.

Sloppy quorum (Dynamo, section 4.6): when a preference-list node is down,
the next healthy node along the ring takes its write together with a hint
naming the intended owner, and hands it over once the owner is back. This
module owns only the decisions and the bookkeeping: which nodes take a
write (`fallback_nodes`), how many hints and bytes are pending per target
and whether one more fits (`HintBook`), and the replay pace
(`ReplayLimiter`). The hints themselves are stored durably by the storage
node (LMDB), which rebuilds the book from them at start (`HintBook.load`)
and removes a hint only once its owner has durably acknowledged it.

Pure: no I/O, no asyncio, no clock; times are floats (seconds, one
monotonic clock) passed in by the caller.
"""

import math
from collections.abc import Hashable, Iterable, Sequence, Set
from dataclasses import dataclass
from typing import NamedTuple, TypeAlias

MIB = 1 << 20

HintId: TypeAlias = Hashable  # whatever names a hint in storage, e.g. its LMDB key


def _finite(value: object) -> float:
    """`value` as a float, or NaN (which fails every bound) if it is not an
    int or a float; bools are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _require(ok: bool, name: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _check_count(name: str, value: object) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    _require(ok, name, "an integer >= 0", value)


def _check_time(now: object) -> None:
    _require(math.isfinite(_finite(now)), "a time", "a finite number of seconds", now)


@dataclass(frozen=True)
class HintPolicy:
    """Bounds on the hints held for one target node, and the replay pace.

    The bounds are what back-pressure means here: a node that holds
    `max_hints_per_target` hints or `max_bytes_per_target` bytes of hints
    for a target refuses to take more for it, and the coordinator fails that
    replica of the write instead of letting hints grow without limit while
    the target stays down. 0 disables hinted handoff.
    """

    max_hints_per_target: int = 10_000
    max_bytes_per_target: int = 64 * MIB
    replay_rate_per_second: float = 500.0

    def __post_init__(self) -> None:
        _check_count("max_hints_per_target", self.max_hints_per_target)
        _check_count("max_bytes_per_target", self.max_bytes_per_target)
        rate = _finite(self.replay_rate_per_second)
        _require(0 < rate < math.inf, "replay_rate_per_second", "a finite number > 0",
                 self.replay_rate_per_second)


class Pending(NamedTuple):
    count: int  # type: ignore[assignment]  # shadows tuple.count, never called on it
    bytes: int


class HintBook:
    """The hints a node holds, by target node and hint id, with their sizes.

    `refusal` alone decides the policy's bounds and says why a hint does
    not fit: `admit` counts a hint only when it fits, and the storing
    replica asks it before writing a hint durably (its answer is that
    replica's error). `load` takes whatever storage holds, even beyond the
    bounds (after the policy was tightened, say): those hints are durable
    writes and must not be dropped; the target just admits no more until
    acknowledgements bring it back under them.
    """

    def __init__(self, policy: HintPolicy = HintPolicy()) -> None:
        self.policy = policy
        self._sizes: dict[str, dict[HintId, int]] = {}  # target -> hint id -> size
        self._bytes: dict[str, int] = {}  # target -> sum of its sizes

    def admit(self, target: str, hint_id: HintId, size: int) -> bool:
        """Count a new hint for `target` if it fits; False (nothing counted)
        if it would pass either bound. Admitting a hint already pending, with
        the same size, is a no-op that answers True (a retried write)."""
        _check_count("size", size)
        sizes = self._sizes.get(target, {})
        if hint_id in sizes:
            if sizes[hint_id] != size:
                raise ValueError(
                    f"hint {hint_id!r} for {target!r} is already pending with size "
                    f"{sizes[hint_id]}, not {size}"
                )
            return True
        if self.refusal(target, size) is not None:
            return False
        self.count_stored(target, hint_id, size)
        return True

    def count_stored(self, target: str, hint_id: HintId, size: int) -> None:
        """Count a hint that is already durable, whatever the bounds (as
        `load` does): a node checks `refusal` before it stores a hint, and
        hints stored concurrently may together pass a bound by the few in
        flight; once stored they must be counted, or their acknowledgement
        would never be."""
        _check_count("size", size)
        sizes = self._sizes.setdefault(target, {})
        if hint_id in sizes:
            return
        sizes[hint_id] = size
        self._bytes[target] = self._bytes.get(target, 0) + size

    def refusal(self, target: str, size: int) -> str | None:
        """Why one more hint of `size` bytes for `target` would pass a bound
        (a phrase whose subject is the node keeping the hints), or None if
        it fits."""
        _check_count("size", size)
        count, held = self.pending(target)
        policy = self.policy
        if count < policy.max_hints_per_target and held + size <= policy.max_bytes_per_target:
            return None
        return (f"holds {count} hints ({held} bytes) for {target}, its bound "
                f"(max_hints_per_target={policy.max_hints_per_target}, "
                f"max_bytes_per_target={policy.max_bytes_per_target}); "
                f"bring {target} back or write with fewer replicas")

    def acknowledged(self, target: str, hint_id: HintId) -> bool:
        """Forget a hint its owner has durably acknowledged; True if it was
        pending (acknowledgements may repeat after a retried replay)."""
        sizes = self._sizes.get(target)
        if sizes is None or hint_id not in sizes:
            return False
        self._bytes[target] -= sizes.pop(hint_id)
        if not sizes:
            del self._sizes[target], self._bytes[target]
        return True

    def is_pending(self, target: str, hint_id: HintId) -> bool:
        return hint_id in self._sizes.get(target, {})

    def pending(self, target: str) -> Pending:
        return Pending(len(self._sizes.get(target, {})), self._bytes.get(target, 0))

    def all_pending(self) -> dict[str, Pending]:
        """Every target with pending hints, sorted by id."""
        return {target: self.pending(target) for target in sorted(self._sizes)}

    def load(self, entries: Iterable[tuple[str, HintId, int]]) -> None:
        """Replace the book with (target, hint id, size) for every stored
        hint. A repeated (target, hint id) is a ValueError and leaves the
        book as it was."""
        sizes: dict[str, dict[HintId, int]] = {}
        for target, hint_id, size in entries:
            _check_count("size", size)
            of_target = sizes.setdefault(target, {})
            if hint_id in of_target:
                raise ValueError(f"hint {hint_id!r} for {target!r} is stored twice")
            of_target[hint_id] = size
        self._sizes = sizes
        self._bytes = {target: sum(of.values()) for target, of in sizes.items()}


class ReplayLimiter:
    """A token bucket: `rate_per_second` tokens a second, at most `burst`
    held, full at the start. Over any span of t seconds, at most
    rate_per_second * t + burst tokens are taken.

    A time earlier than the latest one seen adds no tokens (the bucket never
    refills backwards).
    """

    def __init__(self, rate_per_second: float, burst: float) -> None:
        _require(0 < _finite(rate_per_second) < math.inf, "rate_per_second",
                 "a finite number > 0", rate_per_second)
        _require(1 <= _finite(burst) < math.inf, "burst", "a finite number >= 1", burst)
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None  # when _tokens was last brought up to date

    def available(self, now: float) -> float:
        """Tokens that could be taken at `now`."""
        _check_time(now)
        return self._tokens_at(now)

    def take(self, now: float, n: float = 1) -> bool:
        """Take `n` tokens if there are that many at `now`; else take none."""
        self._check_request(now, n)
        self._tokens = self._tokens_at(now)
        if self._last is None or now > self._last:
            self._last = now
        if self._tokens < n:
            return False
        self._tokens -= n
        return True

    def wait_time(self, now: float, n: float = 1) -> float:
        """Seconds from `now` until `n` tokens are there: the least w (to
        within float rounding) for which `take(now + w, n)` succeeds if
        nothing else is taken meanwhile; 0.0 if they are there now."""
        self._check_request(now, n)
        if self._tokens_at(now) >= n:
            return 0.0
        start = now if self._last is None else max(now, self._last)
        # The division and the additions round; step up to the first float
        # time at which the bucket really holds n, first in the units of the
        # absolute time, then in those of the returned difference.
        ready = start + (n - self._tokens_at(start)) / self.rate_per_second
        while self._tokens_at(ready) < n:
            ready = math.nextafter(ready, math.inf)
        wait = ready - now
        while self._tokens_at(now + wait) < n:
            wait = math.nextafter(wait, math.inf)
        return wait

    def _tokens_at(self, now: float) -> float:
        if self._last is None or now <= self._last:
            return self._tokens
        return min(float(self.burst), self._tokens + (now - self._last) * self.rate_per_second)

    def _check_request(self, now: float, n: float) -> None:
        _check_time(now)
        _require(0 <= _finite(n) < math.inf, "n", "a finite number >= 0", n)
        if n > self.burst:
            raise ValueError(f"n={n!r} tokens can never be taken at once: burst is {self.burst!r}")


class WriteTarget(NamedTuple):
    """A node to send a write to; `intended_owner` is None when the node is
    a replica of the key itself, else the down replica it stands in for
    (the write goes with a hint naming that owner)."""

    node: str
    intended_owner: str | None


def fallback_nodes(
    preference_list: Sequence[str], ring_walk: Iterable[str], down: Set[str], n: int
) -> list[WriteTarget]:
    """Where a write goes under sloppy quorum, one target per owner.

    The owners are the first `n` nodes of `preference_list`. A healthy owner
    takes the write itself; each down owner, in preference-list order, gets
    the next healthy node of `ring_walk` (the nodes met walking clockwise
    from the key's partition; owners in it are skipped) not already chosen.
    A down owner left without a stand-in is left out, so the list is shorter
    than the owners when too few healthy nodes exist. Ordered by owner.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the number of replicas) must be an integer >= 1, got {n!r}")
    owners = list(preference_list[:n])
    if len(set(owners)) != len(owners):
        raise ValueError(f"the preference list repeats a node: {list(preference_list)}")
    spares = iter(spare_nodes(owners, ring_walk, down))
    targets = []
    for owner in owners:
        if owner not in down:
            targets.append(WriteTarget(owner, None))
        elif (stand_in := next(spares, None)) is not None:
            targets.append(WriteTarget(stand_in, owner))
    return targets


def spare_nodes(owners: Iterable[str], ring_walk: Iterable[str], down: Set[str]) -> list[str]:
    """The nodes that may stand in for down owners, in the order they are
    taken: the healthy nodes of `ring_walk` that are not owners, each once.
    `fallback_nodes` gives them out one per down owner; a write whose stand-in
    cannot be reached takes the next one not yet given out."""
    excluded = set(owners)
    return [node for node in dict.fromkeys(ring_walk) if node not in excluded and node not in down]
