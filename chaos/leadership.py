"""Who leads each partition during a leader-mode chaos run, and how long a
partition went without a leader: the run's leader changes and its times to
elect.

`LeadershipTimeline` is the pure part: it takes polls (a time and, per
partition, the leader and term seen) and counts. A partition's leader at a
poll is the node that itself says it leads, in the highest term (one that
was deposed while paused may still say so, in an older term); a killed or
paused leader does not answer, so its partitions show no leader from the
first poll after the fault until a poll sees the new one. A gap is timed
from the last poll that saw the old leader to the first that sees a leader
again: an upper bound, at most one poll interval too long on each side.
Gaps before a partition's first leader (the cluster starting) do not count.

`watch_leaders` is the I/O: it asks every node's `Admin.Status` each
interval, in parallel and with a short deadline (a paused node must not
hold up the others), until told to stop.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc

from kvclient.pb import admin_pb2, admin_pb2_grpc
from kvclient.security import Credentials
from kvstore.rpc.channels import open_aio_channel

POLL_INTERVAL = 0.2  # seconds between polls
POLL_TIMEOUT = 0.5  # for one node's answer

Leader = tuple[str, int]  # (node id, term)


@dataclass
class LeadershipTimeline:
    """Leader changes and leaderless gaps, from polls in time order."""

    changes: int = 0
    gaps: list[float] = field(default_factory=list)  # seconds, closed gaps only
    polls: int = 0
    _leader: dict[int, Leader] = field(default_factory=dict)  # last leader seen
    _seen_at: dict[int, float] = field(default_factory=dict)  # when last seen
    _leaderless: set[int] = field(default_factory=set)  # in a gap now

    def observe(self, at: float, leaders: Mapping[int, Leader]) -> None:
        """One poll at time `at`: partition -> (leader, term), for each
        partition a node says it leads."""
        self.polls += 1
        for partition in self._leader.keys() - leaders.keys():
            self._leaderless.add(partition)
        for partition, leader in leaders.items():
            before = self._leader.get(partition)
            if before is not None and leader[1] < before[1]:
                continue  # a deposed leader answering again: the newer one stands
            if partition in self._leaderless:
                self._leaderless.discard(partition)
                self.gaps.append(at - self._seen_at[partition])
            if before is not None and leader != before:
                self.changes += 1
            self._leader[partition] = leader
            self._seen_at[partition] = at

    @property
    def open_gaps(self) -> int:
        """Partitions without a leader at the last poll."""
        return len(self._leaderless)

    def describe(self) -> str:
        if not self.gaps:
            times = "no partition was ever without a leader"
        else:
            times = (f"{len(self.gaps)} time(s) a partition was without a leader: "
                     f"median {statistics.median(self.gaps):.2f} s, "
                     f"max {max(self.gaps):.2f} s to elect")
        still = f"; {self.open_gaps} without one at the end" if self.open_gaps else ""
        return (f"{self.changes} leader change(s); {times}{still} "
                f"({self.polls} polls, every {POLL_INTERVAL:g} s)")


def leaders_in(answers: Sequence[admin_pb2.StatusResponse]) -> dict[int, Leader]:
    """Partition -> (node, term) of the node that says it leads, highest term."""
    found: dict[int, Leader] = {}
    for answer in answers:
        for group in answer.raft:
            known = found.get(group.partition)
            if group.role == "leader" and (known is None or known[1] < group.term):
                found[group.partition] = (answer.id, group.term)
    return found


async def watch_leaders(addresses: Sequence[str], credentials: Credentials,
                        timeline: LeadershipTimeline, now: Callable[[], float],
                        stop: asyncio.Event) -> None:
    """Poll every node into `timeline` until `stop` is set."""
    channels = [open_aio_channel(address, credentials=credentials) for address in addresses]
    stubs = [admin_pb2_grpc.AdminStub(channel) for channel in channels]

    async def ask(stub: admin_pb2_grpc.AdminStub) -> admin_pb2.StatusResponse | None:
        try:
            answer: admin_pb2.StatusResponse = await stub.Status(
                admin_pb2.StatusRequest(), timeout=POLL_TIMEOUT)
        except grpc.RpcError:
            return None  # killed, paused or restarting: its partitions show no leader
        return answer

    try:
        while not stop.is_set():
            at = now()
            answers = await asyncio.gather(*(ask(stub) for stub in stubs))
            timeline.observe(at, leaders_in([a for a in answers if a is not None]))
            try:
                await asyncio.wait_for(stop.wait(), POLL_INTERVAL)  # the poll interval
            except TimeoutError:
                pass
    finally:
        for channel in channels:
            await channel.close()
