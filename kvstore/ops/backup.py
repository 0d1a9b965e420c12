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

A leader-mode node's snapshot is its Raft store (every group's log, hard
state and data). Restored as it was, the node could vote twice in a term or
help elect a leader lacking writes it had acknowledged since the backup
(see `kvstore.leader.restore_fence`), so its restore asks every other
member of the running cluster for its terms (`cluster_terms`: all must
answer, and the restored node must not) and fences each group above the
highest before the file goes in place. The leaders send it what it missed.
"""

import hashlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from kvclient.pb import admin_pb2, admin_pb2_grpc
from kvclient.security import PLAINTEXT, Credentials
from kvstore.errors import KVStoreError
from kvstore.leader.lmdb_store import RAFT_DIR, LmdbRaftStore, keys_in_copy
from kvstore.leader.restore_fence import fence_store
from kvstore.ops.remote import RemoteError, fetch_status, member_statuses
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
            cluster_terms: Callable[[], "ClusterTerms"] | None = None,
            say: Callable[[str], None] = lambda line: None) -> int:
    """Make `data_dir` hold the snapshot `file`; the number of keys in it.
    The node must be stopped. Refuses to replace existing data unless
    `force`. A leader-mode snapshot needs `cluster_terms` (the running
    cluster's, see `cluster_terms` below) to fence its groups with."""
    try:
        leader_keys = keys_in_copy(file)
        keys = count_keys_in_copy(file) if leader_keys is None else leader_keys
    except ValueError as exc:
        raise BackupError(str(exc)) from None
    if leader_keys is None:
        _put_in_place(file, data_dir, force)
        say(f"restored {keys} key(s) into {data_dir}")
        return keys
    if cluster_terms is None:
        raise BackupError(f"{file} is a leader-mode node's snapshot: its restore must ask the "
                          "running cluster for its terms; pass --address (any running member) "
                          "and --node-id (the node being restored)")
    target = data_dir / RAFT_DIR
    if (target / DATA_FILE).exists() and not force:
        raise _occupied(data_dir)
    terms = cluster_terms()
    staging = data_dir / (RAFT_DIR + ".restoring")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        _copy(file, staging / DATA_FILE)
        groups = _fence(staging, terms)
        target.mkdir(parents=True, exist_ok=True)
        os.replace(staging / DATA_FILE, target / DATA_FILE)
        (target / LOCK_FILE).unlink(missing_ok=True)
        _fsync_directory(target)
    except OSError as exc:
        raise BackupError(f"cannot restore into {data_dir}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"restored {keys} key(s) into {data_dir}; fenced {groups} Raft group(s) above term "
        f"{terms.highest_term}, the cluster's highest: each votes again once it has caught up "
        "with a leader")
    return keys


@dataclass(frozen=True)
class ClusterTerms:
    """What a leader-mode restore learns from the running cluster: the
    highest Raft term any other member holds, and the partitions whose
    groups the restored node is a member of."""

    highest_term: int
    groups: tuple[int, ...]


def cluster_terms(address: str, node_id: str, timeout: float,
                  credentials: Credentials = PLAINTEXT) -> ClusterTerms:
    """`terms_from` the answers of every member of the cluster `address`
    belongs to (asked in parallel, each within `timeout`)."""
    try:
        first = fetch_status(address, timeout, credentials)
    except RemoteError as exc:
        raise BackupError(f"cannot ask the cluster for its terms: {exc}") from None
    if first.mode != "leader":
        raise BackupError(f"{address} is a member of a {first.mode} cluster, but the snapshot "
                          "is a leader-mode node's")
    members = [m.id for m in first.members]
    if node_id not in members:
        raise BackupError(f"{node_id} is not a member of the cluster at {address} "
                          f"(its members: {', '.join(members)})")
    return terms_from(first, member_statuses(first, timeout, credentials), node_id)


def terms_from(first: admin_pb2.StatusResponse,
               answers: Mapping[str, admin_pb2.StatusResponse | RemoteError],
               node_id: str) -> ClusterTerms:
    """The highest Raft term any member but `node_id` holds, and
    `node_id`'s groups (from `first`'s ring). Refused unless every other
    member answered (a term it alone knew could be one the restored node
    voted in), `node_id` did not (it must be stopped), and no other member
    is fenced still (two fenced members of a group of three could leave it
    unable to elect a leader, for ever)."""
    if not isinstance(answers[node_id], RemoteError):
        raise BackupError(f"{node_id} is running: stop it before restoring its data")
    others = {m: a for m, a in answers.items() if m != node_id}
    silent = {m: a for m, a in others.items() if isinstance(a, RemoteError)}
    if silent:
        raise BackupError(
            "every other member must answer, so that the restored node cannot vote again in a "
            "term it forgot; not answering: "
            + "; ".join(f"{m} ({answer})" for m, answer in silent.items()))
    statuses = {m: a for m, a in others.items() if not isinstance(a, RemoteError)}
    fenced = {m: [g.partition for g in a.raft if g.fenced] for m, a in statuses.items()}
    if any(fenced.values()):
        raise BackupError(
            "another member was restored and has not caught up yet, and two fenced members "
            "could leave a group unable to elect a leader: wait until `kvstore status -o json` "
            "shows no group fenced; fenced now: "
            + "; ".join(f"{m} (partitions {', '.join(map(str, ps))})"
                        for m, ps in fenced.items() if ps))
    highest = max((g.term for a in statuses.values() for g in a.raft), default=0)
    return ClusterTerms(highest, tuple(p.partition for p in first.ring if node_id in p.replicas))


def _fence(directory: Path, terms: ClusterTerms) -> int:
    """Fence every group of the Raft store in `directory`; how many."""
    size = (directory / DATA_FILE).stat().st_size
    try:
        store = LmdbRaftStore(directory, map_size=max(1 << 30, 2 * size))
    except KVStoreError as exc:
        raise BackupError(f"the snapshot cannot be restored: {exc}") from None
    try:
        return fence_store(store, terms.highest_term, terms.groups)
    finally:
        store.close()


def _occupied(data_dir: Path) -> BackupError:
    return BackupError(f"{data_dir} already holds a database; stop its node, and pass "
                       "--force to replace it (or restore into an empty directory)")


def _copy(source_file: Path, copy_file: Path) -> None:
    copy_file.parent.mkdir(parents=True, exist_ok=True)
    with open(source_file, "rb") as source, open(copy_file, "wb") as copy:
        while block := source.read(1024 * 1024):
            copy.write(block)
        copy.flush()
        os.fsync(copy.fileno())


def _put_in_place(file: Path, data_dir: Path, force: bool) -> None:
    """Copy `file` into `data_dir` as its database, durably (beside, fsynced, renamed)."""
    target = data_dir / DATA_FILE
    if target.exists() and not force:
        raise _occupied(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = data_dir / (DATA_FILE + ".restoring")
    try:
        _copy(file, partial)
        os.replace(partial, target)
        # The lock file describes readers of the old database, if any.
        (data_dir / LOCK_FILE).unlink(missing_ok=True)
        _fsync_directory(data_dir)
    except OSError as exc:
        raise BackupError(f"cannot restore into {data_dir}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
