"""Merkle trees over one partition's keys, kept up to date write by write, and
the comparison that finds where two replicas of a partition differ.

A tree's leaves are B buckets (B a power of two): a key falls in bucket
`bucket_of(key, B)`, from a hash personalised so it is independent of the
ring's partition hash (every key of a partition shares the top bits of that
one). A bucket's hash is the sum, modulo 2**256, of one digest per key over
(key, version digest); the caller supplies the version digest (the store
passes a digest of the key's encoded state). Interior nodes hash their
children, `fanout` of them (a power of two, 16 by default: log16(1024) is 3
round trips per anti-entropy exchange instead of 10 for a binary tree, for
16 hashes per differing node instead of 2).

Why a sum and not XOR: both are order-independent and updatable in O(1)
(subtract the old entry, add the new), and both are safe against accidental
divergence, but XOR is linear over GF(2), so anyone who can choose ~257
entries can solve for two different sets with one hash; a sum has no such
shortcut. The key is inside each entry's digest, and the tree holds at most
one entry per key, so equal entries never meet (under XOR they would cancel).

Updates are lazy: `update` changes the bucket's sum and marks the bucket
dirty (one hash of the entry, O(1)); reads of interior nodes (`root`,
`hashes`, `children`, `node_hashes`) first rehash each dirty node once, from
the leaves up. A node takes many writes between two anti-entropy rounds, so
each write pays one entry hash instead of log_F(B) node hashes.

The tree also keeps key -> version digest, so a bucket's keys can be listed
for the second half of an exchange (`keys_in_bucket`, `diff_keys`), and so
`update` can check the caller's idea of the old state: a mismatch means the
store and the tree have drifted apart, and is raised, never papered over.

`TreeComparison` is the exchange, sans-I/O: it says which nodes of which
level to ask the remote replica for, takes the answers, and ends with the
buckets that differ, descending only into differing branches (at most
1 + fanout * depth * d hashes compared for d differing buckets).

Pure logic: no I/O, no asyncio, no clock. Never reads the store itself:
`MerkleTree.build` takes the entries the store scanned.
"""

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

DEFAULT_BUCKETS = 1024
DEFAULT_FANOUT = 16
HASH_SIZE = 32

_MODULUS = 1 << (8 * HASH_SIZE)
# Distinct personalisations keep the three uses of blake2b (and the ring's
# unpersonalised key hash) independent of each other.
_BUCKET_PERSON = b"kvstore-mk-bkt"
_ENTRY_PERSON = b"kvstore-mk-ent"
_NODE_PERSON = b"kvstore-mk-node"


class DigestMismatch(ValueError):
    """`update` was told an old digest that is not what the tree holds."""


def _power_of_two(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {minimum}, got {value}")


@dataclass(frozen=True, slots=True)
class TreeShape:
    """Buckets and fan-out: two trees can be compared only if these match."""

    buckets: int = DEFAULT_BUCKETS
    fanout: int = DEFAULT_FANOUT

    def __post_init__(self) -> None:
        _power_of_two(self.buckets, "buckets", 1)
        _power_of_two(self.fanout, "fanout", 2)

    @property
    def depth(self) -> int:
        """The level of the buckets; level 0 is the root (the bucket itself if B is 1)."""
        bits, step = self.buckets.bit_length() - 1, self.fanout.bit_length() - 1
        return -(-bits // step)

    def level_size(self, level: int) -> int:
        """How many nodes `level` has. Only the root may have fewer than `fanout` children."""
        if not 0 <= level <= self.depth:
            raise ValueError(f"level must be 0..{self.depth}, got {level}")
        if level == 0:
            return 1
        step = self.fanout.bit_length() - 1
        return self.buckets >> (step * (self.depth - level))

    def child_range(self, level: int, index: int) -> range:
        """Indices, on level + 1, of the children of node `index` of `level`."""
        if level >= self.depth:
            raise ValueError(f"level {level} holds the buckets; buckets have no children")
        size = self.level_size(level)
        if not 0 <= index < size:
            raise ValueError(f"level {level} has nodes 0..{size - 1}, got {index}")
        width = self.level_size(level + 1) // size
        return range(index * width, (index + 1) * width)


def bucket_of(key: bytes, buckets: int) -> int:
    """The bucket (0..buckets-1) of `key`; `buckets` is a power of two."""
    digest = hashlib.blake2b(key, digest_size=8, person=_BUCKET_PERSON).digest()
    return int.from_bytes(digest, "big") & (buckets - 1)


def _entry(key: bytes, version_digest: bytes) -> int:
    # The length prefix keeps (b"a", b"bc") and (b"ab", b"c") apart.
    h = hashlib.blake2b(digest_size=HASH_SIZE, person=_ENTRY_PERSON)
    h.update(len(key).to_bytes(8, "big"))
    h.update(key)
    h.update(version_digest)
    return int.from_bytes(h.digest(), "big")


def _node(children: Iterable[bytes]) -> bytes:
    return hashlib.blake2b(
        b"".join(children), digest_size=HASH_SIZE, person=_NODE_PERSON
    ).digest()


def _leaf(total: int) -> bytes:
    return total.to_bytes(HASH_SIZE, "big")


def _check_bytes(value: object, name: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")


class MerkleTree:
    """One partition's tree: buckets of key -> version digest, and node hashes."""

    def __init__(self, buckets: int = DEFAULT_BUCKETS, fanout: int = DEFAULT_FANOUT) -> None:
        self._shape = TreeShape(buckets, fanout)
        self._digests: dict[bytes, bytes] = {}
        self._sums = [0] * buckets
        self._keys: list[set[bytes] | None] = [None] * buckets
        self._levels = _empty_levels(self._shape)
        self._dirty: set[int] = set()  # buckets whose leaf hash and ancestors are stale

    @classmethod
    def build(
        cls,
        entries: Iterable[tuple[bytes, bytes]],
        buckets: int = DEFAULT_BUCKETS,
        fanout: int = DEFAULT_FANOUT,
    ) -> "MerkleTree":
        """A tree holding `entries` (key, version digest), e.g. scanned from LMDB at start."""
        tree = cls(buckets, fanout)
        for key, digest in entries:
            tree._insert_new(key, digest)
        return tree

    @property
    def shape(self) -> TreeShape:
        return self._shape

    @property
    def depth(self) -> int:
        return self._shape.depth

    def __len__(self) -> int:
        return len(self._digests)

    def get(self, key: bytes) -> bytes | None:
        """The version digest the tree holds for `key`, or None."""
        return self._digests.get(key)

    def bucket_of(self, key: bytes) -> int:
        return bucket_of(key, self._shape.buckets)

    def _insert_new(self, key: bytes, digest: bytes) -> None:
        if key in self._digests:
            raise ValueError(f"key {key!r} appears twice in the entries of one tree")
        self.update(key, None, digest)

    def update(self, key: bytes, old: bytes | None, new: bytes | None) -> None:
        """Record that `key` went from version digest `old` to `new` (None: absent).

        Insert is (None, d), change (d, d'), removal (d, None). `old` must be
        what the tree holds, else `DigestMismatch` and the tree is unchanged:
        so removing a key the tree never held is rejected, while (None, None)
        agrees with the tree and is a no-op.
        """
        _check_bytes(key, "key")
        for name, value in (("old", old), ("new", new)):
            if value is not None:
                _check_bytes(value, f"{name} digest")
        held = self._digests.get(key)
        if held != old:
            raise DigestMismatch(
                f"key {key!r}: the caller's old digest {old!r} is not the tree's {held!r}; "
                "the store and its Merkle tree have drifted, rebuild the partition's tree"
            )
        if old == new:
            return
        bucket = self.bucket_of(key)
        total = self._sums[bucket]
        if old is not None:
            total -= _entry(key, old)
        if new is not None:
            total += _entry(key, new)
        self._sums[bucket] = total % _MODULUS
        self._track(bucket, key, new)
        self._dirty.add(bucket)

    def _track(self, bucket: int, key: bytes, new: bytes | None) -> None:
        keys = self._keys[bucket]
        if new is None:
            del self._digests[key]
            assert keys is not None
            keys.discard(key)
            if not keys:
                self._keys[bucket] = None
            return
        self._digests[key] = new
        if keys is None:
            self._keys[bucket] = {key}
        else:
            keys.add(key)

    def root(self) -> bytes:
        return self.hashes(0)[0]

    def hashes(self, level: int) -> list[bytes]:
        """Every node hash of `level` (0 is the root, `depth` the buckets)."""
        self._shape.level_size(level)  # validates
        self._refresh()
        return list(self._levels[level])

    def node_hashes(self, level: int, indices: Sequence[int]) -> list[bytes]:
        """The hashes of the nodes `indices` of `level`: the remote side's answer."""
        size = self._shape.level_size(level)
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
                raise ValueError(f"level {level} has nodes 0..{size - 1}, got {index!r}")
        self._refresh()
        row = self._levels[level]
        return [row[index] for index in indices]

    def children(self, level: int, index: int) -> list[bytes]:
        """The hashes of the children (on level + 1) of node `index` of `level`."""
        return self.node_hashes(level + 1, self._shape.child_range(level, index))

    def bucket_hash(self, bucket: int) -> bytes:
        return _leaf(self._sums[self._check_bucket(bucket)])

    def keys_in_bucket(self, bucket: int) -> dict[bytes, bytes]:
        """A copy of the bucket's key -> version digest (safe to send or keep)."""
        keys = self._keys[self._check_bucket(bucket)] or ()
        return {key: self._digests[key] for key in keys}

    def diff_buckets(self, other: "MerkleTree") -> list[int]:
        """Buckets whose hashes differ, comparing every leaf (for tests and checks)."""
        _same_shape(self._shape, other._shape)
        return [b for b, (x, y) in enumerate(zip(self._sums, other._sums)) if x != y]

    def _check_bucket(self, bucket: int) -> int:
        if isinstance(bucket, bool) or not isinstance(bucket, int):
            raise ValueError(f"bucket must be an int, got {bucket!r}")
        if not 0 <= bucket < self._shape.buckets:
            raise ValueError(f"bucket must be 0..{self._shape.buckets - 1}, got {bucket}")
        return bucket

    def _refresh(self) -> None:
        """Rehash each node above a dirty bucket once, from the leaves up."""
        if not self._dirty:
            return
        shape, levels = self._shape, self._levels
        dirty = self._dirty
        leaves = levels[shape.depth]
        for bucket in dirty:
            leaves[bucket] = _leaf(self._sums[bucket])
        for level in range(shape.depth - 1, -1, -1):
            width = shape.level_size(level + 1) // shape.level_size(level)
            dirty = {index // width for index in dirty}
            below, row = levels[level + 1], levels[level]
            for index in dirty:
                row[index] = _node(below[index * width : (index + 1) * width])
        self._dirty = set()


def _empty_levels(shape: TreeShape) -> list[list[bytes]]:
    """Node hashes of an empty tree: every node of a level is the same."""
    hashes = [_leaf(0)]
    for level in range(shape.depth - 1, -1, -1):
        width = shape.level_size(level + 1) // shape.level_size(level)
        hashes.append(_node([hashes[-1]] * width))
    hashes.reverse()
    return [[h] * shape.level_size(level) for level, h in enumerate(hashes)]


def _same_shape(local: TreeShape, remote: TreeShape) -> None:
    if local != remote:
        raise ValueError(
            f"trees of different shapes cannot be compared: local {local}, remote {remote}; "
            "replicas must use the same merkle buckets and fanout"
        )


class TreeComparison:
    """Sans-I/O descent of a local tree against a remote one, level by level.

    Loop: while not `done`, ask the remote for `request` (level, node
    indices), pass its hashes (in the same order) to `receive`. Then
    `differing_buckets` lists the buckets to exchange with `keys_in_bucket`.
    Writes may land on either side between two rounds; the answer is then
    that of slightly different snapshots per level: a bucket may be reported
    that no longer differs (its keys then compare equal) or a new difference
    missed until the next exchange, both harmless for anti-entropy.
    """

    def __init__(self, local: MerkleTree, remote_shape: TreeShape | None = None) -> None:
        if remote_shape is not None:
            _same_shape(local.shape, remote_shape)
        self._local = local
        self._level = 0
        self._indices: list[int] = [0]
        self._differing: list[int] | None = None
        self.compared = 0  # node hashes compared so far

    @property
    def done(self) -> bool:
        return self._differing is not None

    @property
    def request(self) -> tuple[int, list[int]]:
        """The (level, node indices) whose remote hashes `receive` expects next."""
        if self._differing is not None:
            raise ValueError("the comparison is done; nothing more to ask")
        return self._level, list(self._indices)

    def receive(self, remote_hashes: Sequence[bytes]) -> None:
        level, indices = self.request
        if len(remote_hashes) != len(indices):
            raise ValueError(
                f"expected {len(indices)} hashes for level {level}, got {len(remote_hashes)}"
            )
        for h in remote_hashes:
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                raise ValueError(f"a node hash is {HASH_SIZE} bytes, got {h!r}")
        local = self._local.node_hashes(level, indices)
        self.compared += len(indices)
        differing = [i for i, mine, theirs in zip(indices, local, remote_hashes) if mine != theirs]
        shape = self._local.shape
        if level == shape.depth or not differing:
            self._differing = differing if level == shape.depth else []
            return
        self._level = level + 1
        self._indices = [c for i in differing for c in shape.child_range(level, i)]

    @property
    def differing_buckets(self) -> list[int]:
        if self._differing is None:
            raise ValueError("the comparison is not done yet")
        return list(self._differing)


def differing_buckets(
    local: MerkleTree,
    remote_node_hashes: Callable[[int, list[int]], Sequence[bytes]],
    remote_shape: TreeShape | None = None,
) -> list[int]:
    """Run a `TreeComparison` against a callable (level, indices) -> hashes."""
    comparison = TreeComparison(local, remote_shape)
    while not comparison.done:
        level, indices = comparison.request
        comparison.receive(remote_node_hashes(level, indices))
    return comparison.differing_buckets


def diff_keys(local: Mapping[bytes, bytes], remote: Mapping[bytes, bytes]) -> list[bytes]:
    """Keys of one bucket whose version digests differ or that one side lacks, sorted."""
    return sorted(k for k in local.keys() | remote.keys() if local.get(k) != remote.get(k))


class PartitionTrees:
    """One tree per partition, all of one shape, each created on first update."""

    def __init__(self, buckets: int = DEFAULT_BUCKETS, fanout: int = DEFAULT_FANOUT) -> None:
        self._shape = TreeShape(buckets, fanout)
        self._trees: dict[int, MerkleTree] = {}
        self._empty_root = _empty_levels(self._shape)[0][0]

    @classmethod
    def build(
        cls,
        entries: Iterable[tuple[int, bytes, bytes]],
        buckets: int = DEFAULT_BUCKETS,
        fanout: int = DEFAULT_FANOUT,
    ) -> "PartitionTrees":
        """Trees holding `entries` (partition, key, version digest), e.g. at start."""
        trees = cls(buckets, fanout)
        for partition, key, digest in entries:
            trees.tree(partition)._insert_new(key, digest)
        return trees

    @property
    def shape(self) -> TreeShape:
        return self._shape

    def tree(self, partition: int) -> MerkleTree:
        """The partition's tree, created empty if it has none yet."""
        tree = self._trees.get(_check_partition(partition))
        if tree is None:
            tree = self._trees[partition] = MerkleTree(self._shape.buckets, self._shape.fanout)
        return tree

    def update(self, partition: int, key: bytes, old: bytes | None, new: bytes | None) -> None:
        self.tree(partition).update(key, old, new)

    def root(self, partition: int) -> bytes:
        """The partition's root; a partition never updated has the empty tree's root."""
        tree = self._trees.get(_check_partition(partition))
        return self._empty_root if tree is None else tree.root()

    def partitions(self) -> list[int]:
        """Partitions that have a tree, in order."""
        return sorted(self._trees)

    def replace(self, partition: int, tree: MerkleTree) -> None:
        """Install a rebuilt tree for `partition` (e.g. after `DigestMismatch`)."""
        _same_shape(self._shape, tree.shape)
        self._trees[_check_partition(partition)] = tree

    def drop(self, partition: int) -> None:
        """Forget the partition's tree (it moved away); a no-op if it has none."""
        self._trees.pop(_check_partition(partition), None)


def _check_partition(partition: int) -> int:
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise ValueError(f"partition must be an int >= 0, got {partition!r}")
    return partition
