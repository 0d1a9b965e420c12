"""A real crash of a process writing to the LMDB Raft store: the writer
(`tests/leader_crash_writer.py`) is killed with SIGKILL in the middle of
its passes, and the store it leaves must hold every write it acknowledged,
with applied indexes that match the data, and a host must start on it and
go on writing."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kvstore.clock import SYSTEM_CLOCK
from kvstore.leader.commands import Put
from kvstore.leader.host import MultiRaft
from kvstore.leader.lmdb_store import LmdbRaftStore
from kvstore.leader.persistence import PassResult
from kvstore.leader.settings import HostSettings
from kvstore.leader.state_machine import Outcome
from tests.leader_crash_writer import GROUPS

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]
ROOT = Path(__file__).resolve().parent.parent


def test_writes_acknowledged_before_a_sigkill_survive_it(tmp_path: Path) -> None:
    path = tmp_path / "raft"
    writer = subprocess.Popen([sys.executable, "-m", "tests.leader_crash_writer", str(path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    acknowledged: list[tuple[int, int, str, str]] = []
    try:
        assert writer.stdout is not None
        while len(acknowledged) < 400:  # enough for compactions in every group
            line = writer.stdout.readline()
            assert line, f"the writer exited ({writer.wait()}) after {len(acknowledged)} writes"
            group, index, key, value = line.split()
            acknowledged.append((int(group), int(index), key, value))
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL

    store = LmdbRaftStore(path, map_size=1 << 28)
    try:
        for group in GROUPS:
            loaded = store.load(group, 0)
            mine = [a for a in acknowledged if a[0] == group]
            assert loaded.applied >= max(index for _, index, _, _ in mine)
            assert loaded.hard_state.commit >= loaded.applied >= loaded.snapshot_index > 0
            assert loaded.compacted_index <= loaded.snapshot_index
            # The log is whole from its first entry to its last.
            entries = store.read_entries(group, loaded.compacted_index + 1,
                                         loaded.last_index + 1, None)
            assert [e.index for e in entries] == list(range(loaded.compacted_index + 1,
                                                            loaded.last_index + 1))
            latest: dict[str, tuple[int, str]] = {}
            for _, index, key, value in mine:
                latest[key] = max(latest.get(key, (0, "")), (index, value))
            for key, (index, value) in latest.items():
                stored = store.read(group, key.encode())
                assert stored is not None and stored.version >= index
                if stored.version == index:
                    assert stored.value == value.encode()
                assert stored.version <= loaded.applied
        # And a host starts on what is left and goes on writing.
        host = MultiRaft("n1", store, HostSettings(), seed=2, clock_ms=SYSTEM_CLOCK.wall_clock_ms)
        for group in GROUPS:
            host.add_group(group, ("n1",))
            host.campaign(group)
        for _ in range(5):
            if (p := host.start_pass()) is not None:
                result = store.write(p.write) if p.write else PassResult()
                host.finish_pass(p, result)
        ticket = host.propose(0, Put(b"after", b"crash", b"after-1"))
        answers = {}
        while (p := host.start_pass()) is not None:
            result = store.write(p.write) if p.write else PassResult()
            answers.update((r.ticket, r.result)
                           for r in (*p.released, *host.finish_pass(p, result).released))
        assert isinstance(answers[ticket], Outcome)
        assert store.read(0, b"after") is not None
    finally:
        store.close()
