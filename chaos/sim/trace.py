"""A simulated run's trace: what happened, at virtual time (faults, the
store's log records, the oracles' findings), and the capture of the
store's log into it for the length of a run.

The capture also keeps the store's errors (an exception a background loop
caught is a bug all the same) and its warnings, for the verdict.
"""

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager


class Trace(list[tuple[float, str]]):
    """(virtual time, what happened): faults, the store's log, the oracle."""

    def __call__(self, line: str) -> None:
        self.append((asyncio.get_running_loop().time(), line))


class TraceHandler(logging.Handler):
    """The store's log records, at virtual time, into the trace."""

    def __init__(self, say: Trace) -> None:
        super().__init__(logging.INFO)
        self._say = say
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" ({record.exc_info[1]!r})"
        self._say(line)
        if record.levelno >= logging.ERROR:
            self.errors.append(line)
        elif record.levelno >= logging.WARNING:
            self.warnings.append(line)


@contextmanager
def captured_logs(trace: Trace) -> Iterator[TraceHandler]:
    """The `kvstore` loggers' records go to `trace` (and nowhere else) in the block."""
    handler = TraceHandler(trace)
    logger = logging.getLogger("kvstore")
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
