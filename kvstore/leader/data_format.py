"""The format version of leader mode's data, and the refusal of any other.

One number covers every byte leader mode writes down: the commands in log
entries (`commands`), the partition images in snapshots (`images`), and the
Raft store's layout on disk (`lmdb_store`, which keeps it in a meta table).
Log entries and snapshots travel between nodes, so a node that meets a
format it does not know (a newer kvstore wrote it) must stop rather than
guess: applying an entry it misreads would make its replica diverge for
ever. The message says what happened and what to do.

Pure: no I/O.
"""

from kvstore.errors import FailedPrecondition

FORMAT = 1


class UnsupportedFormat(FailedPrecondition):
    """Data in a format this kvstore does not read."""

    def __init__(self, what: str, found: int) -> None:
        newer = "a newer" if found > FORMAT else "an older, unsupported"
        super().__init__(
            f"{what} is in format {found}, but this kvstore reads format {FORMAT} only "
            f"({newer} kvstore wrote it): run a kvstore that reads format {found} on this node",
            reason="UNSUPPORTED_FORMAT",
            metadata={"found": str(found), "supported": str(FORMAT)})


def check(what: str, found: int) -> None:
    if found != FORMAT:
        raise UnsupportedFormat(what, found)
