"""What kvclient does in a child of fork(): refuse gRPC, with a message that
says why, instead of the hang or crash gRPC gives.

gRPC's asyncio stack, on which both clients run, does not survive fork():
once a process has opened a channel, a child it forks hangs on its inherited
clients and crashes on new ones (seen with grpcio 1.85: a DEADLINE_EXCEEDED
after the whole timeout, and SIGSEGV), whatever GRPC_ENABLE_FORK_SUPPORT
says. A child of a process that never opened a channel is fine. So the
channel factory notes the first channel, and in a child forked after it
every new channel is refused with a RuntimeError.
"""

from __future__ import annotations

import os

FORKED_MESSAGE = (
    "kvclient cannot open a gRPC channel in a child of fork() whose parent had "
    "already opened one: gRPC's asyncio stack does not survive fork (it hangs or "
    "crashes). Create clients only after forking, in each process, or start "
    "processes with multiprocessing's 'spawn' or 'forkserver' method.")

_opened_before = False  # this process has opened a channel
_forked_after_use = False  # this process is a child forked after its parent opened one


def note_channel_opened() -> None:
    """Called by the channel factory before it opens a channel."""
    global _opened_before
    if _forked_after_use:
        raise RuntimeError(FORKED_MESSAGE)
    _opened_before = True


def _after_fork_in_child() -> None:
    global _forked_after_use
    _forked_after_use = _forked_after_use or _opened_before


os.register_at_fork(after_in_child=_after_fork_in_child)
