"""How kvclient opens its gRPC channels, blocking and asyncio: the one place
that decides a channel's options (and, once TLS comes, its credentials).

kvstore's peer links and tools open their channels here too, through
`kvstore.rpc.channels`. Owns no channel: the caller closes what it opens.
"""

from __future__ import annotations

import grpc
import grpc.aio

from kvclient.config import DEFAULT_MAX_MESSAGE_BYTES
from kvclient.fork_guard import note_channel_opened


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # gRPC's default reconnect backoff grows to two minutes; a server
        # that restarts must be reachable again within about a second.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def open_channel(address: str,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """A blocking channel to "host:port"."""
    note_channel_opened()
    return grpc.insecure_channel(address, options=channel_options(max_message_bytes))


def open_aio_channel(address: str,
                     max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """An asyncio channel to "host:port", bound to the running event loop."""
    note_channel_opened()
    return grpc.aio.insecure_channel(address, options=channel_options(max_message_bytes))
