"""Deliberately broken variants of the store, to prove the simulation
catches what it is meant to catch (`make sim BUG=...`, tests/test_sim.py;
leader mode's in `chaos.sim.leader.bugs`, tests/test_leader_sim.py).

Each bug is a small patch of one production function, applied only inside
`planted(name)`, so the store's code carries no hook for it. The
leaderless mode's:

- `ack-before-quorum`: a write is acknowledged as soon as its origin
  applied it, before W replicas hold it durably.
- `hint-dropped-early`: hinted handoff deletes a hint before its owner has
  acknowledged it (and whether or not the owner ever gets it).
- `purge-with-replica-down`: tombstone collection leaves the replicas and
  nodes that are down out of its facts, so it purges while one of them may
  still hold the deleted value.
- `read-without-merge`: a read answers (and repairs with) the state of the
  last replica that replied instead of the merge of every reply.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from chaos.sim.leader.bugs import LEADER_BUGS
from kvstore.causality.versions import DVVSet
from kvstore.errors import KVStoreError
from kvstore.leaderless import write_request
from kvstore.leaderless.handoff import HintReplayer
from kvstore.leaderless.quorum import ReadQuorum
from kvstore.leaderless.replica import record_state
from kvstore.leaderless.tombstones import TombstoneCollector
from kvstore.leaderless.write_request import WriteRequest
from kvstore.storage.engine import Hint


def _ack_before_quorum() -> list[tuple[Any, str, Callable[..., Any]]]:
    applied = WriteRequest.applied

    def broken(self: WriteRequest, origin: str, state: DVVSet) -> list[Any]:
        actions: list[Any] = applied(self, origin, state)
        return actions + self._settle(write_request.Answer(state))

    return [(WriteRequest, "applied", broken)]


def _hint_dropped_early() -> list[tuple[Any, str, Callable[..., Any]]]:
    async def broken(self: HintReplayer, hint: Hint) -> bool:
        await self._replica.remove_hint(hint)
        try:
            await self._ops.merge(hint.target, hint.key, record_state(hint.record))  # type: ignore[arg-type]
        except KVStoreError:
            pass
        return True

    return [(HintReplayer, "_hand_over", broken)]


def _purge_with_replica_down() -> list[tuple[Any, str, Callable[..., Any]]]:
    collect = TombstoneCollector.collect

    async def broken(self: TombstoneCollector, partition: int, replicas: list[str],
                     agreed: Any = None) -> int:
        saved = self._others
        self._others = tuple(n for n in saved if self._is_up(n))
        try:
            up = [n for n in replicas if self._is_up(n)]
            return await collect(self, partition, up, agreed)
        finally:
            self._others = saved

    return [(TombstoneCollector, "collect", broken)]


def _read_without_merge() -> list[tuple[Any, str, Callable[..., Any]]]:
    def broken(self: ReadQuorum) -> DVVSet | None:
        replies = list(self.replies.values())
        return replies[-1] if replies else None

    return [(ReadQuorum, "merged", broken)]


LEADERLESS_BUGS: dict[str, Callable[[], list[tuple[Any, str, Callable[..., Any]]]]] = {
    "ack-before-quorum": _ack_before_quorum,
    "hint-dropped-early": _hint_dropped_early,
    "purge-with-replica-down": _purge_with_replica_down,
    "read-without-merge": _read_without_merge,
}

# Every bug, and the mode whose simulation it is planted in.
BUGS: dict[str, Callable[[], list[tuple[Any, str, Callable[..., Any]]]]] = {
    **LEADERLESS_BUGS, **LEADER_BUGS}
MODE_OF_BUG: dict[str, str] = {**{name: "leaderless" for name in LEADERLESS_BUGS},
                               **{name: "leader" for name in LEADER_BUGS}}


@contextmanager
def planted(bug: str | None) -> Iterator[None]:
    """Run the block with `bug` patched in (None: the store as it is)."""
    if bug is None:
        yield
        return
    if bug not in BUGS:
        raise ValueError(f"no planted bug {bug!r}; choose one of {', '.join(BUGS)}")
    patches = BUGS[bug]()
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    try:
        for owner, name, replacement in patches:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
