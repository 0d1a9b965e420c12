"""One leaderless read as a sans-I/O state machine (Dynamo, section 4.5).

The machine is fed what happens (a replica's reply, a replica's failure, the
deadline) and answers with the actions to take: ask a replica, repair
replicas, answer the client, fail. The asyncio coordinator only carries the
actions out (`kvstore.leaderless.coordinator`); the quorum arithmetic is
`kvstore.leaderless.quorum.ReadQuorum`.

The rule: ask R replicas, this node first when it holds the key (no network
hop), then those the failure detector holds up, in preference order, and
those it has convicted last; ask one more for each that fails, as Cassandra
does (asking all N would cost every replica a read for an answer not waited
for). Answer once R have replied, with their states merged. When the last of
the replicas asked has answered, repair those that showed less than the
merged state, or a corrupt copy (read repair): off the answer's path, so it
happens even after the answer or the deadline.

Pure: no I/O, no asyncio, no clock.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from kvstore.causality.versions import DVVSet
from kvstore.errors import DataLoss, DeadlineExceeded, KVStoreError
from kvstore.leaderless.quorum import ReadQuorum, quorum_error


@dataclass(frozen=True, slots=True)
class Ask:
    """Read the key's state on `node`; feed the outcome to `reply` or `failure`."""

    node: str


@dataclass(frozen=True, slots=True)
class Repair:
    """Merge `state` into each of `targets` (read repair; nobody waits for it)."""

    targets: tuple[str, ...]
    state: DVVSet


@dataclass(frozen=True, slots=True)
class Answer:
    """The read succeeded: answer the client with `state` (None: no replica holds the key)."""

    state: DVVSet | None


@dataclass(frozen=True, slots=True)
class Fail:
    """The read failed: answer the client with `error`."""

    error: KVStoreError


ReadAction = Ask | Repair | Answer | Fail


def by_locality(replicas: Sequence[str], self_id: str | None,
                is_up: Callable[[str], bool]) -> list[str]:
    """This node first when it holds the key, then the others that are up, in
    preference order; peers the failure detector has convicted last, tried
    only when nothing else is left."""
    local = [n for n in replicas if n == self_id]
    others = [n for n in replicas if n != self_id]
    up = [n for n in others if is_up(n)]
    return local + up + [n for n in others if n not in up]


class ReadRequest:
    """`start()`, then `reply`/`failure` per asked replica, and `deadline()`
    if the driver's timer fires first; each returns the actions to take.

    The request is answered (Answer or Fail) exactly once; replies after that
    only serve read repair.
    """

    def __init__(self, replicas: Sequence[str], r: int, *, self_id: str | None = None,
                 is_up: Callable[[str], bool] = lambda node_id: True,
                 lww: bool = False) -> None:
        self._quorum = ReadQuorum(replicas, r, lww=lww)
        self._candidates: Iterator[str] = iter(by_locality(replicas, self_id, is_up))
        self._asked = 0
        self._corrupt: list[str] = []
        self._errors: list[KVStoreError] = []
        self._answered = False

    @property
    def answered(self) -> bool:
        return self._answered

    def start(self) -> list[ReadAction]:
        return [self._ask_next() for _ in range(self._quorum.required)]

    def reply(self, node: str, state: DVVSet | None) -> list[ReadAction]:
        self._quorum.reply(node, state)
        return self._after_answer()

    def failure(self, node: str, error: KVStoreError) -> list[ReadAction]:
        if isinstance(error, DataLoss):
            self._corrupt.append(node)
        self._errors.append(error)
        self._quorum.fail(node, str(error))
        actions: list[ReadAction] = []
        if not self._quorum.failed:
            actions.append(self._ask_next())
        return actions + self._after_answer()

    def deadline(self) -> list[ReadAction]:
        """The driver's timer fired: fail, saying who answered (unless answered already)."""
        return self._settle(Fail(DeadlineExceeded(
            f"deadline passed before the quorum was reached; {self._quorum.error_message()}")))

    def _ask_next(self) -> Ask:
        # Never exhausted: a failure asks again only while the quorum can still
        # be reached, so some replica has not been asked yet.
        self._asked += 1
        return Ask(next(self._candidates))

    def _after_answer(self) -> list[ReadAction]:
        quorum = self._quorum
        actions: list[ReadAction] = []
        if quorum.done:
            actions += self._settle(Answer(quorum.merged()))
        elif quorum.failed:
            actions += self._settle(Fail(quorum_error(quorum.error_message(), self._errors)))
        if len(quorum.replies) + len(quorum.failures) == self._asked:
            # The last answer of those asked: repair what the others showed.
            actions += self._repair()
        return actions

    def _settle(self, action: Answer | Fail) -> list[ReadAction]:
        if self._answered:
            return []
        self._answered = True
        return [action]

    def _repair(self) -> list[ReadAction]:
        merged = self._quorum.merged()
        if merged is None:
            return []
        targets = (*self._quorum.stale(merged), *self._corrupt)
        return [Repair(targets, merged)] if targets else []
