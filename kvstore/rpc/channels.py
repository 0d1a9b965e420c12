"""Every gRPC server and client channel kvstore opens: its servers, the peer
links between nodes, and the operator tools, chaos suite and tests that reach
a node directly. With `kvclient.channels`, which makes the channels, this is
where a link's options and credentials are decided: a server's TLS (and
whether it requires client certificates) and its access control; a
channel's `kvclient.security.Credentials`.

Owns no server or channel: the caller starts, stops and closes them.
"""

from collections.abc import Sequence

import grpc
import grpc.aio

from kvclient import channels
from kvclient.channels import split_token
from kvclient.channel_settings import (DEFAULT_CHANNEL, SERVER_MIN_PING_INTERVAL_MS,
                                       ChannelSettings)
from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES
from kvclient.security import PLAINTEXT, Credentials
from kvstore.security.rotation import CertificateFiles


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # gRPC sets SO_REUSEPORT by default, which would let two processes
        # share a port silently; a taken port must be an error instead.
        ("grpc.so_reuseport", 0),
        # Clients' keepalive pings (kvclient.Keepalive), every second at
        # most, with or without a call in flight: gRPC's server default
        # (one every five minutes, none without calls) ends the connection
        # of a client that pings more often, GOAWAY too_many_pings.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", SERVER_MIN_PING_INTERVAL_MS),
    ]


def open_server(listen: str, max_message_bytes: int, *, tls: CertificateFiles | None = None,
                interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
                ) -> tuple[grpc.aio.Server, int]:
    """An asyncio server bound to `listen` ("host:port"), not yet started, and
    the port it got: 0 when the address is taken or invalid. gRPC raises
    RuntimeError for some addresses it cannot use. With `tls`: TLS only,
    with the files' certificate (re-read when they are reloaded) and their
    CA for callers' certificates (required when the files say so)."""
    server = grpc.aio.server(options=server_options(max_message_bytes),
                             interceptors=list(interceptors) or None)
    if tls is None:
        return server, server.add_insecure_port(listen)
    return server, server.add_secure_port(listen, tls.server_credentials())


def open_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 credentials: Credentials = PLAINTEXT,
                 settings: ChannelSettings = DEFAULT_CHANNEL) -> grpc.Channel:
    """A blocking channel to a kvstore process at "host:port"."""
    return channels.open_channel(address, max_message_bytes, credentials, settings)


def open_aio_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     credentials: Credentials = PLAINTEXT,
                     settings: ChannelSettings = DEFAULT_CHANNEL) -> grpc.aio.Channel:
    """An asyncio channel to a kvstore process at "host:port"."""
    return channels.open_aio_channel(address, max_message_bytes, credentials, settings)


__all__ = ["open_aio_channel", "open_channel", "open_server", "server_options", "split_token"]
