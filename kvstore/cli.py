"""The `kvstore` command line: run a node, talk to a store, benchmark it."""

import sys
from pathlib import Path
from typing import Any

import click

from kvstore.config import ConfigError, load_coordinator_config, load_node_config, parse_size

DEFAULT_ADDRESS = "127.0.0.1:7101"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """kvstore: a sharded, replicated key-value store."""


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value, f"--{param.name.replace('_', '-')}")  # type: ignore[union-attr]
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.command()
@click.option("--id", "node_id", help="Node id, unique in the cluster (e.g. n1).")
@click.option("--listen", help="gRPC address HOST:PORT.  [default: 127.0.0.1:7101]")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where the LMDB files live.")
@click.option("--metrics-port", type=int, help="Prometheus /metrics HTTP port (0: none).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TOML file with a [node] table; flags override it.")
@click.option("--partitions", type=int, help="Partitions in the hash space (power of two).")
@click.option("--map-size", callback=_size, help="LMDB map size, e.g. 1GiB: the most the data can grow to.")
@click.option("--durability", type=click.Choice(["sync", "nosync"]),
              help="sync: fsync every commit (default); nosync: UNSAFE, a crash may lose acknowledged writes.")
@click.option("--commit-delay-ms", type=float,
              help="Under load, how long a commit waits for more writes to share its fsync.  [default: 1.0]")
@click.option("--max-key-bytes", type=int, help="Largest key accepted.  [default: 1024]")
@click.option("--max-value-bytes", type=int, help="Largest value accepted.  [default: 1048576]")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def node(config_file: Path | None, log_level: str, **flags: Any) -> None:
    """Run one storage node in the foreground until SIGTERM/SIGINT."""
    from kvstore import logs
    from kvstore.node import run_node

    try:
        config = load_node_config(config_file, flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(config.node_id, log_level)
    run_node(config)


@main.command()
@click.option("--id", "coordinator_id", help="Coordinator id (e.g. c1).")
@click.option("--listen", help="gRPC address HOST:PORT.  [default: 127.0.0.1:7201]")
@click.option("--metrics-port", type=int, help="Prometheus /metrics HTTP port (0: none).")
@click.option("--config", "config_file", required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TOML file with the [cluster] members (and optionally [coordinator]).")
@click.option("--cache-bytes", callback=_size,
              help="Read cache size, e.g. 64MiB (0 disables).  [default: 64MiB]")
@click.option("--cache-ttl-ms", type=float,
              help="A cached answer is never served older than this.  [default: 1000]")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def coordinator(config_file: Path, log_level: str, **flags: Any) -> None:
    """Run a coordinator: routes to the replicas, runs the quorum, caches reads."""
    from kvstore import logs
    from kvstore.coordinator_process import run_coordinator

    try:
        config = load_coordinator_config(config_file, flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(config.coordinator_id, log_level)
    run_coordinator(config)


def _client(addresses: tuple[str, ...], timeout: float):  # type: ignore[no-untyped-def]
    import kvclient

    return kvclient.Client(list(addresses) or [DEFAULT_ADDRESS], timeout=timeout)


def _level(value: str | None) -> str | int | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


_address_option = click.option(
    "--address", "-a", "addresses", multiple=True,
    help=f"A node or coordinator HOST:PORT (repeatable).  [default: {DEFAULT_ADDRESS}]",
)
_timeout_option = click.option("--timeout", type=float, default=5.0, show_default=True,
                               help="Seconds for the whole call, retries included.")


def _run_client_call(call: Any) -> Any:
    from kvclient.errors import KVError

    try:
        return call()
    except KVError as exc:
        click.echo(f"error: {exc.code.name}: {exc.details}", err=True)
        sys.exit(2)


@main.command()
@click.argument("key")
@_address_option
@_timeout_option
@click.option("-r", help="Replicas that must answer: one, quorum, all or a number.")
def get(key: str, addresses: tuple[str, ...], timeout: float, r: str | None) -> None:
    """Print the value of KEY (exit 1 when absent)."""
    with _client(addresses, timeout) as client:
        result = _run_client_call(lambda: client.get(key.encode(), r=_level(r)))
    if not result.found:
        click.echo("(not found)", err=True)
        sys.exit(1)
    for sibling in result.siblings:
        sys.stdout.buffer.write(sibling + b"\n")


@main.command()
@click.argument("key")
@click.argument("value")
@_address_option
@_timeout_option
@click.option("-w", help="Replicas that must acknowledge: one, quorum, all or a number.")
def put(key: str, value: str, addresses: tuple[str, ...], timeout: float, w: str | None) -> None:
    """Store VALUE under KEY (VALUE '-' reads the bytes from stdin)."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode()
    with _client(addresses, timeout) as client:
        _run_client_call(lambda: client.put(key.encode(), data, w=_level(w)))
    click.echo("OK")


@main.command()
@click.argument("key")
@_address_option
@_timeout_option
@click.option("-w", help="Replicas that must acknowledge: one, quorum, all or a number.")
def delete(key: str, addresses: tuple[str, ...], timeout: float, w: str | None) -> None:
    """Delete KEY."""
    with _client(addresses, timeout) as client:
        _run_client_call(lambda: client.delete(key.encode(), w=_level(w)))
    click.echo("OK")


@main.command()
@_address_option
@click.option("--server-pid", "server_pids", type=int, multiple=True,
              help="PID of a server process behind --address, for CPU per operation (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds per phase.")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Unmeasured seconds before each phase.")
@click.option("--keys", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--value-size", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--read-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of gets (0: all puts, 1: all gets, after a preload).")
@click.option("--echo", is_flag=True, help="First measure KV.Ping: the transport's ceiling.")
@click.option("--durability", type=click.Choice(["sync", "nosync"]), default="sync",
              show_default=True, help="For the temporary node started when no --address is given.")
@click.option("--seed", type=int, default=1, show_default=True)
def bench(addresses: tuple[str, ...], server_pids: tuple[int, ...], durability: str,
          **settings: Any) -> None:
    """Closed-loop benchmark: ops/s, p50/p99/p999 latency, CPU per operation.

    Without --address it starts a temporary single node (and stops it after).
    """
    from kvstore.bench import (BenchOptions, format_results, run_against,
                               run_against_temporary_node)

    options = BenchOptions(addresses=list(addresses), server_pids=list(server_pids), **settings)
    if addresses:
        results = run_against(options)
    else:
        results = run_against_temporary_node(options, durability)
    click.echo(format_results(results, options))


if __name__ == "__main__":
    main()
