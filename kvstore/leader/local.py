"""This node's part in leader mode's KV operations, over its `RaftDriver`: a
write proposed to the partition's group here (applied once committed, or
refused NOT_LEADER naming the leader this node knows), a linearizable read
through the host's ReadIndex (a follower asks its leader), and a stale read
of what this replica has applied.

It serves this node's own requests and those other processes forward to it,
and never forwards anything itself: following a refusal to the leader is
the request's origin's job (`access`), so a request never travels in
circles. A compare-and-set whose version does not match is an error here
(FAILED_PRECONDITION, reason VERSION_MISMATCH, with the current version),
so it reads the same wherever it is raised.

With `tracing`, a write's proposal and a linearizable read's ReadIndex
wait made within a trace are spans of their own (`kvstore.rpc.spans`:
`kvstore.raft/propose`, `kvstore.raft/read_index`); without, none of that
runs.
"""

import time
from collections.abc import Awaitable, Callable

from kvclient.tracing import Tracing
from kvstore.errors import NOT_APPLIED, FailedPrecondition, KVStoreError
from kvstore.leader.commands import Command
from kvstore.leader.driver import RaftDriver
from kvstore.leader.raft.messages import NodeId
from kvstore.leader.state_machine import Outcome, Status
from kvstore.leader.waiters import ReadValue
from kvstore.rpc import spans

VERSION_MISMATCH = "VERSION_MISMATCH"

# (result, seconds) of each proposal: "applied", "version_mismatch", or the
# reason it failed (NOT_LEADER, DEADLINE_EXCEEDED, ...).
ProposalObserver = Callable[[str, float], None]


def version_mismatch(partition: int, expected: int | None, current: int) -> FailedPrecondition:
    wanted = "absent" if expected == 0 else f"at version {expected}"
    found = "absent (version 0)" if current == 0 else f"at version {current}"
    return FailedPrecondition(
        f"compare-and-set failed: the key (partition {partition}) was to be {wanted} but is "
        f"{found}; read it again and retry with if_version={current}",
        reason=VERSION_MISMATCH, metadata={"current_version": str(current),
                                           "outcome": NOT_APPLIED})


class LocalLeader:
    def __init__(self, node_id: NodeId, driver: RaftDriver,
                 observe: ProposalObserver = lambda result, seconds: None, *,
                 tracing: Tracing | None = None) -> None:
        self.node_id = node_id
        self._driver = driver
        self._observe = observe
        self._tracing = tracing

    async def write(self, partition: int, command: Command, timeout: float) -> Outcome:
        """The outcome of `command` once applied; raises a version mismatch,
        or the refusal (NOT_LEADER names the leader this node knows)."""
        started = time.perf_counter()
        try:
            outcome = await self._propose(partition, command, timeout)
        except KVStoreError as error:
            self._observe(error.reason or type(error).__name__, time.perf_counter() - started)
            raise
        if outcome.status is Status.VERSION_MISMATCH:
            self._observe("version_mismatch", time.perf_counter() - started)
            raise version_mismatch(partition, command.if_version, outcome.version)
        self._observe("applied", time.perf_counter() - started)
        return outcome

    async def read(self, partition: int, key: bytes, timeout: float) -> ReadValue:
        """A linearizable read of `key` on this replica."""
        read = self._driver.get(partition, key, timeout=timeout)
        tracing = self._tracing
        if tracing is None or not tracing.in_trace():
            return await read
        return await spans.read_index(tracing, partition, read)

    def _propose(self, partition: int, command: Command, timeout: float) -> Awaitable[Outcome]:
        proposal = self._driver.propose(partition, command, timeout=timeout)
        tracing = self._tracing
        if tracing is None or not tracing.in_trace():
            return proposal
        return spans.proposal(tracing, partition, proposal, self._driver.entry_term)

    def read_stale(self, partition: int, key: bytes) -> ReadValue:
        """What this replica has applied for `key`, however far behind."""
        return self._driver.get_stale(partition, key)
