"""Tracing without a process: whether a client traces, the trace context on
the wire (and bad ones), the servers' [tracing] settings, and the spans of
a group commit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import kvclient
from kvclient import tracing
from kvclient.pb import kv_pb2
from kvclient.requests import session_operation
from kvstore.errors import FailedPrecondition, Unavailable
from kvstore.leader.commands import Put
from kvstore.leader.driver import IntervalTicker, RaftDriver
from kvstore.leader.host import MultiRaft
from kvstore.leader.local import LocalLeader
from kvstore.leader.memory_store import MemoryRaftStore
from kvstore.leader.settings import HostSettings
from kvstore.server.config import ConfigError, load_node_config
from kvstore.server.tracing import TracingSettingError, TracingSettings, process_tracing
from kvstore.storage.store import Store
from tests.test_group_commit import WAIT_SECONDS, FakeEngine, started, until, write

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


# -- whether a client traces ---------------------------------------------------


def test_a_client_traces_through_a_given_provider_and_never_when_told_not_to(
        provider: TracerProvider) -> None:
    assert isinstance(tracing.resolve(provider), tracing.Tracing)
    assert tracing.resolve(False) is None


def test_by_default_a_client_traces_only_once_an_sdk_provider_is_the_global_one() -> None:
    # No application here set one: the global provider is OpenTelemetry's
    # stand-in, and the client does not trace.
    assert tracing.resolve(None) is None


@pytest.mark.parametrize("option", ["yes", 1, object()])
def test_a_tracing_option_that_is_none_of_the_kinds_is_refused(option: object) -> None:
    with pytest.raises(TypeError, match="tracing must be None"):
        kvclient.Client(["127.0.0.1:1"], tracing=option)  # type: ignore[arg-type]


# -- the trace context on the wire ---------------------------------------------


def test_a_span_goes_as_w3c_traceparent_and_comes_back_as_the_parent(
        provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    traced = tracing.Tracing(provider, "kvclient")
    with traced.span("kvstore.v1.KV/Put", "client") as sent:
        carried = traced.outgoing()
    context = sent.get_span_context()
    version, trace_id, span_id, flags = carried.traceparent.split("-")
    assert (version, trace_id, span_id) == ("00", f"{context.trace_id:032x}",
                                            f"{context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
    assert tracing.metadata_of(carried) == (("traceparent", carried.traceparent),)
    # The receiver's span is the sender's child, by the operation's field
    # and by a unary call's metadata alike.
    for parent in (traced.incoming(carried),
                   traced.incoming_metadata([("x-other", "1"), *tracing.metadata_of(carried)])):
        received = traced.start("kvstore.v1.KV/Put", "server", parent=parent)
        received.end()
        assert received.parent is not None and received.parent.span_id == context.span_id
        assert received.get_span_context().trace_id == context.trace_id


def test_an_operation_carries_the_trace_context_only_when_traced() -> None:
    request = kv_pb2.PutRequest(key=b"k", value=b"v")
    assert not session_operation("Put", request, 1, 1.0).HasField("trace")
    carried = kv_pb2.TraceContext(traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert session_operation("Put", request, 1, 1.0, carried).trace == carried


@pytest.mark.parametrize("traceparent", ["garbage", "00-00000000000000000000000000000000-"
                                         "0000000000000000-01", "ff-" + "1" * 32 + "-x-01"])
def test_a_malformed_traceparent_starts_a_new_trace_instead_of_failing(
        provider: TracerProvider, traceparent: str) -> None:
    traced = tracing.Tracing(provider, "kvstore")
    parent = traced.incoming(kv_pb2.TraceContext(traceparent=traceparent))
    span = traced.start("kvstore.v1.KV/Put", "server", parent=parent)
    span.end()
    assert span.parent is None and span.get_span_context().is_valid
    assert traced.incoming(kv_pb2.TraceContext()) is None
    assert traced.incoming_metadata([("traceparent", b"\x00")]) is None


def test_a_failed_call_records_its_status_on_the_span(
        provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    traced = tracing.Tracing(provider, "kvclient")
    with pytest.raises(kvclient.errors.Unavailable):
        with traced.span("kvclient.put"):
            raise kvclient.errors.Unavailable("every replica is down")
    with pytest.raises(kvclient.errors.InvalidArgument):
        with traced.span("kvstore.v1.KV/Put", "server", server=True):
            raise kvclient.errors.InvalidArgument("key too long")
    client_span, server_span = exporter.get_finished_spans()
    assert client_span.status.status_code == StatusCode.ERROR
    assert client_span.attributes is not None
    assert client_span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.UNAVAILABLE.value[0]
    assert client_span.events[0].name == "exception"
    # The caller's mistake is not the server's error (OpenTelemetry's gRPC conventions).
    assert server_span.kind == SpanKind.SERVER
    assert server_span.status.status_code == StatusCode.UNSET
    assert server_span.attributes is not None
    assert server_span.attributes["rpc.grpc.status_code"] == \
        grpc.StatusCode.INVALID_ARGUMENT.value[0]


# -- a server's settings ---------------------------------------------------------


def test_tracing_is_off_unless_configured_and_then_costs_no_import() -> None:
    assert not TracingSettings().enabled
    with process_tracing(TracingSettings(), "node", "n1") as traced:
        assert traced is None


def test_the_tracing_table_and_flags_fill_the_settings(tmp_path: Path) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text('[tracing]\nexporter = "otlp"\nsample_ratio = 0.25\n')
    config = load_node_config(config_file, {"node_id": "n1"})
    assert config.tracing == TracingSettings("otlp", None, 0.25)
    flagged = load_node_config(config_file, {"node_id": "n1", "tracing_sample_ratio": 1.0,
                                             "tracing_endpoint": "http://127.0.0.1:4317"})
    assert flagged.tracing == TracingSettings("otlp", "http://127.0.0.1:4317", 1.0)
    # An endpoint alone says OTLP.
    assert TracingSettings.load(None, {"tracing_endpoint": "http://h:4317"}).exporter == "otlp"


@pytest.mark.parametrize("table, message", [
    ('exporter = "jaeger"', "exporter must be one of none, otlp, console"),
    ('exporter = "console"\nendpoint = "http://h:4317"', "endpoint needs exporter"),
    ('endpoint = "127.0.0.1:4317"', "endpoint must be a URL"),
    ("sample_ratio = 2", r"sample_ratio must be a number in \[0, 1\]"),
    ('sample_ratio = "all"', "sample_ratio must be a number"),
    ("rate = 1", "unknown \\[tracing\\] setting"),
])
def test_a_bad_tracing_setting_is_refused_by_name(tmp_path: Path, table: str,
                                                  message: str) -> None:
    config_file = tmp_path / "node.toml"
    config_file.write_text(f"[tracing]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        load_node_config(config_file, {"node_id": "n1"})
    with pytest.raises(TracingSettingError):
        TracingSettings(exporter="jaeger")


# -- the spans of a group commit ---------------------------------------------------


async def test_one_commit_has_one_span_linked_to_each_of_its_traced_writes(
        provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    traced = tracing.Tracing(provider, "kvstore")
    engine = FakeEngine(blocked=True)
    async with asyncio.timeout(WAIT_SECONDS):
        async with Store(engine, tracing=traced) as store:
            first = asyncio.create_task(store.write(write(b"first")))  # not in a trace
            await started(engine.commit_started)

            async def traced_write(key: bytes) -> None:
                with traced.span(f"replica.apply {key.decode()}", "server"):
                    await store.write(write(key))

            held = [asyncio.create_task(traced_write(key)) for key in (b"a", b"b", b"c")]
            await until(lambda: store.queued == 3)
            engine.gate.set()
            await asyncio.gather(first, *held)
    assert engine.batches == [[b"first"], [b"a", b"b", b"c"]]
    spans = exporter.get_finished_spans()
    [commit] = [span for span in spans if span.name == "storage.commit"]
    writes = [span for span in spans if span.name == "storage.write"]
    requests = {span.get_span_context().span_id: span for span in spans
                if span.name.startswith("replica.apply")}
    assert len(writes) == 3  # the untraced write has none, and its commit none either
    assert commit.parent is None and commit.attributes == {"kvstore.commit.writes": 3}
    assert {link.context.span_id for link in commit.links} == {
        span.get_span_context().span_id for span in writes}
    for span in writes:
        assert span.parent is not None and span.parent.span_id in requests
        assert [link.context.span_id for link in span.links] == [
            commit.get_span_context().span_id]
        assert span.start_time is not None and commit.start_time is not None
        assert span.start_time <= commit.start_time  # queued before its commit started


def test_tracing_true_without_opentelemetry_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)
    with pytest.raises(ImportError, match=r"pip install 'kvclient\[tracing\]'"):
        kvclient.Client(["127.0.0.1:1"], tracing=True)


@pytest.mark.process  # a fresh interpreter
def test_a_server_that_does_not_trace_never_imports_opentelemetry(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from kvstore.server import node, coordinator_process, leader_node\n"
        "from kvstore.rpc.grpc_server import traced_process\n"
        "from kvstore.server.config import load_node_config\n"
        "config = load_node_config(None, {'node_id': 'n1'})\n"
        "with traced_process(config.tracing, 'node', 'n1') as tracing:\n"
        "    assert tracing is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- leader mode: the spans of the wait on Raft --------------------------------------


class _Nowhere:
    """A transport for a node alone: its groups of one send nothing it needs."""

    def send(self, envelope: object) -> None:
        pass


async def test_a_proposal_and_a_read_index_wait_have_spans_within_a_trace_only(
        provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    traced = tracing.Tracing(provider, "kvstore")
    store = MemoryRaftStore()
    host = MultiRaft("n1", store, HostSettings(), clock_ms=lambda: 0)
    host.add_group(0, ("n1",))  # alone: it elects itself
    host.add_group(1, ("n1", "n2"))  # n2 never answers: no leader, ever
    host.campaign(0)
    async with asyncio.timeout(WAIT_SECONDS):
        async with RaftDriver(host, store, _Nowhere(),
                              IntervalTicker(0.005)) as driver:
            local = LocalLeader("n1", driver, tracing=traced)
            await until(lambda: host.leader(0) == "n1")
            untraced = await local.write(0, Put(b"k", b"untraced", b"r0"), 1.0)
            assert exporter.get_finished_spans() == ()  # outside any trace: no span
            with traced.span("replica.leader_write", "server"):
                written = await local.write(0, Put(b"k", b"v", b"r1"), 1.0)
                with pytest.raises(FailedPrecondition, match="compare-and-set failed"):
                    await local.write(0, Put(b"k", b"w", b"r2", if_version=untraced.version),
                                      1.0)
                again = await local.write(0, Put(b"k", b"v", b"r1"), 1.0)  # a retry
                read = await local.read(0, b"k", 1.0)
                with pytest.raises(Unavailable, match="not the leader"):
                    await local.write(1, Put(b"k", b"v", b"r3"), 1.0)
    [request] = [s for s in exporter.get_finished_spans() if s.name == "replica.leader_write"]
    proposals = [s for s in exporter.get_finished_spans() if s.name == "kvstore.raft/propose"]
    [read_span] = [s for s in exporter.get_finished_spans()
                   if s.name == "kvstore.raft/read_index"]
    for span in (*proposals, read_span):
        assert span.kind == SpanKind.INTERNAL
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
    term = host.status(0).term
    assert [dict(s.attributes or {}) for s in proposals] == [
        {"kvstore.partition": 0, "kvstore.raft.outcome": "applied",
         "kvstore.raft.index": written.index, "kvstore.raft.duplicate": False,
         "kvstore.raft.term": term},
        {"kvstore.partition": 0, "kvstore.raft.outcome": "version_mismatch",
         "kvstore.raft.index": written.index + 1, "kvstore.raft.duplicate": False,
         "kvstore.raft.term": term},
        {"kvstore.partition": 0, "kvstore.raft.outcome": "applied",
         "kvstore.raft.index": written.index, "kvstore.raft.duplicate": True,
         "kvstore.raft.term": term},
        {"kvstore.partition": 1, "kvstore.raft.outcome": "NOT_LEADER",
         "rpc.grpc.status_code": grpc.StatusCode.UNAVAILABLE.value[0]},
    ]
    assert [s.status.status_code for s in proposals] == [StatusCode.UNSET] * 3 + [
        StatusCode.ERROR]
    assert again.version == read.version == written.version
    assert dict(read_span.attributes or {}) == {
        "kvstore.partition": 0, "kvstore.raft.outcome": "read",
        "kvstore.version": written.version}
