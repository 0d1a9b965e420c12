"""The tombstone purge rule (pure): a key is purged only when every other
replica is up, agreed on the round's root and holds exactly its tombstone,
and every node is up and known to keep no hint for the partition; then it
is purged everywhere, the other replicas first and this one last. Unknown
facts never allow a purge, and asking stops as soon as nothing can be
purged, without ever asking a node that is down."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.properties import properties

from kvstore.leaderless.purge_plan import (
    Answer, BucketAt, ExpiredHere, HintsAt, Purge, PurgeFacts, Question, Tombstone, obstacle, plan,
    wanted,
)

pytestmark = pytest.mark.timeout(60)

PROPERTIES = properties(200)

THIS = "n1"
OTHERS = ("n2", "n3", "n4", "n5")
KEYS = tuple(b"key-%d" % i for i in range(6))
DIGESTS = (b"tombstone-a", b"tombstone-b", b"old value")
BUCKETS = (0, 1, 2)


@st.composite
def worlds(draw: st.DrawFn) -> PurgeFacts:
    """Everything there is to know about one partition: most often a world
    where the partition may be collected or one thing forbids it, so that
    both outcomes are explored."""
    replicas = tuple(draw(st.permutations(OTHERS))[:draw(st.integers(1, 3))])
    up, agreed = frozenset(OTHERS), frozenset(replicas)
    hints = dict.fromkeys((THIS, *OTHERS), 0)
    fault = draw(st.sampled_from(("none", "none", "down", "disagreed", "hint", "anything")))
    if fault == "down":
        up -= {draw(st.sampled_from(OTHERS))}
    elif fault == "disagreed":
        agreed -= {draw(st.sampled_from(replicas))}
    elif fault == "hint":
        hints[draw(st.sampled_from((THIS, *OTHERS)))] = draw(st.integers(1, 3))
    elif fault == "anything":
        up = draw(st.frozensets(st.sampled_from(OTHERS)))
        agreed = draw(st.frozensets(st.sampled_from(OTHERS)))
        hints = {node_id: draw(st.integers(0, 2)) for node_id in hints}
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    expired = tuple(Tombstone(key, draw(st.sampled_from(DIGESTS[:2])),
                              draw(st.sampled_from(BUCKETS)))
                    for key in keys)
    buckets = {}
    for replica in replicas:
        for bucket in BUCKETS:
            held = {}
            for tombstone in expired:
                if tombstone.bucket == bucket:
                    # Most often exactly the tombstone; else another state, or nothing.
                    state = draw(st.sampled_from(("same", "same", "same", "other", "absent")))
                    if state == "same":
                        held[tombstone.key] = tombstone.digest
                    elif state == "other":
                        held[tombstone.key] = draw(st.sampled_from(
                            [d for d in DIGESTS if d != tombstone.digest]))
            buckets[(replica, bucket)] = held
    return PurgeFacts(THIS, replicas, OTHERS, up, agreed, expired, hints, buckets)


@st.composite
def partial(draw: st.DrawFn, world: PurgeFacts) -> PurgeFacts:
    """What a collector might know of `world`: one fact not learned yet
    (most often), or any number of them."""
    facts = [("expired", None), *(("hints", n) for n in world.hints),
             *(("buckets", k) for k in world.buckets)]
    if draw(st.booleans()):
        unknown = {draw(st.sampled_from(facts))}
    else:
        unknown = set(draw(st.lists(st.sampled_from(facts))))
    return replace(
        world, expired=None if ("expired", None) in unknown else world.expired,
        hints={n: c for n, c in world.hints.items() if ("hints", n) not in unknown},
        buckets={k: v for k, v in world.buckets.items() if ("buckets", k) not in unknown})


def conditions_hold(facts: PurgeFacts, tombstone: Tombstone) -> bool:
    """The rule, in the words of tombstones.py, over what `facts` know."""
    every_other_node_up = all(n in facts.up for n in (*facts.replicas, *facts.nodes))
    replicas_agreed = all(r in facts.agreed for r in facts.replicas)
    no_hint_anywhere = all(facts.hints.get(n) == 0 for n in (facts.node_id, *facts.nodes))
    held_exactly = all(
        (r, tombstone.bucket) in facts.buckets
        and facts.buckets[(r, tombstone.bucket)].get(tombstone.key) == tombstone.digest
        for r in facts.replicas)
    return every_other_node_up and replicas_agreed and no_hint_anywhere and held_exactly


def in_order(facts: PurgeFacts, tombstones: list[Tombstone]) -> list[Purge]:
    return [Purge(node_id, t.key, t.digest) for t in tombstones
            for node_id in (*facts.replicas, facts.node_id)]


@PROPERTIES
@given(st.data())
def test_a_purge_is_planned_only_where_every_condition_is_known_to_hold(
        data: st.DataObject) -> None:
    facts = data.draw(partial(data.draw(worlds())))
    steps = plan(facts)
    purged = [t for t in facts.expired or () if any(step.key == t.key for step in steps)]
    assert all(conditions_hold(facts, t) for t in purged)
    # Everywhere, key by key: the other replicas first, this one last.
    assert steps == in_order(facts, purged)


@PROPERTIES
@given(worlds())
def test_every_key_whose_conditions_all_hold_is_purged(world: PurgeFacts) -> None:
    assert plan(world) == in_order(world, [t for t in world.expired or ()
                                          if conditions_hold(world, t)])


@PROPERTIES
@given(st.data())
def test_an_unknown_fact_never_allows_a_purge_the_truth_forbids(data: st.DataObject) -> None:
    world = data.draw(worlds())
    known = plan(data.draw(partial(world)))
    assert set(known) <= set(plan(world))


def answer(world: PurgeFacts, question: Question) -> Answer:
    match question:
        case ExpiredHere():
            assert world.expired is not None
            return world.expired
        case HintsAt(node_id=node_id):
            return world.hints[node_id]
        case BucketAt(node_id=node_id, bucket=bucket):
            return world.buckets[(node_id, bucket)]


def gather(world: PurgeFacts) -> tuple[PurgeFacts, list[Question]]:
    """Ask what `wanted` asks, answered from `world`, until it asks nothing."""
    facts = PurgeFacts(world.node_id, world.replicas, world.nodes, world.up, world.agreed)
    asked: list[Question] = []
    while questions := wanted(facts):
        assert len(asked) < 100, "the asking does not end"
        asked += questions
        facts = facts.learned([(q, answer(world, q)) for q in questions])
    return facts, asked


@PROPERTIES
@given(worlds())
def test_asking_what_is_wanted_plans_what_the_whole_truth_plans(world: PurgeFacts) -> None:
    facts, asked = gather(world)
    assert plan(facts) == plan(world)
    assert len(asked) == len(set(asked))  # nothing asked twice


@PROPERTIES
@given(worlds())
def test_asking_stops_early_and_never_reaches_a_node_that_is_down(world: PurgeFacts) -> None:
    _, asked = gather(world)
    remote = [q for q in asked if isinstance(q, (HintsAt, BucketAt)) and q.node_id != THIS]
    assert all(q.node_id in world.up for q in remote)
    if obstacle(replace(world, hints={n: 0 for n in world.hints})) is not None:
        assert asked == []  # a replica that did not agree, or a node down: nothing is read
    if not world.expired:
        assert remote == []
    if any(world.hints.values()):
        assert not any(isinstance(q, BucketAt) for q in asked)


def test_a_tombstone_held_exactly_everywhere_with_no_hint_goes_everywhere_this_replica_last() -> None:  # noqa: E501 (the name says the property)
    tombstone = Tombstone(b"k", b"t", 0)
    facts = PurgeFacts(THIS, ("n2", "n3"), ("n2", "n3", "n4"), frozenset({"n2", "n3", "n4"}),
                       frozenset({"n2", "n3"}), (tombstone,),
                       {THIS: 0, "n2": 0, "n3": 0, "n4": 0},
                       {("n2", 0): {b"k": b"t"}, ("n3", 0): {b"k": b"t"}})
    assert plan(facts) == [Purge("n2", b"k", b"t"), Purge("n3", b"k", b"t"),
                           Purge(THIS, b"k", b"t")]
    assert obstacle(facts) is None and wanted(facts) == []
    # A hint on n4, outside the partition, may carry the deleted value.
    blocked = replace(facts, hints={**facts.hints, "n4": 1})
    assert plan(blocked) == [] and obstacle(blocked) == "n4 keeps 1 hints for the partition"
    # n3 not heard of yet: it might hold anything.
    unknown = replace(facts, buckets={("n2", 0): {b"k": b"t"}})
    assert plan(unknown) == [] and wanted(unknown) == [BucketAt("n3", 0)]
