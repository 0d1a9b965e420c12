"""Merkle trees: roots depend only on content, incremental updates agree with a
rebuild, and an exchange finds exactly the differing buckets and keys while
descending only into differing branches."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.leaderless.merkle import (
    HASH_SIZE,
    DigestMismatch,
    MerkleTree,
    PartitionTrees,
    TreeComparison,
    TreeShape,
    bucket_of,
    diff_keys,
    differing_buckets,
)
from kvstore.placement.ring import partition_of

PROPERTIES = properties(150)

keys = st.binary(min_size=1, max_size=6)
digests = st.binary(min_size=1, max_size=4)
contents = st.dictionaries(keys, digests, max_size=40)
shapes = st.sampled_from([TreeShape(1, 2), TreeShape(8, 2), TreeShape(64, 4), TreeShape(32, 16)])


def digest(n: int) -> bytes:
    return n.to_bytes(4, "big")


def entries(n: int, seed: int = 0) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    return {f"key-{i}".encode(): rng.randbytes(16) for i in range(n)}


def exchange(local: MerkleTree, remote: MerkleTree) -> tuple[list[int], list[bytes], int]:
    """The differing buckets, the differing keys and how many hashes were compared."""
    comparison = TreeComparison(local, remote.shape)
    while not comparison.done:
        comparison.receive(remote.node_hashes(*comparison.request))
    buckets = comparison.differing_buckets
    found = [k for b in buckets
             for k in diff_keys(local.keys_in_bucket(b), remote.keys_in_bucket(b))]
    return buckets, sorted(found), comparison.compared


def every_level(tree: MerkleTree) -> list[list[bytes]]:
    return [tree.hashes(level) for level in range(tree.depth + 1)]


# Content decides the root


@PROPERTIES
@given(content=contents, shape=shapes, seed=st.integers(0, 2**32))
def test_equal_contents_have_equal_roots_whatever_the_insertion_order(content, shape, seed):
    items = list(content.items())
    shuffled = items[:]
    random.Random(seed).shuffle(shuffled)
    first = MerkleTree.build(items, shape.buckets, shape.fanout)
    second = MerkleTree.build(shuffled, shape.buckets, shape.fanout)
    assert first.root() == second.root()
    assert every_level(first) == every_level(second)


@PROPERTIES
@given(
    ops=st.lists(st.tuples(st.integers(0, 15), st.one_of(st.none(), digests)), max_size=80),
    shape=shapes,
    reads=st.lists(st.integers(0, 80), max_size=5),
)
def test_incremental_updates_equal_a_rebuild_from_scratch(ops, shape, reads):
    tree = MerkleTree(shape.buckets, shape.fanout)
    model: dict[bytes, bytes] = {}
    for step, (k, new) in enumerate(ops):
        key = b"k%d" % k
        tree.update(key, model.get(key), new)
        if new is None:
            model.pop(key, None)
        else:
            model[key] = new
        if step in reads:  # reads in between must not disturb the lazy rehash
            tree.root()
    rebuilt = MerkleTree.build(model.items(), shape.buckets, shape.fanout)
    assert tree.root() == rebuilt.root()
    assert every_level(tree) == every_level(rebuilt)
    assert len(tree) == len(model)
    for b in range(shape.buckets):
        assert tree.keys_in_bucket(b) == rebuilt.keys_in_bucket(b)
        assert tree.bucket_hash(b) == rebuilt.bucket_hash(b)


def test_a_tree_emptied_again_has_the_empty_root():
    tree = MerkleTree()
    for key, d in entries(50).items():
        tree.update(key, None, d)
    assert tree.root() != MerkleTree().root()
    for key, d in entries(50).items():
        tree.update(key, d, None)
    assert tree.root() == MerkleTree().root()
    assert all(tree.keys_in_bucket(b) == {} for b in range(tree.shape.buckets))


def test_the_key_and_the_digest_are_both_part_of_an_entry():
    # Same concatenation, different split: must not collide.
    assert (MerkleTree.build([(b"a", b"bc")], 1).root()
            != MerkleTree.build([(b"ab", b"c")], 1).root())
    # Two keys swapping their digests change the buckets they are in.
    swapped = MerkleTree.build([(b"x", b"1"), (b"y", b"2")], 1)
    assert swapped.root() != MerkleTree.build([(b"x", b"2"), (b"y", b"1")], 1).root()


def test_buckets_are_independent_of_the_ring_partition():
    # Keys of one partition (same top bits of the ring hash) still use every bucket.
    same_partition = [k for k in entries(20000) if partition_of(k, 64) == 0]
    used = {bucket_of(k, 64) for k in same_partition}
    assert len(used) == 64


# Exchange


@pytest.mark.parametrize("change", ["changed", "added", "removed"])
def test_one_differing_key_is_found_by_its_bucket_and_then_by_itself(change):
    content = entries(3000)
    local = MerkleTree.build(content.items())
    remote = MerkleTree.build(content.items())
    key = b"key-1234" if change != "added" else b"a-new-key"
    if change == "changed":
        remote.update(key, content[key], b"newer")
    elif change == "added":
        remote.update(key, None, b"fresh")
    else:
        remote.update(key, content[key], None)
    assert local.root() != remote.root()
    buckets, found, _ = exchange(local, remote)
    assert buckets == [local.bucket_of(key)]
    assert found == [key]


def test_equal_trees_compare_equal_at_the_root_alone():
    content = entries(500)
    local, remote = MerkleTree.build(content.items()), MerkleTree.build(content.items())
    assert exchange(local, remote) == ([], [], 1)


@PROPERTIES
@given(
    shared=contents,
    local_only=contents,
    remote_only=contents,
    shape=shapes,
)
def test_the_exchange_finds_exactly_the_differing_buckets_and_keys(
    shared, local_only, remote_only, shape
):
    local = MerkleTree.build({**shared, **local_only}.items(), shape.buckets, shape.fanout)
    remote = MerkleTree.build({**shared, **remote_only}.items(), shape.buckets, shape.fanout)
    expected_keys = diff_keys({**shared, **local_only}, {**shared, **remote_only})
    buckets, found, compared = exchange(local, remote)
    assert buckets == local.diff_buckets(remote)
    assert sorted({local.bucket_of(k) for k in expected_keys}) == buckets
    assert found == expected_keys
    assert compared <= 1 + shape.fanout * shape.depth * len(buckets)


@pytest.mark.parametrize("differing", [1, 4, 16])
def test_the_descent_visits_only_differing_branches(differing):
    shape = TreeShape(1024, 16)
    content = entries(5000)
    local = MerkleTree.build(content.items())
    remote = MerkleTree.build(content.items())
    changed = {}
    for key in content:  # one changed key in each of `differing` distinct buckets
        if len(changed) < differing and local.bucket_of(key) not in changed:
            changed[local.bucket_of(key)] = key
            remote.update(key, content[key], b"changed")

    asked: list[tuple[int, int]] = []

    def remote_hashes(level, indices):
        asked.extend((level, i) for i in indices)
        return remote.node_hashes(level, indices)

    assert differing_buckets(local, remote_hashes, remote.shape) == sorted(changed)
    for level, index in asked[1:]:  # every node asked for has a differing parent
        parent_level = level - 1
        width = shape.level_size(level) // shape.level_size(parent_level)
        parent = index // width
        assert local.hashes(parent_level)[parent] != remote.hashes(parent_level)[parent]
    # Exactly the root plus the children of each differing interior node...
    differing_nodes = [
        sum(a != b for a, b in zip(local.hashes(level), remote.hashes(level)))
        for level in range(shape.depth)
    ]
    widths = [shape.level_size(l + 1) // shape.level_size(l) for l in range(shape.depth)]
    assert len(asked) == 1 + sum(w * n for w, n in zip(widths, differing_nodes))
    # ...so O(d log B): log16(1024) = 2.5, the root has 4 children, the others 16.
    assert len(asked) <= 1 + 4 + 16 * differing * 2
    assert len(asked) < shape.buckets // 3


def test_one_side_empty_reports_every_bucket_of_the_other():
    content = entries(200)
    full, empty = MerkleTree.build(content.items(), 64, 4), MerkleTree(64, 4)
    buckets, found, _ = exchange(empty, full)
    assert buckets == sorted({full.bucket_of(k) for k in content})
    assert found == sorted(content)


def test_trees_of_different_shapes_refuse_to_compare():
    with pytest.raises(ValueError, match="different shapes"):
        TreeComparison(MerkleTree(1024, 16), TreeShape(1024, 4))
    with pytest.raises(ValueError, match="different shapes"):
        MerkleTree(64).diff_buckets(MerkleTree(128))


def test_a_malformed_remote_answer_is_rejected():
    comparison = TreeComparison(MerkleTree())
    with pytest.raises(ValueError, match="expected 1 hashes"):
        comparison.receive([])
    with pytest.raises(ValueError, match="32 bytes"):
        comparison.receive([b"short"])
    comparison.receive([MerkleTree().root()])
    assert comparison.done and comparison.differing_buckets == []
    with pytest.raises(ValueError, match="done"):
        comparison.receive([b"\0" * HASH_SIZE])


def test_diff_keys_reports_changed_and_one_sided_keys():
    local = {b"same": b"1", b"changed": b"1", b"local-only": b"1"}
    remote = {b"same": b"1", b"changed": b"2", b"remote-only": b"1"}
    assert diff_keys(local, remote) == [b"changed", b"local-only", b"remote-only"]


# Misuse


def test_removing_a_key_the_tree_never_held_is_rejected_and_changes_nothing():
    tree = MerkleTree.build(entries(10).items())
    before = tree.root()
    with pytest.raises(DigestMismatch, match="drifted"):
        tree.update(b"never-inserted", b"some-digest", None)
    tree.update(b"never-inserted", None, None)  # absent -> absent agrees: a no-op
    assert tree.root() == before and len(tree) == 10


def test_an_old_digest_that_is_not_the_trees_is_rejected():
    tree = MerkleTree.build([(b"k", digest(1))])
    before = tree.root()
    with pytest.raises(DigestMismatch):
        tree.update(b"k", digest(2), digest(3))
    with pytest.raises(DigestMismatch):
        tree.update(b"k", None, digest(3))  # an insert of a key already held
    assert tree.root() == before and tree.get(b"k") == digest(1)


def test_build_rejects_a_key_given_twice():
    with pytest.raises(ValueError, match="twice"):
        MerkleTree.build([(b"k", b"1"), (b"k", b"2")])


@pytest.mark.parametrize("buckets, fanout", [(0, 16), (1000, 16), (1024, 1), (1024, 12)])
def test_shapes_must_be_powers_of_two(buckets, fanout):
    with pytest.raises(ValueError, match="power of two"):
        MerkleTree(buckets, fanout)


def test_keys_and_digests_must_be_bytes():
    tree = MerkleTree()
    with pytest.raises(TypeError):
        tree.update("key", None, b"1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tree.update(b"key", None, "1")  # type: ignore[arg-type]


def test_levels_narrow_by_the_fanout_with_only_the_root_narrower():
    assert [TreeShape(1024, 16).level_size(l) for l in range(4)] == [1, 4, 64, 1024]
    assert [TreeShape(1024, 2).level_size(l) for l in range(11)] == [2**l for l in range(11)]
    assert TreeShape(1, 16).depth == 0
    tree = MerkleTree(1024, 16)
    assert len(tree.children(0, 0)) == 4 and len(tree.children(1, 3)) == 16
    with pytest.raises(ValueError):
        tree.children(3, 0)


# Partitions


def test_partition_trees_are_separate_and_created_on_first_use():
    trees = PartitionTrees(buckets=64, fanout=4)
    empty = MerkleTree(64, 4).root()
    assert trees.root(7) == empty and trees.partitions() == []
    trees.update(7, b"k", None, b"1")
    assert trees.root(7) != empty and trees.root(8) == empty
    assert trees.partitions() == [7]
    assert trees.root(7) == MerkleTree.build([(b"k", b"1")], 64, 4).root()
    trees.drop(7)
    assert trees.root(7) == empty


def test_partition_trees_build_equals_updates():
    rows = [(p, k, d) for p in range(4) for k, d in entries(50, seed=p).items()]
    built = PartitionTrees.build(rows)
    updated = PartitionTrees()
    for p, k, d in reversed(rows):
        updated.update(p, k, None, d)
    assert [built.root(p) for p in range(4)] == [updated.root(p) for p in range(4)]
    assert len({built.root(p) for p in range(4)}) == 4


def test_a_rebuilt_tree_can_replace_a_drifted_one():
    trees = PartitionTrees(buckets=64, fanout=4)
    with pytest.raises(ValueError, match="different shapes"):
        trees.replace(0, MerkleTree())
    trees.replace(0, MerkleTree.build([(b"k", b"1")], 64, 4))
    trees.update(0, b"k", b"1", b"2")
    assert trees.tree(0).get(b"k") == b"2"
