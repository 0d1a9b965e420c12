"""How kvclient opens its gRPC channels, blocking and asyncio: the one place
that decides a channel's options (with the caller's keepalive, backoff and
raw options, `kvclient.channel_settings`) and its credentials
(`kvclient.security`).

kvstore's peer links and tools open their channels here too, through
`kvstore.rpc.channels`. Owns no channel: the caller closes what it opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import grpc
import grpc.aio

from kvclient.channel_settings import DEFAULT_CHANNEL, ChannelSettings
from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES
from kvclient.fork_guard import note_channel_opened
from kvclient.security import AUTHORIZATION, PLAINTEXT, Credentials


def channel_options(max_message_bytes: int, credentials: Credentials = PLAINTEXT,
                    settings: ChannelSettings = DEFAULT_CHANNEL) -> list[tuple[str, Any]]:
    """kvclient's channel arguments, then `settings`' (which replace those
    of the same name)."""
    options: dict[str, Any] = {
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.max_receive_message_length": max_message_bytes,
        # gRPC's default reconnect backoff grows to two minutes; a server
        # that restarts must be reachable again within about a second
        # (settings.max_reconnect_backoff).
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.min_reconnect_backoff_ms": 100,
        # Connections of its own: by default gRPC shares a connection between
        # channels to one address with the same options, so a new client
        # took over the reconnect backoff of an old one's connection to a
        # server that had since restarted, and failed at once until it ran out.
        "grpc.use_local_subchannel_pool": 1,
    }
    if credentials.tls is not None and credentials.tls.server_name:
        options["grpc.ssl_target_name_override"] = credentials.tls.server_name
    options.update(settings.options())
    return list(options.items())


def _channel_credentials(credentials: Credentials) -> grpc.ChannelCredentials:
    """TLS credentials, with the token as gRPC's access-token call credentials."""
    assert credentials.tls is not None
    ca, key, cert = credentials.tls.load()
    secure = grpc.ssl_channel_credentials(ca, key, cert)
    if credentials.token is None:
        return secure
    return grpc.composite_channel_credentials(
        secure, grpc.access_token_call_credentials(credentials.token))


def _with_token(metadata: Sequence[tuple[str, str]] | None,
                token: str) -> list[tuple[str, str]]:
    return [*(metadata or ()), (AUTHORIZATION, f"Bearer {token}")]


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _BlockingBearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """The token as metadata on every call of a plaintext blocking channel."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: Any) -> Any:
        return _Details(details.method, details.timeout,
                        _with_token(details.metadata, self._token), details.credentials,
                        getattr(details, "wait_for_ready", None),
                        getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_details(details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(details.method, details.timeout,
                                      _with_token(details.metadata, token),  # type: ignore[arg-type]
                                      details.credentials, details.wait_for_ready)


# grpc.aio files each interceptor under one kind only: one class per kind.
class _UnaryUnaryBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._token), request)


class _UnaryStreamBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_aio_details(details, self._token), request)


class _StreamUnaryBearer(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_unary(self, continuation: Any, details: Any,
                                     requests: Any) -> Any:
        return await continuation(_aio_details(details, self._token), requests)


class _StreamStreamBearer(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_stream_stream(self, continuation: Any, details: Any,
                                      requests: Any) -> Any:
        return await continuation(_aio_details(details, self._token), requests)


def split_token(credentials: Credentials) -> tuple[Credentials, tuple[tuple[str, str], ...]]:
    """For a caller that passes metadata on its calls itself: the channel's
    credentials and the metadata to send. A plaintext token becomes that
    metadata, so the channel needs no interceptor (whose wrappers would cost
    Python work on every message of a long-lived stream); over TLS the token
    stays gRPC's call credentials."""
    if credentials.tls is not None or credentials.token is None:
        return credentials, ()
    return PLAINTEXT, ((AUTHORIZATION, f"Bearer {credentials.token}"),)


def open_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 credentials: Credentials = PLAINTEXT,
                 settings: ChannelSettings = DEFAULT_CHANNEL) -> grpc.Channel:
    """A blocking channel to "host:port"."""
    note_channel_opened()
    options = channel_options(max_message_bytes, credentials, settings)
    if credentials.tls is not None:
        return grpc.secure_channel(address, _channel_credentials(credentials), options=options)
    channel = grpc.insecure_channel(address, options=options)
    if credentials.token is None:
        return channel
    return grpc.intercept_channel(channel, _BlockingBearer(credentials.token))


def open_aio_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     credentials: Credentials = PLAINTEXT,
                     settings: ChannelSettings = DEFAULT_CHANNEL) -> grpc.aio.Channel:
    """An asyncio channel to "host:port", bound to the running event loop."""
    note_channel_opened()
    options = channel_options(max_message_bytes, credentials, settings)
    if credentials.tls is not None:
        return grpc.aio.secure_channel(address, _channel_credentials(credentials),
                                       options=options)
    if credentials.token is None:
        return grpc.aio.insecure_channel(address, options=options)
    token = credentials.token
    return grpc.aio.insecure_channel(address, options=options, interceptors=[
        _UnaryUnaryBearer(token), _UnaryStreamBearer(token), _StreamUnaryBearer(token),
        _StreamStreamBearer(token)])
