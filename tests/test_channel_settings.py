"""A client's keepalive, reconnect backoff and raw channel options: checked
by name before anything opens, and what reaches gRPC."""

from __future__ import annotations

from typing import Any

import pytest

import kvclient
from kvclient.channel_settings import MIN_KEEPALIVE_TIME, ChannelSettings, Keepalive
from kvclient.channels import channel_options
from kvclient.errors import InvalidArgument
from kvstore.rpc.channels import server_options

pytestmark = pytest.mark.timeout(30)


def test_keepalive_reaches_the_channel_with_an_unlimited_ping_budget() -> None:
    settings = ChannelSettings.create(Keepalive(time=5, timeout=2.5, permit_without_calls=True),
                                      max_reconnect_backoff=3)
    options = dict(channel_options(1024, settings=settings))
    assert options["grpc.keepalive_time_ms"] == 5000
    assert options["grpc.keepalive_timeout_ms"] == 2500
    assert options["grpc.http2.ping_timeout_ms"] == 2500
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.max_reconnect_backoff_ms"] == 3000
    assert options["grpc.max_send_message_length"] == 1024


def test_without_keepalive_the_channel_has_no_keepalive_options() -> None:
    options = dict(channel_options(1024))
    assert not [name for name in options if "keepalive" in name]
    assert options["grpc.max_reconnect_backoff_ms"] == 1000


def test_raw_options_replace_kvclients_defaults_of_the_same_name() -> None:
    settings = ChannelSettings.create(channel_options={
        "grpc.initial_reconnect_backoff_ms": 500, "grpc.primary_user_agent": "app/1"})
    options = channel_options(1024, settings=settings)
    names = [name for name, _ in options]
    assert len(names) == len(set(names))  # each once: gRPC is not left to pick
    assert dict(options)["grpc.initial_reconnect_backoff_ms"] == 500
    assert dict(options)["grpc.primary_user_agent"] == "app/1"
    pairs = ChannelSettings.create(channel_options=[("grpc.enable_retries", 0)])
    assert pairs.extra == (("grpc.enable_retries", 0),)


def test_servers_accept_the_pings_of_the_most_frequent_keepalive_a_client_may_set() -> None:
    options = dict(server_options(1024))
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # Below the client's floor, with a margin for timer jitter.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] < MIN_KEEPALIVE_TIME * 1000


@pytest.mark.parametrize("arguments, error, message", [
    ({"time": 0.5}, InvalidArgument, r"Keepalive.time must be >= 1"),
    ({"time": float("inf")}, InvalidArgument, "Keepalive.time must be"),
    ({"time": "30"}, TypeError, "Keepalive.time must be a number of seconds"),
    ({"timeout": 0}, InvalidArgument, "Keepalive.timeout must be > 0"),
    ({"timeout": -1}, InvalidArgument, "Keepalive.timeout must be > 0"),
    ({"timeout": 3e9}, InvalidArgument, "Keepalive.timeout must be"),
    ({"permit_without_calls": 1}, TypeError, "permit_without_calls must be True or False"),
])
def test_a_bad_keepalive_is_refused_by_name(arguments: dict[str, Any], error: type,
                                            message: str) -> None:
    with pytest.raises(error, match=message):
        Keepalive(**arguments)


@pytest.mark.parametrize("arguments, error, message", [
    ({"keepalive": 30}, TypeError, "keepalive must be a kvclient.Keepalive"),
    ({"max_reconnect_backoff": 0}, InvalidArgument, "max_reconnect_backoff must be >= 0.1"),
    ({"max_reconnect_backoff": True}, TypeError, "max_reconnect_backoff must be a number"),
    ({"channel_options": "grpc.x=1"}, TypeError, "must be a dict or a list"),
    ({"channel_options": [("grpc.x",)]}, TypeError, r"item 0 must be a \(name, value\) pair"),
    ({"channel_options": {"": 1}}, TypeError, "the name must be a non-empty str"),
    ({"channel_options": {"grpc.x": 1.5}}, TypeError, "'grpc.x' must be an int or a str"),
    ({"channel_options": {"grpc.x": 2**40}}, InvalidArgument, "must fit a 32-bit int"),
    ({"channel_options": {"grpc.keepalive_time_ms": 1000}}, InvalidArgument,
     r"set by kvclient; use keepalive=kvclient.Keepalive\(time=...\)"),
    ({"channel_options": {"grpc.max_receive_message_length": 1}}, InvalidArgument,
     "use max_message_bytes= instead"),
])
def test_a_bad_channel_setting_is_refused_when_the_client_is_made(
        arguments: dict[str, Any], error: type, message: str) -> None:
    for client in (kvclient.Client, kvclient.AsyncClient):
        with pytest.raises(error, match=message):
            client(["127.0.0.1:1"], **arguments)
