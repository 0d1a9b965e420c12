"""A process that writes to a multi-Raft host over LMDB as fast as it can,
until it is killed: `python -m tests.leader_crash_writer DIR`. Four
single-member groups (each its own quorum), a put per group per pass;
every acknowledged write is printed, flushed, as `group index key value`
once its pass committed. tests/test_leader_crash.py kills it with SIGKILL
mid-stream and checks what the store holds."""

import sys
from pathlib import Path

from kvstore.clock import SYSTEM_CLOCK
from kvstore.leader.commands import Put
from kvstore.leader.host import MultiRaft
from kvstore.leader.lmdb_store import LmdbRaftStore
from kvstore.leader.persistence import PassResult
from kvstore.leader.settings import HostSettings
from kvstore.leader.state_machine import Outcome

GROUPS = range(4)


def main(path: Path) -> None:
    store = LmdbRaftStore(path, map_size=1 << 28)
    host = MultiRaft("n1", store, HostSettings(snapshot_every=40, keep_entries=5), seed=1,
                     clock_ms=SYSTEM_CLOCK.wall_clock_ms)
    for group in GROUPS:
        host.add_group(group, ("n1",))
        host.campaign(group)
    proposed: dict[int, tuple[int, bytes, bytes]] = {}  # ticket -> group, key, value
    n = 0
    while True:
        for group in GROUPS:
            if host.status(group).leader == "n1":
                n += 1
                key, value = b"k%d" % (n % 7), b"v%d" % n
                ticket = host.propose(group, Put(key, value, b"r%d" % n))
                proposed[ticket] = (group, key, value)
        p = host.start_pass()
        if p is None:
            continue
        result = store.write(p.write) if p.write is not None else PassResult()
        for release in host.finish_pass(p, result).released:
            if isinstance(release.result, Outcome) and release.ticket in proposed:
                group, key, value = proposed.pop(release.ticket)
                print(group, release.result.index, key.decode(), value.decode(), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
