"""OpenTelemetry tracing on real processes: one put is followed hop by hop,
client -> coordinator (or node) -> replicas -> their storage commits, in one
trace, each span the child of the one that sent it.

The client's spans go to the SDK's InMemorySpanExporter; the servers' (3
nodes and a coordinator, started with KVSTORE_TRACING_ENDPOINT in their
environment) over OTLP/gRPC to a collector in this test
(tests/otlp_collector.py), as they would to Jaeger."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kvclient
from kvstore.ops.processes import NodeProcess
from tests.clusters import Cluster, poll
from tests.otlp_collector import Collector, ReceivedSpan

pytestmark = pytest.mark.timeout(120)


def _hex(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def _parent(span: ReadableSpan) -> str:
    return f"{span.parent.span_id:016x}" if span.parent is not None else ""


class _Trace:
    """The servers' spans of one trace, as the collector has them so far,
    and the commits linked to its writes."""

    def __init__(self, collector: Collector, trace_id: str) -> None:
        spans = collector.spans()
        self.spans = [span for span in spans if span.trace_id == trace_id]
        writes = {(span.trace_id, span.span_id) for span in self.spans
                  if span.name == "storage.write"}
        self.commits = [span for span in spans
                        if span.name == "storage.commit" and writes & set(span.links)]

    def named(self, name: str, kind: str | None = None) -> list[ReceivedSpan]:
        return [span for span in self.spans
                if span.name == name and (kind is None or span.kind == kind)]

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [span for span in self.spans if span.parent_span_id == parent.span_id]


def _client_spans(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = {span.name: span for span in exporter.get_finished_spans()}
    exporter.clear()
    return spans


def _check_replicas(trace: _Trace, server: ReceivedSpan, nodes: set[str]) -> None:
    """Below the KV span: a request to each of the 3 replicas (an apply at
    the write's origin, a merge at the others), each answered by the
    replica in a span of its own, whose storage write is linked to its
    commit (and the commit to it)."""
    sent = trace.children(server)
    assert sorted(span.name for span in sent) == ["replica.apply", "replica.merge",
                                                  "replica.merge"]
    assert {span.attributes["kvstore.replica"] for span in sent} == nodes
    for request in sent:
        node = request.attributes["kvstore.replica"]
        if request.kind == "internal":  # the coordinating node is this replica
            assert request.instance == node
            replica_span = request
        else:
            assert request.kind == "client"
            [replica_span] = trace.children(request)
            assert (replica_span.name, replica_span.kind, replica_span.instance) == (
                request.name, "server", node)
            assert replica_span.attributes["rpc.grpc.status_code"] == 0
        [write] = trace.children(replica_span)
        assert (write.name, write.instance) == ("storage.write", node)
        [commit] = [c for c in trace.commits if (write.trace_id, write.span_id) in c.links]
        assert (commit.trace_id, commit.span_id) in write.links
        assert commit.instance == node and commit.parent_span_id == ""
        assert commit.attributes["kvstore.commit.writes"] >= 1


def _complete(trace: _Trace) -> bool:
    """Every span of the put has reached the collector (each process
    exports its own, in batches of its own timing)."""
    servers = trace.named("kvstore.v1.KV/Put", "server")
    if len(servers) != 1 or len(trace.children(servers[0])) != 3:
        return False
    answered = all(trace.children(sent) for sent in trace.children(servers[0]))
    return answered and len(trace.named("storage.write")) == 3 and len(trace.commits) >= 3


def test_one_put_is_traced_from_the_client_through_every_hop_to_the_commits(
        make_cluster: object, monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = provider.get_tracer("the application")
    with Collector() as collector:
        # An endpoint alone turns OTLP on; spans leave every 50 ms, not 5 s.
        monkeypatch.setenv("KVSTORE_TRACING_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        cluster: Cluster = make_cluster(nodes=3, coordinators=1)  # type: ignore[operator]
        nodes = set(cluster.nodes)

        # Through the coordinator, over the KV.Session stream, inside a span
        # of the application's: the sync client's calls run on a thread of
        # its own, and still have the caller's span as their parent.
        with kvclient.Client([cluster.coordinators[0].address], tracing=provider) as client:
            with app.start_as_current_span("request") as request:
                client.put(b"traced", b"through a coordinator")
        spans = _client_spans(exporter)
        call, attempt = spans["kvclient.put"], spans["kvstore.v1.KV/Put"]
        trace_id, request_id = _hex(spans["request"])
        assert request.get_span_context().trace_id == int(trace_id, 16)
        assert _parent(call) == request_id and _parent(attempt) == _hex(call)[1]
        assert {_hex(span)[0] for span in spans.values()} == {trace_id}
        assert attempt.attributes is not None and attempt.attributes["kvstore.attempt"] == 1
        poll(lambda: _complete(_Trace(collector, trace_id)), 30,
             "the servers' spans of the put reach the collector")
        trace = _Trace(collector, trace_id)
        [server] = trace.named("kvstore.v1.KV/Put", "server")
        assert server.parent_span_id == _hex(attempt)[1]
        assert (server.service, server.instance) == ("kvstore-coordinator", "c1")
        assert server.attributes["kvstore.transport"] == "session"
        assert server.attributes["rpc.grpc.status_code"] == 0
        _check_replicas(trace, server, nodes)

        # Straight to the key's preferred replica (token-aware), as unary
        # calls: the trace context goes as metadata, and the node is the
        # write's origin itself.
        with kvclient.Client(sorted(n.address for n in cluster.nodes.values()),
                             stream=False, tracing=provider) as client:
            client.put(b"traced", b"through a node")
        spans = _client_spans(exporter)
        trace_id, attempt_id = _hex(spans["kvstore.v1.KV/Put"])
        assert _parent(spans["kvstore.v1.KV/Put"]) == _hex(spans["kvclient.put"])[1]
        poll(lambda: _complete(_Trace(collector, trace_id)), 30,
             "the servers' spans of the second put reach the collector")
        trace = _Trace(collector, trace_id)
        [server] = trace.named("kvstore.v1.KV/Put", "server")
        assert server.parent_span_id == attempt_id
        assert server.service == "kvstore-node" and server.instance in nodes
        assert server.attributes["kvstore.transport"] == "unary"
        [local] = trace.named("replica.apply", "internal")
        assert local.instance == server.instance
        _check_replicas(trace, server, nodes)


# Run in a fresh interpreter against the node at argv[1]: an application
# that sets its SDK provider as the global one, and a client left at its
# default, which then traces.
AUTOMATIC = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import kvclient
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
untraced = kvclient.Client([sys.argv[1]])
untraced.put(b"k", b"before the provider")  # decided at its first call: not traced
trace.set_tracer_provider(provider)
untraced.put(b"k", b"still not")
with kvclient.Client([sys.argv[1]]) as client:
    client.get(b"k")
untraced.close()
print(json.dumps(sorted(span.name for span in exporter.get_finished_spans())))
"""


def test_a_client_left_at_its_default_traces_once_the_application_sets_a_provider(
        node: NodeProcess) -> None:
    done = subprocess.run([sys.executable, "-c", AUTOMATIC, node.address], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["kvclient.get", "kvstore.v1.KV/Get"]
