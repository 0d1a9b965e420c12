"""The one launcher of server processes (`kvstore.ops.processes`), on small
stand-in programs: where output goes, how a process is stopped, and that a
process tied to its parent dies with it."""

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvstore.ops.processes import launch, stop_all

pytestmark = [pytest.mark.process, pytest.mark.timeout(60), pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc and uses PR_SET_PDEATHSIG")]

# Says it is ready only once its SIGTERM handler is in place; a test must not
# signal it before (the default action would end it at once).
IGNORES_SIGTERM = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', flush=True); time.sleep(60)")
EXITS_ON_SIGTERM = ("import signal, sys, time; "
                    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
                    "print('ready', flush=True); time.sleep(60)")


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(0.01)  # polling interval, not synchronisation


def started(log: Path, runs: int = 1) -> Callable[[], bool]:
    return lambda: log.exists() and log.read_text().count("ready") >= runs


def test_output_is_appended_to_the_log_and_each_run_knows_where_its_own_starts(
        tmp_path: Path) -> None:
    log = tmp_path / "logs" / "p.log"  # its folder is made
    first = launch([sys.executable, "-c", "print('first run')"], log)
    assert first.wait(10) == 0
    second = launch([sys.executable, "-c", "import sys; sys.stderr.write('second run')"], log)
    assert second.wait(10) == 0
    assert log.read_text() == "first run\nsecond run"
    assert (first.log_start, second.log_start) == (0, len("first run\n"))


def test_stop_is_sigterm_and_a_graceful_exit(tmp_path: Path) -> None:
    process = launch([sys.executable, "-c", EXITS_ON_SIGTERM], tmp_path / "p.log")
    wait_for(started(tmp_path / "p.log"), 10, "the handler is set")
    assert process.stop(timeout=10) == 0


def test_stop_kills_a_process_that_outlives_its_timeout(tmp_path: Path) -> None:
    process = launch([sys.executable, "-c", IGNORES_SIGTERM], tmp_path / "p.log")
    wait_for(started(tmp_path / "p.log"), 10, "the handler is set")
    begun = time.monotonic()
    assert process.stop(timeout=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - begun < 5


def test_stop_all_waits_for_all_at_once_and_is_cut_short_on_request(tmp_path: Path) -> None:
    logs = [tmp_path / f"p{i}.log" for i in range(3)]
    graceful = launch([sys.executable, "-c", EXITS_ON_SIGTERM], logs[0])
    stubborn = [launch([sys.executable, "-c", IGNORES_SIGTERM], log) for log in logs[1:]]
    for log in logs:
        wait_for(started(log), 10, f"{log.name} has its handler set")
    begun = time.monotonic()
    # Cut short (as `cluster up` does at a second Ctrl-C) once the graceful one is gone.
    killed = stop_all([graceful, *stubborn], timeout=30,
                      cut_short=lambda: graceful.exit_code() is not None)
    assert killed == stubborn
    assert time.monotonic() - begun < 5  # long before the timeout
    assert [p.exit_code() for p in (graceful, *stubborn)] == [0, -signal.SIGKILL, -signal.SIGKILL]


def test_a_process_tied_to_its_parent_gets_sigterm_when_the_parent_dies(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "child.log", tmp_path / "child.pid"
    # The parent launches the child tied to itself, says its pid, and waits.
    parent_code = (
        "import sys, time; from pathlib import Path; "
        "from kvstore.ops.processes import launch; "
        f"child = launch([sys.executable, '-c', {EXITS_ON_SIGTERM!r}], Path({str(log)!r}), "
        "die_with_parent=True); "
        f"Path({str(pid_file)!r}).write_text(str(child.pid)); time.sleep(60)")
    parent = launch([sys.executable, "-c", parent_code], tmp_path / "parent.log")
    try:
        wait_for(started(log), 20, "the child has its handler set")
        child = int(pid_file.read_text())
        # After the exec the child's command line is exactly the command, in a session of its own.
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[:-1]
        assert cmdline == [sys.executable.encode(), b"-c", EXITS_ON_SIGTERM.encode()]
        assert os.getsid(child) == child != os.getsid(parent.pid)
        parent.send_signal(signal.SIGKILL)
        assert parent.wait(10) == -signal.SIGKILL
        wait_for(lambda: not Path(f"/proc/{child}").exists() or
                 Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                 10, "the child is gone")
    finally:
        parent.kill()
