"""CPU per write of leader mode's multi-Raft host and Raft core alone: three
`MultiRaft` hosts in one process over LMDB stores in a temporary directory,
every envelope through the wire codec, passes run by hand
(`tests/multiraft_cluster.py`), no gRPC and no event loop. Each round
proposes BATCH writes spread over the groups, then settles the cluster.

    .venv/bin/python bench/leader_host.py [GROUPS=16] [BATCH=64] [ROUNDS=150]

prints the CPU time per write (all three hosts together) and, per write, the
passes, the group Readies and the Raft messages it took. Deterministic in
what it does, so two trees compare well even on a busy machine (CPU time,
not wall time; still compare within one run).
"""

import collections
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from multiraft_cluster import HostCluster  # noqa: E402

from kvstore.leader import wire  # noqa: E402
from kvstore.leader.commands import Put  # noqa: E402
from kvstore.leader.envelopes import Envelope  # noqa: E402


def main(groups: int, batch: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="leader-host-bench-") as data:
        cluster = HostCluster(groups=groups, seed=1, lmdb_dir=Path(data))
        leaders = cluster.elect_all()
        counts: collections.Counter[str] = collections.Counter()
        deliver = cluster._send

        def send(envelopes: Iterable[Envelope]) -> None:
            decoded = [wire.decode(wire.encode(e)) for e in envelopes]
            counts["messages"] += sum(len(e.messages) for e in decoded)
            deliver(decoded)

        cluster._send = send
        cluster.sent = _Forgetful()  # the cluster keeps every envelope for tests; not here
        run_pass = cluster.run_pass

        def counted_pass(node: str) -> bool:
            ran = run_pass(node)
            counts["passes"] += ran
            return ran

        cluster.run_pass = counted_pass

        def one_round(r: int) -> None:
            for i in range(batch):
                group = (r * batch + i) % groups
                cluster.propose(leaders[group], group,
                                Put(b"key-%d" % i, b"v" * 100, b"request-%d-%d" % (r, i)))
            cluster.settle()

        for r in range(10):  # warm up
            one_round(r)
        counts.clear()
        started = time.process_time()
        for r in range(10, 10 + rounds):
            one_round(r)
        cpu = time.process_time() - started
        cluster.close()
    writes = rounds * batch
    print(f"groups={groups} batch={batch} writes={writes} "
          f"cpu_us_per_write={cpu / writes * 1e6:.1f} "
          f"passes_per_write={counts['passes'] / writes:.2f} "
          f"raft_messages_per_write={counts['messages'] / writes:.2f}")


class _Forgetful(list[tuple[int, Envelope]]):
    def append(self, item: tuple[int, Envelope]) -> None:
        pass


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    main(*(args + [16, 64, 150][len(args):]))
