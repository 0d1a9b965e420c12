"""The gRPC edge of access control: a server interceptor that finds out who
each caller is (its bearer token, else its TLS certificate) and refuses a
call its identity may not make, with UNAUTHENTICATED (no or unknown
credentials) or PERMISSION_DENIED (known, but not allowed) and a message
that says what is missing. Unary and streaming calls alike: a stream is
checked once, when it opens.

The decision is `kvstore.security.identity`'s; this module only reads what
the call presents. A call decided from its metadata alone goes straight to
its handler; one that needs the certificate (only in the handler's context)
runs behind a check that reads it first. Never logs or returns a token.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from kvclient.security import AUTHORIZATION
from kvstore.security.identity import AccessPolicy, Refusal, required_role

_BEARER = "bearer "


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


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


class AccessControl(grpc.aio.ServerInterceptor):
    """`policy` decides; `on_refused(reason)` counts each refusal;
    `certificates`: whether callers may present TLS certificates (a TLS
    server), so that a call must be looked at in its context."""

    def __init__(self, policy: AccessPolicy, *, certificates: bool,
                 on_refused: Callable[[str], None] = lambda reason: None) -> None:
        self._policy = policy
        self._certificates = certificates
        self._on_refused = on_refused

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
            decided = self._policy.check(method, token, None)
            if not isinstance(decided, Refusal):
                return handler
            refusal = decided

            async def refuse(context: grpc.aio.ServicerContext) -> None:
                await self._refuse(context, refusal)

            return _guarded(handler, refuse)

        async def check(context: grpc.aio.ServicerContext) -> None:
            decided = self._policy.check(method, None, certificate_names(context))
            if isinstance(decided, Refusal):
                await self._refuse(context, decided)

        return _guarded(handler, check)

    async def _refuse(self, context: grpc.aio.ServicerContext, refusal: Refusal) -> None:
        self._on_refused(refusal.reason)
        await context.abort(status_of_refusal(refusal), refusal.message)


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
