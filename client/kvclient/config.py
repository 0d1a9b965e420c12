"""The settings a client is built with, checked once, shared by both clients.

Owns the constructor arguments of `Client` and `AsyncClient` (addresses,
default timeout, retry policy, resolver, message size and batch bounds,
channel settings, tracing), their validation and the per-call timeout rule.
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kvclient import errors, framing
from kvclient.channel_settings import (DEFAULT_CHANNEL, DEFAULT_MAX_RECONNECT_BACKOFF,
                                       ChannelSettings, Keepalive, RawOptions)
from kvclient.results import Resolver
from kvclient.retry import RetryPolicy
from kvclient.security import PLAINTEXT, TLS, Credentials
from kvclient.tracing import TracingOption, check_option

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# gRPC stores message limits in a C int.
_MAX_MESSAGE_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class ClientConfig:
    """Everything a client needs besides its channels."""

    addresses: tuple[str, ...]
    timeout: float = DEFAULT_TIMEOUT
    retry: RetryPolicy = RetryPolicy()
    resolver: Resolver | None = None
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    credentials: Credentials = PLAINTEXT
    # What one KV.Session message carries at most (one larger operation goes alone).
    message_batch_bytes: int = framing.MESSAGE_BUDGET_BYTES
    message_batch_operations: int = framing.MESSAGE_MAX_ITEMS
    channel: ChannelSettings = DEFAULT_CHANNEL
    # None: trace when the application has set an OpenTelemetry SDK
    # TracerProvider (decided at the first call); see kvclient.tracing.
    tracing: TracingOption = None

    @classmethod
    def create(
        cls,
        addresses: str | Sequence[str],
        *,
        timeout: float,
        max_attempts: int,
        backoff_base: float,
        backoff_cap: float,
        resolver: Resolver | None,
        max_message_bytes: int,
        tls: TLS | None = None,
        token: str | None = None,
        message_batch_bytes: int = framing.MESSAGE_BUDGET_BYTES,
        message_batch_operations: int = framing.MESSAGE_MAX_ITEMS,
        keepalive: Keepalive | None = None,
        max_reconnect_backoff: float = DEFAULT_MAX_RECONNECT_BACKOFF,
        channel_options: RawOptions | None = None,
        tracing: TracingOption = None,
    ) -> ClientConfig:
        """A checked config from the clients' keyword arguments."""
        if resolver is not None and not callable(resolver):
            raise TypeError("resolver must be callable (list[bytes] -> bytes) or None")
        return cls(
            addresses=parse_addresses(addresses),
            timeout=check_timeout(timeout),
            retry=RetryPolicy(max_attempts, backoff_base, backoff_cap),
            resolver=resolver,
            max_message_bytes=_check_message_bytes(max_message_bytes),
            credentials=Credentials(tls=tls, token=token),
            message_batch_bytes=_check_positive(message_batch_bytes, "message_batch_bytes"),
            message_batch_operations=_check_positive(message_batch_operations,
                                                     "message_batch_operations"),
            channel=ChannelSettings.create(keepalive, max_reconnect_backoff, channel_options),
            tracing=check_option(tracing),
        )

    def call_timeout(self, timeout: float | None) -> float:
        """The overall timeout of one call: its own, else the client's default."""
        return self.timeout if timeout is None else check_timeout(timeout)


def parse_addresses(addresses: str | Sequence[str]) -> tuple[str, ...]:
    """"host:port" strings: one, or a non-empty list of them."""
    listed = [addresses] if isinstance(addresses, str) else list(addresses)
    if not listed:
        raise errors.InvalidArgument('addresses must list at least one "host:port"')
    for address in listed:
        if not isinstance(address, str):
            raise TypeError(f'each address must be a "host:port" str, got {type(address).__name__}')
        if not address.strip():
            raise errors.InvalidArgument('an address is empty; give "host:port"')
    return tuple(listed)


def check_timeout(timeout: float) -> float:
    """`timeout` as float seconds; it must be a finite number > 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise errors.InvalidArgument(f"timeout must be > 0 seconds (and finite), got {timeout!r}")
    return float(timeout)


def _check_message_bytes(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"max_message_bytes must be an int, got {type(limit).__name__}")
    if not 0 < limit <= _MAX_MESSAGE_LIMIT:
        raise errors.InvalidArgument(
            f"max_message_bytes must be between 1 and {_MAX_MESSAGE_LIMIT}, got {limit}"
        )
    return limit


def _check_positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 0 < value <= _MAX_MESSAGE_LIMIT:
        raise errors.InvalidArgument(f"{name} must be between 1 and {_MAX_MESSAGE_LIMIT}, "
                                     f"got {value}")
    return value
