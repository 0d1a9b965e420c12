"""A tiny OpenTelemetry collector for the tests: an OTLP/gRPC trace
receiver on loopback that keeps every span it is sent, so a test can read
what real server processes exported (as Jaeger or any collector would
receive it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from kvstore.ops.ports import free_port

# OTLP's span kinds, by number (opentelemetry/proto/trace/v1/trace.proto).
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer",
          5: "consumer"}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids as hex (as the SDK's span contexts print them)."""

    name: str
    kind: str
    service: str
    instance: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    attributes: dict[str, Any] = field(hash=False)
    links: tuple[tuple[str, str], ...]  # (trace id, span id) of each


def _value(value: Any) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which is not None else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        name=span.name, kind=_KINDS.get(span.kind, str(span.kind)),
                        service=resource.get("service.name", ""),
                        instance=resource.get("service.instance.id", ""),
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                        links=tuple((link.trace_id.hex(), link.span_id.hex())
                                    for link in span.links)))
        self._collector.add(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class Collector:
    """`with Collector() as collector:` serves OTLP/gRPC at `collector.endpoint`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Receiver(self), self._server)
        if self._server.add_insecure_port(f"127.0.0.1:{self.port}") == 0:
            raise RuntimeError(f"the test collector cannot listen on 127.0.0.1:{self.port}")

    def add(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> Collector:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(grace=None)

    def __iter__(self) -> Iterator[ReceivedSpan]:
        return iter(self.spans())
