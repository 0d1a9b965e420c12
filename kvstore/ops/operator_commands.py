"""The operator commands that work over the network against any member of
a running cluster: `kvstore status`, `ring`, `endpoints KEY`, `health` and
`completion`; each with `--address` and `-o table|json`.

The data comes from the processes' `Admin.Status` (`kvstore.ops.remote`);
nothing here reads the machine that started the cluster, except the default
address (see `kvstore.ops.remote.resolve_address`).
"""

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from kvstore.ops.probe import health_status as health
from kvstore.ops.remote import (ADDRESS_ENV, DEFAULT_ADDRESS, RemoteError, as_dict, endpoints,
                                fetch_status, member_statuses, resolve_address,
                                ring_rows, seen_down_by)

if TYPE_CHECKING:  # rich is imported only when a table is printed
    from rich.table import Table

    from kvclient.pb import admin_pb2

ADDRESS_HELP = (f"A node or coordinator HOST:PORT.  [default: ${ADDRESS_ENV}, else the first "
                f"coordinator of ./data/cluster.json, else {DEFAULT_ADDRESS}]")

address_option = click.option("--address", "-a", help=ADDRESS_HELP)
output_option = click.option("--output", "-o", type=click.Choice(["table", "json"]),
                             default="table", show_default=True, help="How to print it.")
timeout_option = click.option("--timeout", type=float, default=3.0, show_default=True,
                              help="Seconds to wait for each process's answer.")


def _ask(address: str | None, timeout: float) -> "admin_pb2.StatusResponse":
    target = resolve_address(address)
    try:
        return fetch_status(target, timeout)
    except RemoteError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _print(output: str, document: Any, table: Callable[[], "Table"]) -> None:
    if output == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        from rich.console import Console

        Console(width=max(100, Console().width)).print(table())


def _bytes(count: int) -> str:
    from kvstore.ops.cluster_status import human_bytes

    return human_bytes(count)


@click.command()
@address_option
@output_option
@timeout_option
def status(address: str | None, output: str, timeout: float) -> None:
    """The cluster as the processes see it: every storage node's own answer
    (up, keys, disk, store use, hints) and who holds whom down."""
    first = _ask(address, timeout)
    answers = member_statuses(first, timeout)
    down_by = seen_down_by({first.id: first, **answers})
    document = {
        "asked": as_dict(first),
        "nodes": [{"id": node_id, "reachable": not isinstance(answer, RemoteError),
                   "error": str(answer) if isinstance(answer, RemoteError) else None,
                   "seen_down_by": down_by.get(node_id, []),
                   "status": None if isinstance(answer, RemoteError) else as_dict(answer)}
                  for node_id, answer in answers.items()],
    }

    def table() -> "Table":
        from rich.table import Table

        result = Table(title=(f"{first.mode} cluster: N={first.replicas}, {first.partitions} "
                              f"partitions; asked {first.role} {first.id} at {first.address} "
                              f"(kvstore {first.version})"), title_justify="left")
        for column in ("node", "address", "answers", "version"):
            result.add_column(column)
        for column in ("keys", "disk", "store use", "hints", "uptime"):
            result.add_column(column, justify="right")
        result.add_column("seen down by")
        members = {m.id: m for m in first.members}
        for node_id, answer in answers.items():
            seen = down_by.get(node_id, [])
            seen_text = f"[red]{', '.join(seen)}[/red]" if seen else "-"
            if isinstance(answer, RemoteError):
                result.add_row(node_id, members[node_id].address, "[red]no[/red]", "-", "-",
                               "-", "-", "-", "-", seen_text)
                continue
            stats = answer.node
            result.add_row(node_id, answer.address, "[green]yes[/green]", answer.version,
                           str(stats.keys), _bytes(stats.db_bytes),
                           f"{stats.map_used_ratio:.1%}", str(stats.hints_pending),
                           f"{answer.uptime_seconds:.0f}s", seen_text)
        return result

    _print(output, document, table)
    if any(isinstance(answer, RemoteError) for answer in answers.values()):
        sys.exit(1)


@click.command()
@address_option
@output_option
@timeout_option
def ring(address: str | None, output: str, timeout: float) -> None:
    """Every partition and its replicas, in preference order."""
    first = _ask(address, timeout)
    rows = ring_rows(first)

    def table() -> "Table":
        from rich.table import Table

        result = Table(title=f"{first.partitions} partitions, N={first.replicas} "
                             "(the first replica is tried first as a write's origin)",
                       title_justify="left")
        result.add_column("partition", justify="right")
        result.add_column("replicas")
        for row in rows:
            result.add_row(str(row["partition"]), ", ".join(row["replicas"]))
        return result

    _print(output, {"partitions": first.partitions, "replicas": first.replicas,
                    "mode": first.mode, "ring": rows}, table)


@click.command(name="endpoints")
@click.argument("key")
@address_option
@output_option
@timeout_option
def endpoints_command(key: str, address: str | None, output: str, timeout: float) -> None:
    """KEY's partition and replicas, with their addresses."""
    first = _ask(address, timeout)
    found = endpoints(first, key.encode())

    def table() -> "Table":
        from rich.table import Table

        result = Table(title=f"key {key!r}: partition {found['partition']}",
                       title_justify="left")
        for column in ("replica", "address", "up"):
            result.add_column(column)
        for replica in found["replicas"]:
            result.add_row(replica["id"], replica["address"],
                           "yes" if replica["up"] else "[red]no[/red]")
        return result

    _print(output, found, table)


@click.command(name="health")
@address_option
@output_option
@timeout_option
def health_command(address: str | None, output: str, timeout: float) -> None:
    """The process's gRPC health (exit 0 only when SERVING): for probes."""
    target = resolve_address(address)
    state = health(target, timeout)
    if output == "json":
        click.echo(json.dumps({"address": target, "status": state}))
    else:
        click.echo(f"{target}: {state}")
    sys.exit(0 if state == "SERVING" else 1)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. `eval "$(kvstore completion bash)"`."""
    from click.shell_completion import get_completion_class

    from kvstore.ops.cli import main

    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(main, {}, "kvstore", "_KVSTORE_COMPLETE").source())


COMMANDS = (status, ring, endpoints_command, health_command, completion)
