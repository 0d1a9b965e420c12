"""The operator commands that work over the network against any member of
a running cluster: `kvstore status`, `ring`, `endpoints KEY`, `health` and
`completion`; each with `--address` and `-o table|json`.

The data comes from the processes' `Admin.Status` (`kvstore.ops.remote`);
nothing here reads the machine that started the cluster, except the default
address (see `kvstore.ops.remote.resolve_address`).
"""

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from kvclient.security import Credentials

from kvstore.ops.probe import health_status as health
from kvstore.ops.remote import (ADDRESS_ENV, DEFAULT_ADDRESS, RemoteError, as_dict, endpoints,
                                fetch_status, leaderships, member_statuses, resolve_address,
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


@dataclass(frozen=True)
class Access:
    """Where a command finds a local cluster and what it presents to it."""

    data_dir: Path
    credentials: Credentials

    def address(self, given: str | None) -> str:
        return resolve_address(given, self.data_dir)


def access_options(role: str, local_dir_flag: str = "--data-dir") -> Callable[[Any], Any]:
    """--data-dir, --token, --ca, --cert and --key (and their environment
    variables), handed to the command as one `access: Access`. `role`:
    "admin" (operator tools: the cluster's admin certificate or secret) or
    "client" (the cluster's client certificate). `local_dir_flag`: the
    local cluster's data dir under another name, for a command whose
    --data-dir is something else."""
    path = click.Path(path_type=Path, exists=True, dir_okay=False)

    def decorate(command: Any) -> Any:
        @functools.wraps(command)
        def run(*args: Any, local_cluster_dir: Path, token: str | None, ca_file: Path | None,
                cert_file: Path | None, key_file: Path | None, **kwargs: Any) -> Any:
            from kvstore.ops.credentials import (CredentialsError, client_credentials,
                                                 given_tls, operator_credentials)

            data_dir = local_cluster_dir
            find = operator_credentials if role == "admin" else client_credentials
            try:
                credentials = find(data_dir, token, given_tls(ca_file, cert_file, key_file))
            except (CredentialsError, ValueError) as exc:
                raise click.UsageError(str(exc)) from None
            return command(*args, access=Access(data_dir, credentials), **kwargs)

        found_with = ("cluster.json's admin_tls, else its cluster.secret" if role == "admin"
                      else "cluster.json's tls")
        for option in reversed([
            click.option(local_dir_flag, "local_cluster_dir",
                         type=click.Path(path_type=Path, file_okay=False),
                         default=Path("data"), show_default=True,
                         help=f"A local cluster's data dir: its address and credentials "
                              f"({found_with}) unless given."),
            click.option("--token", envvar="KVSTORE_TOKEN", show_envvar=True,
                         help="A bearer token to present."),
            click.option("--ca", "ca_file", type=path, envvar="KVSTORE_CA", show_envvar=True,
                         help="TLS: the CA certificate (PEM) to check the server against."),
            click.option("--cert", "cert_file", type=path, envvar="KVSTORE_CERT", show_envvar=True,
                         help="TLS: a client certificate (PEM) to present (mTLS)."),
            click.option("--key", "key_file", type=path, envvar="KVSTORE_KEY", show_envvar=True,
                         help="TLS: the private key (PEM) of --cert."),
        ]):
            run = option(run)
        return run

    return decorate


def _ask(access: Access, address: str | None, timeout: float) -> "admin_pb2.StatusResponse":
    target = access.address(address)
    try:
        return fetch_status(target, timeout, access.credentials)
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
@access_options("admin")
def status(address: str | None, output: str, timeout: float, access: Access) -> None:
    """The cluster as the processes see it: every storage node's own answer
    (up, keys, disk, store use, hints) and who holds whom down."""
    first = _ask(access, address, timeout)
    answers = member_statuses(first, timeout, access.credentials)
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
@access_options("admin")
def ring(address: str | None, output: str, timeout: float, access: Access) -> None:
    """Every partition and its replicas, in preference order; in leader
    mode, each partition's leader, term, commit and applied index (from
    every node's own answer)."""
    first = _ask(access, address, timeout)
    leader_mode = first.mode == "leader"
    led = leaderships(member_statuses(first, timeout, access.credentials)) \
        if leader_mode else None
    rows = ring_rows(first, led)

    def table() -> "Table":
        from rich.table import Table

        result = Table(title=f"{first.partitions} partitions, N={first.replicas} " + (
            "(each a Raft group of its replicas)" if leader_mode else
            "(the first replica is tried first as a write's origin)"), title_justify="left")
        result.add_column("partition", justify="right")
        result.add_column("replicas")
        if leader_mode:
            result.add_column("leader")
            for column in ("term", "commit", "applied"):
                result.add_column(column, justify="right")
        for row in rows:
            cells = [str(row["partition"]), ", ".join(row["replicas"])]
            if leader_mode:
                cells += ["[red]none[/red]" if row["leader"] is None else row["leader"],
                          *("-" if row[c] is None else str(row[c])
                            for c in ("term", "commit", "applied"))]
            result.add_row(*cells)
        return result

    _print(output, {"partitions": first.partitions, "replicas": first.replicas,
                    "mode": first.mode, "ring": rows}, table)


@click.command(name="endpoints")
@click.argument("key")
@address_option
@output_option
@timeout_option
@access_options("admin")
def endpoints_command(key: str, address: str | None, output: str, timeout: float,
                      access: Access) -> None:
    """KEY's partition and replicas, with their addresses."""
    first = _ask(access, address, timeout)
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
@access_options("admin")
def health_command(address: str | None, output: str, timeout: float, access: Access) -> None:
    """The process's gRPC health (exit 0 only when SERVING): for probes."""
    target = access.address(address)
    state = health(target, timeout, access.credentials)
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
