"""How a client's connections behave, beyond what kvclient decides itself:
gRPC keepalive, the reconnect backoff, and extra raw channel options.

Owns the checking of these settings (a bad value is refused here, by name,
before any channel opens) and their rendering as gRPC channel arguments,
which `kvclient.channels` adds to its own. Pure: no I/O.

Keepalive: every `Keepalive.time` seconds without a frame from the server,
the client pings it over HTTP/2; a ping not acknowledged within
`Keepalive.timeout` closes the connection, so the calls on it (the
KV.Session stream too) fail UNAVAILABLE and are retried elsewhere, instead
of waiting out their deadline on a server that stopped answering (a paused
process, a host gone behind a live TCP connection). kvstore servers accept
a ping every `SERVER_MIN_PING_INTERVAL_MS` (and with no call in flight),
so `Keepalive.time` has a floor of `MIN_KEEPALIVE_TIME` seconds: more often,
a server would end the connection (GOAWAY too_many_pings).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from kvclient import errors

# kvstore servers (kvstore.rpc.channels.server_options) accept pings this
# often; the client's floor leaves a margin above it for timer jitter (a
# ping that comes early counts as a strike, and a third strike ends the
# connection).
SERVER_MIN_PING_INTERVAL_MS = 500
MIN_KEEPALIVE_TIME = 1.0

# gRPC keeps durations in milliseconds in a C int.
_MAX_MS = 2**31 - 1
# The reconnect backoff starts at this (kvclient.channels).
MIN_RECONNECT_BACKOFF = 0.1
DEFAULT_MAX_RECONNECT_BACKOFF = 1.0

OptionValue = Union[int, str]
RawOptions = Union[Mapping[str, OptionValue], Sequence[tuple[str, OptionValue]]]

# Channel arguments that kvclient sets from its own settings: given as raw
# options, they would contradict them, so each is refused with where it
# belongs.
_OWN_OPTIONS = {
    "grpc.max_send_message_length": "max_message_bytes=",
    "grpc.max_receive_message_length": "max_message_bytes=",
    "grpc.keepalive_time_ms": "keepalive=kvclient.Keepalive(time=...)",
    "grpc.keepalive_timeout_ms": "keepalive=kvclient.Keepalive(timeout=...)",
    "grpc.http2.ping_timeout_ms": "keepalive=kvclient.Keepalive(timeout=...)",
    "grpc.keepalive_permit_without_calls":
        "keepalive=kvclient.Keepalive(permit_without_calls=...)",
    "grpc.max_reconnect_backoff_ms": "max_reconnect_backoff=",
    "grpc.ssl_target_name_override": "tls=kvclient.TLS(server_name=...)",
}


def _seconds(value: object, name: str, low: float, low_inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    high = _MAX_MS / 1000
    in_range = (value >= low if low_inclusive else value > low) and value <= high
    if not (math.isfinite(value) and in_range):
        bound = f">= {low:g}" if low_inclusive else f"> {low:g}"
        raise errors.InvalidArgument(f"{name} must be {bound} and <= {high:g} seconds, "
                                     f"got {value!r}")
    return float(value)


def _ms(seconds: float) -> int:
    return max(1, min(_MAX_MS, round(seconds * 1000)))


@dataclass(frozen=True)
class Keepalive:
    """gRPC keepalive of a client's connections (see the module docstring):
    a ping after `time` seconds without a frame from the server, the
    connection closed when one is not acknowledged within `timeout`
    seconds; `permit_without_calls`: ping idle connections too (no call in
    flight; by default gRPC pings only while a call is, and the KV.Session
    stream is one whenever the client is in use)."""

    time: float = 30.0
    timeout: float = 10.0
    permit_without_calls: bool = False

    def __post_init__(self) -> None:
        _seconds(self.time, "Keepalive.time", MIN_KEEPALIVE_TIME)
        _seconds(self.timeout, "Keepalive.timeout", 0.0, low_inclusive=False)
        if not isinstance(self.permit_without_calls, bool):
            raise TypeError(f"Keepalive.permit_without_calls must be True or False, "
                            f"got {type(self.permit_without_calls).__name__}")

    def options(self) -> list[tuple[str, OptionValue]]:
        timeout_ms = _ms(self.timeout)
        return [
            ("grpc.keepalive_time_ms", _ms(self.time)),
            ("grpc.keepalive_timeout_ms", timeout_ms),
            # gRPC 1.85 waits for a keepalive ping's acknowledgement this
            # long (default a minute), whatever keepalive_timeout_ms says:
            # measured with a paused server.
            ("grpc.http2.ping_timeout_ms", timeout_ms),
            ("grpc.keepalive_permit_without_calls", int(self.permit_without_calls)),
            # By default gRPC stops pinging after two pings with no data
            # sent in between: an idle stream would go unwatched.
            ("grpc.http2.max_pings_without_data", 0),
        ]


@dataclass(frozen=True)
class ChannelSettings:
    """Everything about a client's channels that its caller chooses (the
    message size limit and credentials aside): keepalive (None: gRPC's
    default, no keepalive pings), the longest wait between two attempts to
    reconnect to a server (seconds), and raw gRPC channel arguments
    (`grpc.*` names; they override kvclient's defaults, e.g.
    `grpc.initial_reconnect_backoff_ms`, but not the settings it has an
    argument for)."""

    keepalive: Keepalive | None = None
    max_reconnect_backoff: float = DEFAULT_MAX_RECONNECT_BACKOFF
    extra: tuple[tuple[str, OptionValue], ...] = field(default=())

    @classmethod
    def create(cls, keepalive: Keepalive | None = None,
               max_reconnect_backoff: float = DEFAULT_MAX_RECONNECT_BACKOFF,
               channel_options: RawOptions | None = None) -> ChannelSettings:
        """Checked settings from the clients' keyword arguments."""
        if keepalive is not None and not isinstance(keepalive, Keepalive):
            raise TypeError(f"keepalive must be a kvclient.Keepalive or None, "
                            f"got {type(keepalive).__name__}")
        return cls(keepalive,
                   _seconds(max_reconnect_backoff, "max_reconnect_backoff",
                            MIN_RECONNECT_BACKOFF),
                   parse_raw_options(channel_options))

    def options(self) -> list[tuple[str, OptionValue]]:
        """The channel arguments these settings add to kvclient's own."""
        options: list[tuple[str, OptionValue]] = [
            ("grpc.max_reconnect_backoff_ms", _ms(self.max_reconnect_backoff))]
        if self.keepalive is not None:
            options += self.keepalive.options()
        return options + list(self.extra)


DEFAULT_CHANNEL = ChannelSettings()


def parse_raw_options(raw: RawOptions | None) -> tuple[tuple[str, OptionValue], ...]:
    """`channel_options` as (name, value) pairs: a mapping or a sequence of
    pairs, each name a str, each value an int or a str."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes)):
        raise TypeError("channel_options must be a dict or a list of (name, value) pairs")
    pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
    checked: dict[str, OptionValue] = {}
    for index, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"channel_options item {index} must be a (name, value) pair, "
                            f"got {pair!r}")
        name, value = pair
        if not isinstance(name, str) or not name:
            raise TypeError(f"channel_options item {index}: the name must be a non-empty str "
                            f"such as 'grpc.initial_reconnect_backoff_ms', got {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"channel option {name!r} must be an int or a str, "
                            f"got {type(value).__name__}")
        if isinstance(value, int) and not -(2**31) <= value <= _MAX_MS:
            raise errors.InvalidArgument(f"channel option {name!r} must fit a 32-bit int, "
                                         f"got {value}")
        if name in _OWN_OPTIONS:
            raise errors.InvalidArgument(f"channel option {name!r} is set by kvclient; "
                                         f"use {_OWN_OPTIONS[name]} instead")
        checked[name] = value
    return tuple(checked.items())
