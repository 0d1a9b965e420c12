"""One leaderless write as a sans-I/O state machine (Dynamo, sections 4.5-4.6).

The machine is fed what happens (the origin applied the write or failed, a
replica or a stand-in acknowledged or failed, the deadline) and answers with
the actions to take: apply at an origin, replicate to a replica, hint via a
stand-in, answer, fail. The asyncio coordinator only carries the actions out
(`kvstore.leaderless.coordinator`); the quorum arithmetic is
`kvstore.leaderless.quorum.WriteQuorum`, the choice of stand-ins
`kvstore.leaderless.hints.fallback_nodes`.

The rule:
- If the replicas the failure detector holds up, with the stand-ins that could
  take hints for the others (sloppy quorum only), cannot make up W, refuse at
  once and apply nothing (as Cassandra's UnavailableException): the error's
  outcome is NOT_APPLIED.
- The write goes through one origin: the first replica that is up, whoever
  coordinates, so a retried write (same request id) reaches the same origin,
  which recognises it. The origin adds the value with a new dot; an origin
  that fails for a reason of its own is replaced by the next replica.
- The state the origin produced is merged into every other replica. A replica
  that is down, or that cannot be reached, is stood in for by the next healthy
  node along the ring (sloppy quorum), which keeps the state as a durable hint;
  a stand-in that cannot be reached hands the hint on to the next one. A
  stand-in whose hint bound is full fails that replica (back-pressure).
- The write is acknowledged once W replicas (or their stand-ins) hold it
  durably. A failure after the origin applied it says so: its outcome is
  UNKNOWN (the write may still appear, through anti-entropy or hand-off).

Pure: no I/O, no asyncio, no clock.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from kvstore.causality.versions import DVVSet
from kvstore.errors import (
    NOT_APPLIED, UNKNOWN, DeadlineExceeded, FailedPrecondition, InvalidArgument,
    KVStoreError, ResourceExhausted, Unavailable,
)
from kvstore.leaderless.hints import fallback_nodes, spare_nodes
from kvstore.leaderless.quorum import WriteQuorum, quorum_error

QUORUM_NOT_REACHED = "QUORUM_NOT_REACHED"

# Errors that are the request's fault: trying another replica cannot help.
REQUEST_ERRORS = (InvalidArgument, FailedPrecondition)
# Errors with which an origin says for certain that it did not apply the write.
_NOT_APPLIED_ERRORS = (*REQUEST_ERRORS, ResourceExhausted)
# Errors after which a replica may simply be unreachable: its stand-in is tried.
_UNREACHABLE = (Unavailable, DeadlineExceeded)


@dataclass(frozen=True, slots=True)
class Apply:
    """Add the client's write at origin replica `node`; feed the outcome to
    `applied` or `apply_failed`."""

    node: str


@dataclass(frozen=True, slots=True)
class Replicate:
    """Merge `state` into replica `node`; feed `replicated` or `replicate_failed`."""

    node: str
    state: DVVSet


@dataclass(frozen=True, slots=True)
class Hint:
    """Have `via` keep `state` durably as a hint for replica `owner`; feed
    `hinted` or `hint_failed`."""

    owner: str
    via: str
    state: DVVSet


@dataclass(frozen=True, slots=True)
class Answer:
    """The write succeeded: W replicas hold `state` durably."""

    state: DVVSet


@dataclass(frozen=True, slots=True)
class Fail:
    error: KVStoreError


WriteAction = Apply | Replicate | Hint | Answer | Fail


def up_first(replicas: Sequence[str], is_up: Callable[[str], bool]) -> list[str]:
    """The replicas in preference order, those the failure detector has convicted last."""
    up = [n for n in replicas if is_up(n)]
    return up + [n for n in replicas if n not in up]


class WriteRequest:
    """`start()`, then one call per outcome of each action taken, and
    `deadline()` if the driver's timer fires first; each returns the actions
    to take. Answered (Answer or Fail) exactly once.

    `ring_walk` is the nodes met walking the ring clockwise from the key's
    partition (the replicas first); with `sloppy`, those that are not
    replicas and are up may stand in for replicas that are not.
    """

    def __init__(self, replicas: Sequence[str], w: int, *, ring_walk: Sequence[str] = (),
                 is_up: Callable[[str], bool] = lambda node_id: True,
                 sloppy: bool = True) -> None:
        self._quorum = WriteQuorum(replicas, w)
        self._replicas = tuple(replicas)
        self._down = frozenset(n for n in replicas if not is_up(n))
        spares = spare_nodes(replicas, ring_walk, {n for n in ring_walk if not is_up(n)})
        self._sloppy = sloppy
        self._spares = spares if sloppy else []
        self._origins: Iterator[str] = iter(up_first(replicas, is_up))
        self._origin: str | None = None  # the origin asked last
        self._state: DVVSet | None = None  # what the origin produced
        self._stand_ins: Iterator[str] = iter(())  # spares not given out yet
        self._errors: list[KVStoreError] = []
        self._maybe_applied = False
        self._answered = False

    @property
    def answered(self) -> bool:
        return self._answered

    def start(self) -> list[WriteAction]:
        up = len(self._replicas) - len(self._down)
        reachable = up + min(len(self._down), len(self._spares))
        if up == 0 or reachable < self._quorum.required:
            return self._settle(Fail(self._refusal(up)))
        return self._next_origin()

    # -- the origin ---------------------------------------------------------------

    def applied(self, origin: str, state: DVVSet) -> list[WriteAction]:
        self._maybe_applied = True
        self._state = state
        self._quorum.ack(origin)
        pending = self._quorum.pending
        targets = fallback_nodes(pending, self._spares, self._down, len(pending)) if pending else []
        given = {target.node for target in targets if target.intended_owner is not None}
        self._stand_ins = iter([n for n in self._spares if n not in given])
        actions: list[WriteAction] = []
        for target in targets:
            if target.intended_owner is None:
                actions.append(Replicate(target.node, state))
            else:
                actions.append(Hint(target.intended_owner, target.node, state))
        chosen = {target.intended_owner or target.node for target in targets}
        for node in pending:
            if node not in chosen:  # convicted, and no stand-in left: do not wait for it
                self._fail(node, Unavailable(f"{node} is down"), "down (failure detector)")
        return actions + self._after_answer()

    def apply_failed(self, origin: str, error: KVStoreError, *,
                     past_deadline: bool = False) -> list[WriteAction]:
        if isinstance(error, REQUEST_ERRORS):
            return self._settle(Fail(error))
        if not isinstance(error, _NOT_APPLIED_ERRORS):
            self._maybe_applied = True  # it may have applied before the link failed
        self._fail(origin, error)
        if self._quorum.failed or past_deadline:
            return self._settle(Fail(self._quorum_failure()))
        return self._next_origin()

    # -- the other replicas -----------------------------------------------------------

    def replicated(self, node: str) -> list[WriteAction]:
        self._quorum.ack(node)
        return self._after_answer()

    def replicate_failed(self, node: str, error: KVStoreError) -> list[WriteAction]:
        # Down but not yet convicted: hint it like one that is.
        via = next(self._stand_ins, None) if isinstance(error, _UNREACHABLE) else None
        if via is not None:
            assert self._state is not None
            return [Hint(node, via, self._state)]
        self._fail(node, error)
        return self._after_answer()

    def hinted(self, owner: str, via: str) -> list[WriteAction]:
        """`via` holds the hint durably: it counts as `owner`'s acknowledgement."""
        self._quorum.ack(owner)
        return self._after_answer()

    def hint_failed(self, owner: str, via: str, error: KVStoreError) -> list[WriteAction]:
        """A stand-in that cannot be reached hands the hint on to the next one;
        one that refuses (its hint bound is full) fails the replica."""
        following = next(self._stand_ins, None) if isinstance(error, _UNREACHABLE) else None
        if following is not None:
            assert self._state is not None
            return [Hint(owner, following, self._state)]
        self._fail(owner, type(error)(f"via {via}: {error}"))
        return self._after_answer()

    def deadline(self) -> list[WriteAction]:
        """The driver's timer fired: fail, saying how far the write got."""
        if self._state is None and self._origin is not None:
            error: KVStoreError = DeadlineExceeded(
                f"w={self._quorum.required}: the write's origin replica {self._origin} did not "
                f"answer in time; the write may or may not have been applied",
                reason=QUORUM_NOT_REACHED, metadata=self._metadata(UNKNOWN))
        else:
            error = DeadlineExceeded(
                f"deadline passed before the quorum was reached; {self._quorum.error_message()}"
                f"{self._outcome_note()}",
                reason=QUORUM_NOT_REACHED, metadata=self._metadata(self._outcome()))
        return self._settle(Fail(error))

    # -- bookkeeping ---------------------------------------------------------------------

    def _next_origin(self) -> list[WriteAction]:
        self._origin = next(self._origins, None)
        if self._origin is None:
            return self._settle(Fail(self._quorum_failure()))
        return [Apply(self._origin)]

    def _fail(self, node: str, error: KVStoreError, reason: str | None = None) -> None:
        self._errors.append(error)
        self._quorum.fail(node, reason or str(error))

    def _after_answer(self) -> list[WriteAction]:
        if self._quorum.done:
            assert self._state is not None
            return self._settle(Answer(self._state))
        if self._quorum.failed:
            return self._settle(Fail(self._quorum_failure()))
        return []

    def _settle(self, action: Answer | Fail) -> list[WriteAction]:
        if self._answered:
            return []
        self._answered = True
        return [action]

    def _outcome(self) -> str:
        return UNKNOWN if self._maybe_applied else NOT_APPLIED

    def _outcome_note(self) -> str:
        if self._maybe_applied:
            return "; the write may have been applied and may still appear"
        return "; nothing was applied"

    def _metadata(self, outcome: str) -> dict[str, str]:
        return {"outcome": outcome, "required": str(self._quorum.required),
                "acknowledged": str(self._quorum.acks)}

    def _quorum_failure(self) -> KVStoreError:
        error = quorum_error(self._quorum.error_message() + self._outcome_note(), self._errors)
        error.reason = QUORUM_NOT_REACHED
        error.metadata = self._metadata(self._outcome())
        return error

    def _refusal(self, up: int) -> Unavailable:
        w, n = self._quorum.required, len(self._replicas)
        down = ", ".join(node for node in self._replicas if node in self._down)
        if not self._sloppy:
            stand_ins = "a strict quorum takes no stand-ins"
        elif self._spares:
            stand_ins = f"only {len(self._spares)} stand-in(s) up to take hints"
        else:
            stand_ins = "no stand-in up to take hints"
        return Unavailable(
            f"w={w} needs {w} of {n} replicas to acknowledge; {up} up, {down} down "
            f"(failure detector), {stand_ins}; refused: nothing was applied",
            reason=QUORUM_NOT_REACHED, metadata=self._metadata(NOT_APPLIED))
