"""Every gRPC server and client channel kvstore opens: its servers, the peer
links between nodes, and the operator tools, chaos suite and tests that reach
a node directly. With `kvclient.channels`, which makes the channels, this is
where a link's options (and, once TLS comes, its credentials) are decided.

Owns no server or channel: the caller starts, stops and closes them.
"""

import grpc
import grpc.aio

from kvclient import channels
from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES


def server_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # gRPC sets SO_REUSEPORT by default, which would let two processes
        # share a port silently; a taken port must be an error instead.
        ("grpc.so_reuseport", 0),
    ]


def open_server(listen: str, max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    """An asyncio server bound to `listen` ("host:port"), not yet started, and
    the port it got: 0 when the address is taken or invalid. gRPC raises
    RuntimeError for some addresses it cannot use."""
    server = grpc.aio.server(options=server_options(max_message_bytes))
    return server, server.add_insecure_port(listen)


def open_channel(address: str,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A blocking channel to a kvstore process at "host:port"."""
    return channels.open_channel(address, max_message_bytes)


def open_aio_channel(address: str,
                     max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """An asyncio channel to a kvstore process at "host:port"."""
    return channels.open_aio_channel(address, max_message_bytes)
