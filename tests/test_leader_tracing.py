"""OpenTelemetry tracing in leader mode, on real processes: a put sent to a
node that does not lead the key's partition is followed hop by hop, from
the client to the node, forwarded to the leader, to the leader's Raft
proposal (its entry's index and term); linearizable reads show their
ReadIndex wait, on the node they reached and on the replica a coordinator
forwarded one to. All in one trace each, every span the child of the one
that sent it.

The client's spans go to the SDK's InMemorySpanExporter; the servers'
(3 nodes and a coordinator, started with KVSTORE_TRACING_ENDPOINT in their
environment) over OTLP/gRPC to the collector in this test
(tests/otlp_collector.py)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kvclient
from kvstore.ops.remote import fetch_status
from kvstore.placement.ring import partition_of
from tests.clusters import Cluster, poll
from tests.otlp_collector import Collector, ReceivedSpan

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

PARTITIONS = 16  # tests/clusters.py's
KEY = b"traced in leader mode"


def _ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _client_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = {span.name: span for span in exporter.get_finished_spans()}
    exporter.clear()
    return spans


def _leader(cluster: Cluster, partition: int) -> tuple[str, int] | None:
    """The node that says it leads `partition`, and its term (the highest
    term's, should two say so); None while none does."""
    found: tuple[str, int] | None = None
    for node in cluster.nodes.values():
        try:
            status = fetch_status(node.address, 2)
        except Exception:  # not answering now: the others may know
            continue
        for group in status.raft:
            if (group.partition == partition and group.role == "leader"
                    and (found is None or group.term > found[1])):
                found = (status.id, group.term)
    return found


class _Trace:
    """The servers' spans of one trace, as the collector has them so far."""

    def __init__(self, collector: Collector, trace_id: str) -> None:
        self.spans = [span for span in collector.spans() if span.trace_id == trace_id]

    def named(self, name: str, kind: str | None = None) -> list[ReceivedSpan]:
        return [span for span in self.spans
                if span.name == name and (kind is None or span.kind == kind)]

    def children(self, parent: ReceivedSpan, name: str | None = None) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.parent_span_id == parent.span_id
                and (name is None or span.name == name)]


def _arrived(collector: Collector, trace_id: str, method: str) -> bool:
    """The spans of the request have reached the collector: each process
    exports its own, in batches of its own timing, in the order they end.
    So once the KV method's SERVER span is in, so is every span its process
    made for the request; and once the Raft wait that answered it and the
    span it waited in (which ends after it) are in, so is every span of the
    process that waited."""
    trace = _Trace(collector, trace_id)
    ids = {span.span_id for span in trace.spans}
    waits = trace.named("kvstore.raft/propose") + trace.named("kvstore.raft/read_index")
    return bool(trace.named(f"kvstore.v1.KV/{method}", "server")) and any(
        span.attributes.get("kvstore.raft.outcome") in ("applied", "read")
        and span.parent_span_id in ids for span in waits)


def _followed(exporter: InMemorySpanExporter, collector: Collector,
              method: str) -> tuple[_Trace, ReceivedSpan]:
    """The client's last call of `method`, once its servers' spans have all
    arrived: its trace, and the SERVER span of the process it reached, the
    child of the client's attempt."""
    spans = _client_spans(exporter)
    trace_id, attempt_id = _ids(spans[f"kvstore.v1.KV/{method}"])
    assert {_ids(span)[0] for span in spans.values()} == {trace_id}
    poll(lambda: _arrived(collector, trace_id, method), 30,
         f"the servers' spans of the {method} reach the collector")
    trace = _Trace(collector, trace_id)
    [server] = trace.named(f"kvstore.v1.KV/{method}", "server")
    assert server.parent_span_id == attempt_id
    assert server.attributes["rpc.grpc.status_code"] == 0
    return trace, server


def test_a_put_to_a_follower_is_traced_through_the_forward_to_the_leaders_proposal(
        make_cluster: object, monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Collector() as collector:
        # An endpoint alone turns OTLP on; spans leave every 50 ms, not 5 s.
        monkeypatch.setenv("KVSTORE_TRACING_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        cluster: Cluster = make_cluster(mode="leader")  # type: ignore[operator]
        partition = partition_of(KEY, PARTITIONS)
        seen: dict[str, tuple[str, int]] = {}

        def led() -> bool:
            found = _leader(cluster, partition)
            if found is not None:
                seen["leader"] = found
            return found is not None

        poll(led, 20, f"partition {partition} has a leader")
        leader, term = seen["leader"]
        follower = next(node for node in sorted(cluster.nodes) if node != leader)

        # To the follower alone (not token-aware, which would go straight
        # to the leader the topology names), over the KV.Session stream.
        with kvclient.Client([cluster.nodes[follower].address], token_aware=False,
                             tracing=provider, timeout=10) as client:
            written = client.put(KEY, b"through a follower")
        trace, server = _followed(exporter, collector, "Put")
        assert (server.service, server.instance) == ("kvstore-node", follower)
        # The follower forwards the write to the leader (after a NOT_LEADER
        # from another node, should its leader book have been behind: the
        # forward answered last is the one that applied).
        forwards = trace.children(server, "replica.leader_write")
        assert forwards and all(f.kind == "client" and f.instance == follower for f in forwards)
        [forward] = [f for f in forwards if f.attributes["kvstore.replica"] == leader]
        assert forward.attributes["kvstore.partition"] == partition
        assert forward.attributes["rpc.grpc.status_code"] == 0
        [received] = trace.children(forward)
        assert (received.name, received.kind, received.instance) == (
            "replica.leader_write", "server", leader)
        assert received.attributes["kvstore.partition"] == partition
        assert received.attributes["rpc.grpc.status_code"] == 0
        [propose] = trace.children(received)
        assert (propose.name, propose.kind, propose.instance) == (
            "kvstore.raft/propose", "internal", leader)
        assert propose.attributes["kvstore.partition"] == partition
        assert propose.attributes["kvstore.raft.outcome"] == "applied"
        # The version of a put is its entry's index in the partition's log.
        assert propose.attributes["kvstore.raft.index"] == written.version
        assert propose.attributes["kvstore.raft.term"] == term
        assert propose.attributes["kvstore.raft.duplicate"] is False
        # No span per Raft message: none but the request's own in the trace.
        assert {span.name for span in trace.spans} == {
            "kvstore.v1.KV/Put", "replica.leader_write", "kvstore.raft/propose"}

        # A linearizable read at the follower: its own ReadIndex wait (the
        # follower asks the leader in Raft's messages), under its KV span.
        with kvclient.Client([cluster.nodes[follower].address], token_aware=False,
                             stream=False, tracing=provider, timeout=10) as client:
            assert client.get(KEY).value == b"through a follower"
        trace, server = _followed(exporter, collector, "Get")
        assert server.instance == follower
        assert server.attributes["kvstore.transport"] == "unary"
        [read] = trace.children(server, "kvstore.raft/read_index")
        assert (read.kind, read.instance) == ("internal", follower)
        assert read.attributes["kvstore.partition"] == partition
        assert read.attributes["kvstore.raft.outcome"] == "read"
        assert read.attributes["kvstore.version"] == written.version

        # Through the coordinator, which holds no replica: the read is
        # forwarded (leader_read) and the replica that serves it waits on
        # its ReadIndex.
        with kvclient.Client([cluster.coordinators[0].address], tracing=provider,
                             timeout=10) as client:
            assert client.get(KEY).value == b"through a follower"
        trace, server = _followed(exporter, collector, "Get")
        assert (server.service, server.instance) == ("kvstore-coordinator", "c1")
        [read] = [span for span in trace.named("kvstore.raft/read_index")
                  if span.attributes["kvstore.raft.outcome"] == "read"]
        [received] = [span for span in trace.spans if span.span_id == read.parent_span_id]
        assert (received.name, received.kind, received.instance) == (
            "replica.leader_read", "server", read.instance)
        [forward] = [span for span in trace.spans if span.span_id == received.parent_span_id]
        assert (forward.name, forward.kind, forward.instance) == (
            "replica.leader_read", "client", "c1")
        assert forward.parent_span_id == server.span_id
        assert forward.attributes["kvstore.replica"] == read.instance
        assert read.attributes["kvstore.partition"] == partition
        assert read.attributes["kvstore.version"] == written.version
