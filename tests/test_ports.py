"""Ports for the servers tests start: free, below the kernel's ephemeral
range (where an outgoing connection could take them first), never handed
out twice."""

import random
import socket
from pathlib import Path

import pytest

from kvstore.ops import ports
from kvstore.ops.cluster_layout import free_base_port, needed_ports

pytestmark = pytest.mark.timeout(30)


@pytest.mark.process
def test_free_ports_are_below_the_ephemeral_range_bindable_and_never_repeated() -> None:
    chosen = [ports.free_port(rng=random.Random(7)) for _ in range(50)]
    assert len(set(chosen)) == len(chosen)  # the same seed, yet no port twice
    assert all(ports.LOWEST <= port < ports.ephemeral_ports().start for port in chosen)
    with socket.socket() as sock:
        sock.bind((ports.HOST, chosen[0]))


@pytest.mark.process
def test_a_port_in_use_is_not_free() -> None:
    with socket.socket() as sock:
        sock.bind((ports.HOST, 0))
        sock.listen()
        assert not ports.port_is_free(sock.getsockname()[1])


@pytest.mark.process
def test_with_no_room_below_the_ephemeral_range_the_kernel_chooses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wide = tmp_path / "ip_local_port_range"
    wide.write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "_EPHEMERAL_RANGE", wide)
    assert ports.ephemeral_ports() == range(1024, 65536)
    assert 1024 <= ports.free_port() <= 65535


def test_an_unreadable_range_means_linux_s_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_EPHEMERAL_RANGE", tmp_path / "missing")
    assert ports.ephemeral_ports() == range(32768, 61000)


@pytest.mark.process
def test_a_base_port_puts_every_port_of_the_cluster_below_the_ephemeral_range() -> None:
    base = free_base_port(5, 2, random.Random(3))
    assert max(needed_ports(base, 5, 2)) < ports.ephemeral_ports().start
