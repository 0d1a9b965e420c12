"""Free ports for the servers that tests, chaos runs and benchmarks start.

A port is chosen some time before a server binds it, and in between the
kernel may hand it to an outgoing connection as its local port: a cluster
makes many connections, and a port found free by binding port 0 is one of
the kernel's ephemeral ports. So ports are chosen at random below the
ephemeral range (`net.ipv4.ip_local_port_range`), where the kernel never
picks, and a process never hands out the same port twice.
"""

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"
LOWEST = 10000  # below: well-known services a developer may run
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def ephemeral_ports() -> range:
    """The ports the kernel picks local ports of outgoing connections from."""
    try:
        low, high = (int(field) for field in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind `port` now. SO_REUSEADDR as the servers
    bind: a port with only TIME_WAIT connections left is free for them."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST, rng: random.Random | None = None) -> int:
    """A port below the ephemeral range that is free and that this process
    has not handed out before."""
    choose = rng or random.Random()
    below = ephemeral_ports().start
    if below - LOWEST < 1000:  # the ephemeral range starts low: nowhere safe to pick
        return _kernel_chosen(host)
    for _ in range(1000):
        port = choose.randrange(LOWEST, below)
        if port not in _handed_out and port_is_free(port, host):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port found in {LOWEST}-{below - 1} on {host}")


def _kernel_chosen(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
