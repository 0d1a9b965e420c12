"""The gRPC edge of access control: a server interceptor that finds out who
each caller is (its bearer token, else its TLS certificate) and refuses a
call its identity may not make, with UNAUTHENTICATED (no or unknown
credentials) or PERMISSION_DENIED (known, but not allowed) and a message
that says what is missing; and, with a rate limit, RESOURCE_EXHAUSTED with
a RetryInfo for a client past its token bucket. Unary and streaming calls
alike: a stream is checked once, when it opens, and each operation of a
KV.Session is checked again by `admit_operation` (a read-only token may
open a session but not write through it; each operation spends the rate).

The decision is `kvstore.security.identity`'s; this module only reads what
the call presents. A call decided from its metadata alone goes straight to
its handler; one that needs the certificate (only in the handler's context)
runs behind a check that reads it first. The caller's identity is then in
`CALLER` for the handler (and the tasks it starts). Never logs or returns a
token.
"""

from __future__ import annotations

import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2

from kvclient.security import AUTHORIZATION
from kvstore.rpc.status import ERROR_DOMAIN
from kvstore.security.identity import ANONYMOUS, AccessPolicy, Identity, Refusal, Role
from kvstore.security.identity import required_role
from kvstore.security.rate_limit import RateLimiter

_BEARER = "bearer "
_KV = "/kvstore.v1.KV/"
_SESSION = "/kvstore.v1.KV/Session"
_WRITE_OPERATIONS = {"put", "delete", "put_many"}  # kinds of SessionOperation that write
RATE_LIMITED = "RATE_LIMITED"  # the ErrorInfo reason

# Who is calling, for the handler of the call (and the tasks it starts).
CALLER: contextvars.ContextVar[Identity] = contextvars.ContextVar("kvstore_caller",
                                                                  default=ANONYMOUS)


def bearer_token(metadata: Sequence[Any] | None) -> str | None:
    """The token of an `authorization: Bearer TOKEN` header; a header in
    another form counts as a token that no table holds."""
    for item in metadata or ():
        key, value = item
        if key == AUTHORIZATION:
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            return text[len(_BEARER):].strip() if text.lower().startswith(_BEARER) else text
    return None


def certificate_names(context: grpc.aio.ServicerContext) -> list[str] | None:
    """The common name and DNS names of the caller's certificate, or None
    when it presented none (or the link is plaintext)."""
    auth = context.auth_context()
    names = [n.decode(errors="replace")
             for n in (*auth.get("x509_common_name", ()), *auth.get("peer_dns", ()))]
    return names or None


def status_of_refusal(refusal: Refusal) -> grpc.StatusCode:
    return (grpc.StatusCode.UNAUTHENTICATED if refusal.unauthenticated
            else grpc.StatusCode.PERMISSION_DENIED)


def rate_limited(identity: Identity, retry_after: float) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED with an ErrorInfo (RATE_LIMITED) and a RetryInfo:
    waiting `retry_after` seconds helps."""
    status = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        message=f"{identity.name} is over its rate limit; retry in {retry_after:.3f} s "
                "or ask for a higher rate_limit_per_second")
    status.details.add().Pack(error_details_pb2.ErrorInfo(
        reason=RATE_LIMITED, domain=ERROR_DOMAIN,
        metadata={"retry_after_seconds": f"{retry_after:.3f}"}))
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(1, int(retry_after * 1e9)))
    status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


class AccessControl(grpc.aio.ServerInterceptor):
    """`policy` decides; `on_refused(reason)` counts each refusal
    (no_credentials, bad_token, not_permitted, rate_limited); `certificates`:
    whether callers may present TLS certificates (a TLS server), so that a
    call must be looked at in its context; `limiter`: the clients' rate
    limit (None: none), on `clock` (seconds)."""

    def __init__(self, policy: AccessPolicy, *, certificates: bool,
                 on_refused: Callable[[str], None] = lambda reason: None,
                 limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._certificates = certificates
        self._on_refused = on_refused
        self._limiter = limiter
        self._clock = clock

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        method = details.method
        if handler is None or required_role(method) is None:
            return handler
        token = bearer_token(details.invocation_metadata)
        if token is not None or not self._certificates:
            decided = self._admit(method, token, None)
            if isinstance(decided, Identity):
                CALLER.set(decided)  # seen by the handler, which runs in this context
                return handler
            refusal = decided

            async def refuse(context: grpc.aio.ServicerContext) -> None:
                await self._abort(context, refusal)

            return _guarded(handler, refuse)

        async def check(context: grpc.aio.ServicerContext) -> None:
            decided = self._admit(method, None, certificate_names(context))
            if isinstance(decided, Identity):
                CALLER.set(decided)
            else:
                await self._abort(context, decided)

        return _guarded(handler, check)

    def _admit(self, method: str, token: str | None,
               names: Sequence[str] | None) -> Identity | Refusal | status_pb2.Status:
        decided = self._policy.check(method, token, names)
        if isinstance(decided, Refusal):
            self._on_refused(decided.reason)
            return decided
        # A unary KV call spends one of its caller's rate; a Session spends
        # one per operation (`admit_operation`), not for opening.
        if method.startswith(_KV) and method != _SESSION:
            limited = self._spend(decided)
            if limited is not None:
                return limited
        return decided

    def _spend(self, identity: Identity) -> status_pb2.Status | None:
        """Peers and admins are never limited: their traffic is the cluster's own."""
        if self._limiter is None or identity.kind != "client":
            return None
        wait = self._limiter.take(identity.name, self._clock())
        if wait is None:
            return None
        self._on_refused("rate_limited")
        return rate_limited(identity, wait)

    def admit_operation(self, kind: str) -> status_pb2.Status | None:
        """Whether the caller of the running Session may run an operation of
        `kind` (a SessionOperation field): None, or the status to answer it with."""
        identity = CALLER.get()
        if kind in _WRITE_OPERATIONS and Role.WRITE not in identity.roles:
            refusal = self._policy.authorize(identity, Role.WRITE)
            if refusal is not None:
                self._on_refused(refusal.reason)
                return status_pb2.Status(code=status_of_refusal(refusal).value[0],
                                         message=refusal.message)
        return self._spend(identity)

    async def _abort(self, context: grpc.aio.ServicerContext,
                     refusal: Refusal | status_pb2.Status) -> None:
        if isinstance(refusal, Refusal):
            await context.abort(status_of_refusal(refusal), refusal.message)
        code = next(c for c in grpc.StatusCode if c.value[0] == refusal.code)
        await context.abort(code, refusal.message, trailing_metadata=(
            ("grpc-status-details-bin", refusal.SerializeToString()),))


def _guarded(handler: grpc.RpcMethodHandler[Any, Any],
             check: Check) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with `check(context)` awaited before its behaviour runs
    (the behaviours of an asyncio server are coroutine or async generator
    functions, though grpc's types call them plain functions)."""
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    )
    behaviour: Any
    make: Any
    behaviour, make = next((b, m) for b, m in kinds if b is not None)
    if inspect.isasyncgenfunction(behaviour):
        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for response in behaviour(request, context):
                yield response

        wrapped: Any = streaming
    else:
        async def answering(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await behaviour(request, context)

        wrapped = answering
    return make(wrapped, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
