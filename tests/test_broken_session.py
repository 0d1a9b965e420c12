"""A KV.Session stream that breaks with operations in flight, on real
processes: the client's connection to one coordinator is cut after the
coordinator applied its writes but before their answers arrived. Each of
those writes is sent again, once, to the other coordinator, with its
request id, and is applied once: no write appears twice."""

import asyncio

import pytest

import kvclient
from tests.clusters import metric, poll
from tests.proxy import Proxy

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

WRITES = 20  # through each coordinator


async def test_a_broken_streams_writes_are_retried_once_by_request_id_and_applied_once(
        make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(coordinators=2)
    c1, c2 = cluster.coordinators

    def puts_at(coordinator) -> float:  # type: ignore[no-untyped-def]
        return metric(coordinator, 'kvstore_requests_total{code="OK",method="Put"}') or 0.0

    async with Proxy(c1.address) as proxy, kvclient.AsyncClient(
            [proxy.address, c2.address], timeout=60) as client:
        # Calls start at the two addresses in turn: open both streams first.
        assert [await client.ping(b"a"), await client.ping(b"b")] == [b"a", b"b"]
        proxy.hold()  # c1's answers stop on their way back
        items = {b"key-%02d" % i: b"value-%02d" % i for i in range(2 * WRITES)}
        calls = [asyncio.create_task(client.put(key, value)) for key, value in items.items()]
        # Every other call went to c1, which applied it and answered into the hold.
        await asyncio.to_thread(poll, lambda: puts_at(c1) == WRITES, 30,
                                "c1 applied and answered its writes")
        await asyncio.gather(*calls[1::2])  # c2's
        assert not any(call.done() for call in calls[::2])  # c1's, unanswered
        proxy.cut()  # the stream breaks: c1's writes fail over to c2
        await asyncio.gather(*calls)
    # c2 served its own writes, and c1's once each: none was sent twice.
    assert puts_at(c2) == 2 * WRITES
    assert puts_at(c1) == WRITES
    # Each write applied once: one sibling each (a blind write applied twice
    # by its origin would leave two).
    with kvclient.Client([cluster.nodes["n1"].address], timeout=30) as reader:
        for key, value in items.items():
            assert reader.get(key, r="all").siblings == [value]
    duplicates = sum(metric(node, "kvstore_duplicate_writes_total") or 0
                     for node in cluster.nodes.values())
    assert duplicates >= WRITES  # each retry was recognised by its request id
