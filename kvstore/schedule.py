"""Waiting on a schedule in the background loops (heartbeats, hint replay,
anti-entropy): a pause that a stop request cuts short."""

import asyncio


async def pause(seconds: float, stopping: asyncio.Event) -> None:
    """Wait `seconds` (a schedule or a rate limit, not synchronisation),
    returning early once `stopping` is set."""
    if seconds <= 0:
        return
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass
