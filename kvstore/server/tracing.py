"""Tracing of a server process: its settings (the `[tracing]` table, the
`--tracing*` flags) and the OpenTelemetry SDK pipeline they describe.

Owns the checking of the settings and, in `process_tracing`, the one
TracerProvider of a process (its resource: service name and instance id;
its sampler; its exporter), shut down (flushing what it holds) when the
process stops. The spans themselves are made through `kvclient.tracing`
by the modules of each hop.

Off by default: then nothing here imports opentelemetry, and the process
gets None where it would get a `Tracing`. On, with `exporter = "otlp"`,
spans go over OTLP/gRPC to `endpoint` (or, when it is not set, where the
standard OTEL_EXPORTER_OTLP_* variables say, else localhost:4317) in
batches (the SDK's OTEL_BSP_* variables tune them); `"console"` prints
them to the process's log, for a look without a collector.

Sampling: a request that arrives in a trace is traced if, and only if,
its sender sampled it (so a client's trace is complete hop by hop); one
that starts here is sampled with probability `sample_ratio`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kvclient.tracing import Tracing

EXPORTERS = ("none", "otlp", "console")
# The flags (`kvstore node --tracing ...`) and the [tracing] keys they set.
FLAGS = {"tracing": "exporter", "tracing_endpoint": "endpoint",
         "tracing_sample_ratio": "sample_ratio"}

_NEEDS_EXTRA = ("tracing needs OpenTelemetry's SDK and OTLP exporter: "
                "pip install 'kvstore[tracing]'")


class TracingSettingError(ValueError):
    """A tracing setting is wrong; the message names it."""


@dataclass(frozen=True)
class TracingSettings:
    exporter: str = "none"
    endpoint: str | None = None  # OTLP/gRPC, e.g. http://127.0.0.1:4317
    sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise TracingSettingError(f"tracing exporter must be one of {', '.join(EXPORTERS)}, "
                                      f"got {self.exporter!r}")
        if self.endpoint is not None:
            if not isinstance(self.endpoint, str) or "://" not in self.endpoint:
                raise TracingSettingError(
                    f"tracing endpoint must be a URL such as http://127.0.0.1:4317, "
                    f"got {self.endpoint!r}")
            if self.exporter != "otlp":
                raise TracingSettingError("a tracing endpoint needs exporter = \"otlp\" "
                                          "(--tracing otlp)")
        ratio = self.sample_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (
                math.isfinite(ratio) and 0 <= ratio <= 1):
            raise TracingSettingError(f"tracing sample_ratio must be a number in [0, 1], "
                                      f"got {ratio!r}")

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"

    @classmethod
    def load(cls, table: Mapping[str, Any] | None,
             flags: Mapping[str, Any]) -> TracingSettings:
        """The [tracing] table of a config file, then the flags given."""
        values = dict(table or {})
        unknown = sorted(set(values) - set(FLAGS.values()))
        if unknown:
            raise TracingSettingError(f"unknown [tracing] setting(s): {', '.join(unknown)}; "
                                      f"known: {', '.join(sorted(FLAGS.values()))}")
        values.update({FLAGS[flag]: value for flag, value in flags.items()
                       if flag in FLAGS and value is not None})
        if values.get("endpoint") and "exporter" not in values:
            values["exporter"] = "otlp"  # an endpoint alone says where: OTLP
        try:
            return cls(**values)
        except TypeError as exc:
            raise TracingSettingError(f"bad [tracing] setting: {exc}") from None


@contextlib.contextmanager
def process_tracing(settings: TracingSettings, service: str,
                    instance: str) -> Iterator[Tracing | None]:
    """The process's `Tracing` (None when off) for the block; its spans are
    flushed and its exporter closed after it. ImportError, with what to
    install, when the tracing extra is missing."""
    if not settings.enabled:
        yield None
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (BatchSpanProcessor, ConsoleSpanExporter,
                                                    SpanExporter)
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise ImportError(_NEEDS_EXTRA) from None
    exporter: SpanExporter
    if settings.exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ImportError(_NEEDS_EXTRA) from None
        exporter = OTLPSpanExporter(endpoint=settings.endpoint)
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"kvstore-{service}",
                                  "service.instance.id": instance}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    try:
        yield Tracing(provider, "kvstore")
    finally:
        provider.shutdown()
