"""OpenTelemetry spans of kvstore's calls, and their trace context on the wire.

Owns whether a client traces (`check_option`, `resolve`); `Tracing`, what a
client or a server process traces through (its tracer, and the names,
attributes and outcomes of the spans of every hop); and the carrying of
the W3C Trace Context (`traceparent`, `tracestate`): as gRPC metadata on a
unary call, and as the `TraceContext` field of each operation batched in a
message (KV.Session, Replica.Stream), where metadata, one per call, would
name one span for the many operations of a stream.

Never imports opentelemetry unless tracing is on: a client or a process
that does not trace loads none of it, and its calls pay one `is None` test.

A client's `tracing=` (Client, AsyncClient):
- None, the default: traced when, at its first call, the application has
  set an OpenTelemetry SDK TracerProvider as the global one
  (`opentelemetry.trace.set_tracer_provider`), as natively instrumented
  libraries do; not traced otherwise, and opentelemetry is not imported;
- True: traced through the global TracerProvider, whatever it is then or
  later (needs opentelemetry-api: `pip install 'kvclient[tracing]'`);
- False: never traced;
- a TracerProvider: traced through it.

The spans of one call (the names every hop uses):
    kvclient.put                    client, INTERNAL: the call, retries included
      kvstore.v1.KV/Put             client, CLIENT: one attempt, at one address
        kvstore.v1.KV/Put           node or coordinator, SERVER
          replica.apply             its request to one replica (CLIENT), or to
                                    its own (INTERNAL)
            replica.apply           that replica, SERVER
              storage.write         the write waiting for and in its commit,
                                    linked to the commit's span
    storage.commit                  one group commit, linked to its writes'
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Union

import grpc

from kvclient.pb import kv_pb2

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, TracerProvider

TracingOption = Union[bool, None, "TracerProvider"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
KV_SERVICE = "kvstore.v1.KV"
REPLICA_SERVICE = "kvstore.v1.Replica"

# The span of a client call, by the KV method that carries it.
CALL_SPANS = {"Get": "kvclient.get", "Put": "kvclient.put", "Delete": "kvclient.delete",
              "GetMany": "kvclient.get_many", "PutMany": "kvclient.put_many",
              "Ping": "kvclient.ping"}

# OpenTelemetry's gRPC conventions: a server span is an error only for
# these (the others are the caller's doing); a client span for any but OK.
_SERVER_FAULTS = frozenset({
    grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS})
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

_NEEDS_API = ("kvclient's tracing=True needs OpenTelemetry's API: "
              "pip install 'kvclient[tracing]' (or opentelemetry-api)")


def check_option(option: object) -> TracingOption:
    """`option` as a client's `tracing=`; TypeError for anything else, and
    ImportError for True without opentelemetry installed."""
    if option is True:
        try:
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            raise ImportError(_NEEDS_API) from None
        return True
    if option is None or option is False:
        return option
    if callable(getattr(option, "get_tracer", None)):
        return option  # type: ignore[return-value]  # a TracerProvider, duck-typed
    raise TypeError(f"tracing must be None (automatic), True, False or an OpenTelemetry "
                    f"TracerProvider, got {type(option).__name__}")


def resolve(option: TracingOption) -> Tracing | None:
    """What a client with `tracing=option` traces through, now (None: nothing)."""
    if option is False:
        return None
    if option is None:
        api = sys.modules.get("opentelemetry.trace")
        if api is None:  # the application has not even imported it
            return None
        provider = api.get_tracer_provider()
        if isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider)):
            return None
        return Tracing(provider, "kvclient")
    if option is True:
        from opentelemetry import trace

        return Tracing(trace.get_tracer_provider(), "kvclient")
    return Tracing(option, "kvclient")


def status_code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status `error` stands for: a kvclient error's, an
    RpcError's, CANCELLED for a cancellation, else UNKNOWN."""
    code = getattr(error, "code", None)
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(error, grpc.RpcError) and callable(code):
        called = code()
        if isinstance(called, grpc.StatusCode):
            return called
    if type(error).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _version(distribution: str) -> str | None:
    for name in (distribution, "kvstore"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


class Tracing:
    """Spans through one TracerProvider, and their context on the wire.

    `scope` is the instrumentation scope the spans are filed under
    ("kvclient" or "kvstore")."""

    def __init__(self, provider: TracerProvider, scope: str) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._trace = trace
        self._tracer = provider.get_tracer(scope, _version(scope))
        # W3C Trace Context always, whatever the global propagator: the
        # operations' TraceContext field is that format.
        self._propagator = TraceContextTextMapPropagator()
        self._kinds = {"client": trace.SpanKind.CLIENT, "server": trace.SpanKind.SERVER,
                       "internal": trace.SpanKind.INTERNAL}

    # -- spans -----------------------------------------------------------------

    def start(self, name: str, kind: str = "internal", *, parent: Context | None = None,
              root: bool = False, attributes: dict[str, Any] | None = None,
              links: Sequence[Link] = (), start_time: int | None = None) -> Span:
        """A span (not made current): a child of `parent`, else (unless
        `root`) of the current span, else a root. `start_time` in ns since
        the epoch."""
        if root:
            from opentelemetry.context import Context

            parent = Context()
        return self._tracer.start_span(name, context=parent, kind=self._kinds[kind],
                                       attributes=attributes, links=links,
                                       start_time=start_time)

    @contextlib.contextmanager
    def span(self, name: str, kind: str = "internal", *, parent: Context | None = None,
             attributes: dict[str, Any] | None = None, server: bool = False,
             code_of: Callable[[BaseException], grpc.StatusCode] = status_code_of,
             ) -> Iterator[Span]:
        """A span made current for the block and ended after it; an
        exception out of the block is recorded on it (with its gRPC status,
        `code_of(error)`, as `server` or not judges it) and raised on."""
        span = self.start(name, kind, parent=parent, attributes=attributes)
        with self._trace.use_span(span, end_on_exit=True, record_exception=False,
                                  set_status_on_exception=False):
            try:
                yield span
            except BaseException as error:
                self.failed(span, error, code_of(error), server=server)
                raise

    def use(self, span: Span, *, end: bool) -> contextlib.AbstractContextManager[Span]:
        """`span` made current for a block, and ended after it if `end`."""
        return self._trace.use_span(span, end_on_exit=end, record_exception=False,
                                    set_status_on_exception=False)

    def in_trace(self) -> bool:
        """Whether the current context has a span: work done now belongs to a trace."""
        return bool(self._trace.get_current_span().get_span_context().is_valid)

    def link(self, span: Span) -> Link:
        return self._trace.Link(span.get_span_context())

    def failed(self, span: Span, error: BaseException, code: grpc.StatusCode | None = None,
               *, server: bool = False) -> None:
        """Record `error` on `span`, with its gRPC status."""
        span.record_exception(error)
        self.ended_with(span, code if code is not None else status_code_of(error),
                        f"{type(error).__name__}: {error}", server=server)

    def ended_with(self, span: Span, code: grpc.StatusCode | int, message: str = "", *,
                   server: bool = False) -> None:
        """Set the gRPC status the operation of `span` ended with (an int:
        its number), and the span's status by OpenTelemetry's conventions."""
        if isinstance(code, int):
            code = _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK and (not server or code in _SERVER_FAULTS):
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR,
                                               message or code.name))

    # -- trace context on the wire -----------------------------------------------

    def outgoing(self, span: Span | None = None) -> kv_pb2.TraceContext:
        """The trace context of `span` (default: the current one), as an
        operation carries it."""
        carrier: dict[str, str] = {}
        context = None if span is None else self._trace.set_span_in_context(span)
        self._propagator.inject(carrier, context=context)
        return kv_pb2.TraceContext(traceparent=carrier.get(TRACEPARENT, ""),
                                   tracestate=carrier.get(TRACESTATE, ""))

    def incoming(self, carried: kv_pb2.TraceContext) -> Context | None:
        """The context an operation carried; None when it carried none (a
        malformed one gives a context without a span: what follows is a root)."""
        if not carried.traceparent:
            return None
        return self._propagator.extract({TRACEPARENT: carried.traceparent,
                                         TRACESTATE: carried.tracestate})

    def incoming_metadata(self, metadata: Sequence[tuple[str, Any]] | None) -> Context | None:
        """The context a unary call's metadata carried; None when none."""
        carrier = {key: value for key, value in (metadata or ())
                   if key in (TRACEPARENT, TRACESTATE) and isinstance(value, str)}
        if TRACEPARENT not in carrier:
            return None
        return self._propagator.extract(carrier)


def metadata_of(carried: kv_pb2.TraceContext) -> tuple[tuple[str, str], ...]:
    """A trace context as a unary call's metadata."""
    metadata: list[tuple[str, str]] = []
    if carried.traceparent:
        metadata.append((TRACEPARENT, carried.traceparent))
    if carried.tracestate:
        metadata.append((TRACESTATE, carried.tracestate))
    return tuple(metadata)


def rpc_attributes(service: str, method: str, **more: Any) -> dict[str, Any]:
    """OpenTelemetry's RPC attributes of a call of `service`/`method`, and `more`."""
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method, **more}


def address_attributes(address: str) -> dict[str, Any]:
    """`server.address` and `server.port` of "host:port"."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return {"server.address": address}
    return {"server.address": host.strip("[]"), "server.port": int(port)}
