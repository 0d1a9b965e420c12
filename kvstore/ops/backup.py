"""`kvstore admin snapshot` and `kvstore admin restore`: a node's data as a
file, over the network, and back into a data dir.

A snapshot is LMDB's compacting copy of the node's whole database (its
keys, the hints it holds for others, its request ids), streamed by
`Admin.Snapshot` and checked against the SHA-256 and size the node sends;
the file is written beside `--out` and renamed into place only when whole,
so a failed download leaves no file that looks like a snapshot. A restore
checks the file is a node's database, then puts it in the stopped node's
data dir (written beside, fsynced, renamed); the node rebuilds its Merkle
trees from it when it starts, and anti-entropy brings what it missed since
the snapshot from the other replicas.
"""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import grpc

from kvclient.pb import admin_pb2, admin_pb2_grpc
from kvclient.security import PLAINTEXT, Credentials
from kvstore.rpc.channels import open_channel
from kvstore.storage.lmdb_engine import count_keys_in_copy

DATA_FILE = "data.mdb"  # what LMDB keeps in a node's data dir
LOCK_FILE = "lock.mdb"


class BackupError(RuntimeError):
    """The snapshot or the restore failed; the message says why."""


def snapshot(address: str, out: Path, timeout: float,
             credentials: Credentials = PLAINTEXT) -> tuple[str, int]:
    """Download the node's snapshot to `out`; (its node id, bytes).
    `credentials` must make an admin."""
    partial = out.with_name(out.name + ".partial")
    digest = hashlib.sha256()
    node_id, total, written, expected = "", 0, 0, b""
    try:
        with open_channel(address, credentials=credentials) as channel, \
                open(partial, "wb") as file:
            stub = admin_pb2_grpc.AdminStub(channel)
            for chunk in stub.Snapshot(admin_pb2.SnapshotRequest(), timeout=timeout):
                if chunk.node_id:
                    node_id, total = chunk.node_id, chunk.total_bytes
                if chunk.data:
                    file.write(chunk.data)
                    digest.update(chunk.data)
                    written += len(chunk.data)
                if chunk.sha256:
                    expected = chunk.sha256
            file.flush()
            os.fsync(file.fileno())
        if not expected or expected != digest.digest() or written != total:
            raise BackupError(f"the snapshot from {address} arrived damaged or cut short "
                              f"({written} of {total} bytes); nothing was written to {out}")
        os.replace(partial, out)
    except grpc.RpcError as exc:
        raise BackupError(f"{address}: {exc.code().name}: {exc.details()}") from None
    except OSError as exc:
        raise BackupError(f"cannot write {out}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return node_id, written


def restore(file: Path, data_dir: Path, *, force: bool,
            say: Callable[[str], None] = lambda line: None) -> int:
    """Make `data_dir` hold the snapshot `file`; the number of keys in it.
    The node must be stopped. Refuses to replace existing data unless `force`."""
    try:
        keys = count_keys_in_copy(file)
    except ValueError as exc:
        raise BackupError(str(exc)) from None
    target = data_dir / DATA_FILE
    if target.exists() and not force:
        raise BackupError(f"{data_dir} already holds a database; stop its node, and pass "
                          "--force to replace it (or restore into an empty directory)")
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = data_dir / (DATA_FILE + ".restoring")
    try:
        with open(file, "rb") as source, open(partial, "wb") as copy:
            while block := source.read(1024 * 1024):
                copy.write(block)
            copy.flush()
            os.fsync(copy.fileno())
        os.replace(partial, target)
        # The lock file describes readers of the old database, if any.
        (data_dir / LOCK_FILE).unlink(missing_ok=True)
        directory = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise BackupError(f"cannot restore into {data_dir}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    say(f"restored {keys} key(s) into {data_dir}")
    return keys
