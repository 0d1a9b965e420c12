"""The `kvstore` command line: run a node, talk to a store, benchmark it."""

import functools
import json
import sys
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from kvstore.ops import operator_commands
from kvstore.ops.certs_command import certs
from kvstore.server.config import ConfigError, load_coordinator_config, load_node_config, parse_size

if TYPE_CHECKING:
    import kvclient
    from rich.console import Console

    from kvstore.placement.membership import ClusterSpec

DEFAULT_ADDRESS = "127.0.0.1:7101"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kvstore", message="kvstore %(version)s")
def main() -> None:
    """kvstore: a sharded, replicated key-value store."""


for _command in (*operator_commands.COMMANDS, certs):
    main.add_command(_command)


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value, f"--{param.name.replace('_', '-')}")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from exc


def _security_options(command: Any) -> Any:
    """--tls-*, --cluster-secret-file and --tracing*, as `kvstore node` and
    `kvstore coordinator` take them (the [tls], [auth] and [tracing] tables
    of --config)."""
    path = click.Path(path_type=Path, exists=True, dir_okay=False)
    for option in reversed([
        click.option("--tls-ca", type=path, envvar="KVSTORE_TLS_CA", show_envvar=True,
                     help="CA certificate(s) (PEM) that peers' and clients' certificates "
                          "must come from; with --tls-cert and --tls-key: serve TLS only."),
        click.option("--tls-cert", type=path, envvar="KVSTORE_TLS_CERT", show_envvar=True,
                     help="This process's certificate (PEM), served and shown to peers."),
        click.option("--tls-key", type=path, envvar="KVSTORE_TLS_KEY", show_envvar=True,
                     help="The private key (PEM) of --tls-cert."),
        click.option("--tls-require-client-cert/--tls-optional-client-cert", default=None,
                     help="Refuse callers without a certificate of --tls-ca (mTLS).  "
                          "[default: require]"),
        click.option("--cluster-secret-file", type=path, envvar="KVSTORE_CLUSTER_SECRET_FILE",
                     show_envvar=True,
                     help="Without TLS: the cluster secret peers present (and admins); "
                          "`cluster up` writes DATA_DIR/cluster.secret."),
        click.option("--token-file", type=path, envvar="KVSTORE_TOKEN_FILE", show_envvar=True,
                     help="Bearer tokens clients and operators present, each with its role "
                          "(read, write, admin); with it, every client must present one "
                          "(or a certificate)."),
        click.option("--rate-limit-per-second", type=float,
                     help="Each client identity's KV calls and Session operations per "
                          "second (token bucket; 0: no limit).  [default: 0]"),
        click.option("--rate-limit-burst", type=float,
                     help="The bucket's size.  [default: one second's worth]"),
        click.option("--insecure", is_flag=True, default=None,
                     help="Serve plaintext on an address beyond loopback (refused otherwise; "
                          "with peers, --cluster-secret-file too). Callers that present "
                          "nothing are still clients only."),
        click.option("--reflection/--no-reflection", default=None,
                     help="Serve gRPC server reflection.  [default: on]"),
        click.option("--tracing", type=click.Choice(["none", "otlp", "console"]),
                     envvar="KVSTORE_TRACING", show_envvar=True,
                     help="OpenTelemetry spans of every request: none, otlp (to "
                          "--tracing-endpoint; needs kvstore[tracing]) or console (to the "
                          "log).  [default: none]"),
        click.option("--tracing-endpoint", envvar="KVSTORE_TRACING_ENDPOINT", show_envvar=True,
                     help="OTLP/gRPC collector, e.g. http://127.0.0.1:4317 (implies --tracing "
                          "otlp).  [default: OTEL_EXPORTER_OTLP_ENDPOINT, else "
                          "localhost:4317]"),
        click.option("--tracing-sample-ratio", type=float,
                     help="Share of the requests that arrive without a trace that are "
                          "traced (those in a caller's trace follow it).  [default: 1]"),
    ]):
        command = option(command)
    return command


@main.command()
@click.option("--id", "node_id", envvar="KVSTORE_ID", show_envvar=True,
              help="Node id, unique in the cluster (e.g. n1).")
@click.option("--listen", envvar="KVSTORE_LISTEN", show_envvar=True,
              help="gRPC address HOST:PORT.  [default: 127.0.0.1:7101]")
@click.option("--advertise", envvar="KVSTORE_ADVERTISE", show_envvar=True,
              help="HOST:PORT clients and peers reach it on, if not --listen (its "
                   "[cluster] address, when it has one, must be the same).")
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="KVSTORE_DATA_DIR",
              show_envvar=True, help="Where the LMDB files live.")
@click.option("--metrics-port", type=int, envvar="KVSTORE_METRICS_PORT", show_envvar=True,
              help="Prometheus /metrics HTTP port (0: none).")
@click.option("--health-listen", envvar="KVSTORE_HEALTH_LISTEN", show_envvar=True,
              help="HOST:PORT of a plaintext listener serving only the gRPC health "
                   "service, for probes without certificates (Kubernetes').  [default: none]")
@click.option("--config", "config_file", envvar="KVSTORE_CONFIG", show_envvar=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TOML file with a [node] table; flags override it.")
@click.option("--partitions", type=int, help="Partitions in the hash space (power of two).")
@click.option("--map-size", callback=_size,
              help="LMDB map size, e.g. 1GiB: the most the data can grow to.")
@click.option("--durability", type=click.Choice(["sync", "nosync"]),
              help="sync: fsync every commit (default); "
                   "nosync: UNSAFE, a crash may lose acknowledged writes.")
@click.option("--commit-delay-ms", type=float,
              help="Under load, how long a commit waits for more writes to share its fsync."
                   "  [default: 1.0]")
@click.option("--max-key-bytes", type=int, help="Largest key accepted.  [default: 1024]")
@click.option("--max-value-bytes", type=int, help="Largest value accepted.  [default: 1048576]")
@_security_options
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def node(config_file: Path | None, log_level: str, **flags: Any) -> None:
    """Run one storage node in the foreground until SIGTERM/SIGINT."""
    from kvstore.server import logs
    from kvstore.server.node import run_node

    try:
        config = load_node_config(config_file, flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(config.node_id, log_level)
    run_node(config)


@main.command()
@click.option("--id", "coordinator_id", envvar="KVSTORE_ID", show_envvar=True,
              help="Coordinator id (e.g. c1).")
@click.option("--listen", envvar="KVSTORE_LISTEN", show_envvar=True,
              help="gRPC address HOST:PORT.  [default: 127.0.0.1:7201]")
@click.option("--advertise", envvar="KVSTORE_ADVERTISE", show_envvar=True,
              help="HOST:PORT clients reach it on, if not --listen.")
@click.option("--metrics-port", type=int, envvar="KVSTORE_METRICS_PORT", show_envvar=True,
              help="Prometheus /metrics HTTP port (0: none).")
@click.option("--health-listen", envvar="KVSTORE_HEALTH_LISTEN", show_envvar=True,
              help="HOST:PORT of a plaintext listener serving only the gRPC health "
                   "service, for probes without certificates (Kubernetes').  [default: none]")
@click.option("--config", "config_file", required=True, envvar="KVSTORE_CONFIG",
              show_envvar=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="TOML file with the [cluster] members (and optionally [coordinator]).")
@click.option("--cache-bytes", callback=_size,
              help="Read cache size, e.g. 64MiB (0 disables).  [default: 64MiB]")
@click.option("--cache-ttl-ms", type=float,
              help="A cached answer is never served older than this.  [default: 1000]")
@_security_options
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def coordinator(config_file: Path, log_level: str, **flags: Any) -> None:
    """Run a coordinator: routes to the replicas, runs the quorum, caches reads."""
    from kvstore.server import logs
    from kvstore.server.coordinator_process import run_coordinator

    try:
        config = load_coordinator_config(config_file, flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    logs.configure(config.coordinator_id, log_level)
    run_coordinator(config)


@main.group()
def cluster() -> None:
    """Run a whole cluster on this machine (loopback) and look at it."""


@cluster.command()
@click.option("--nodes", type=int, help="Storage nodes n1..nN.  [default: 3]")
@click.option("--coordinators", type=int, help="Coordinators c1..cC (0: none).  [default: 1]")
@click.option("--replicas", type=int,
              help="Replicas per key (N), 1..nodes.  [default: min(3, nodes)]")
@click.option("--partitions", type=int,
              help="Partitions of the hash space (power of two).  [default: 64]")
@click.option("--mode", help="Replication mode: leaderless (Dynamo quorums) or leader (a Raft "
                             "group per partition).  [default: leaderless]")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("data"),
              show_default=True, help="Holds the cluster's config, each node's data, logs/.")
@click.option("--base-port", type=int,
              help="Node i listens on P+i, coordinator j on P+100+j; metrics 2000 higher.  "
                   "[default: 7100]")
@click.option("--durability", type=click.Choice(["sync", "nosync"]),
              help="Passed to every node (nosync is UNSAFE).  [default: sync]")
@click.option("--tls", is_flag=True, default=None,
              help="mTLS on every link: a CA, a certificate per process, a client and an "
                   "admin certificate under DATA_DIR/tls/ (cluster.json: tls, admin_tls).")
@click.option("--auth-tokens", is_flag=True, default=None,
              help="Clients must authenticate: a bearer token of each role (read, write, "
                   "admin) in DATA_DIR/tokens.toml, listed in cluster.json under tokens.")
@click.option("--node-setting", "node_settings", multiple=True, metavar="KEY=VALUE",
              help="A [node] setting for every node, e.g. tombstone_grace_seconds=60 "
                   "(repeatable); written to DATA_DIR/cluster.toml.")
def up(data_dir: Path, node_settings: tuple[str, ...], **flags: Any) -> None:
    """Start a local cluster and stay in the foreground until Ctrl-C/SIGTERM.

    Writes DATA_DIR/cluster.json once every process serves. Starting again on
    the same data dir brings back the same cluster and data; flags not given
    take the saved values.
    """
    from kvstore.ops.cluster_layout import LayoutError, Requested, parse_node_settings
    from kvstore.ops.local_cluster import run_cluster

    try:
        code = run_cluster(Requested(**flags), data_dir,
                           node_settings=parse_node_settings(node_settings),
                           on_up=lambda document, spec, existed: _cluster_is_up(
                               document, spec, existed, data_dir),
                           say=click.echo, warn=lambda text: click.echo(text, err=True))
    except LayoutError as exc:
        raise click.UsageError(str(exc)) from exc
    sys.exit(code)


def _cluster_is_up(document: dict[str, Any], spec: "ClusterSpec", existed: bool,
                   data_dir: Path) -> None:
    from kvstore.ops.cluster_status import collect, connection_hints, table
    from kvstore.ops.credentials import operator_credentials

    console = _console()
    verb = "restarted the cluster saved in" if existed else "started a new cluster in"
    nodes = sum(p["role"] == "node" for p in document["processes"])
    console.print(f"{verb.capitalize()} {data_dir}: {nodes} node(s), "
                  f"{len(document['processes']) - nodes} coordinator(s); every process serves.",
                  highlight=False)
    console.print(table(collect(document, spec, operator_credentials(data_dir)), document))
    for line in connection_hints(document):
        console.print(line, highlight=False, markup=False)
    console.print("Ctrl-C stops the cluster.")


def _console() -> "Console":
    from rich.console import Console

    console = Console()
    # Piped output (tests, logs) would otherwise be cut to 80 columns.
    return console if console.is_terminal else Console(width=160)


@cluster.command()
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=Path("data"),
              show_default=True, help="The data dir `kvstore cluster up` runs in.")
def status(data_dir: Path) -> None:
    """One line per process: pid, health, partitions, keys, disk use."""
    from kvstore.ops.cluster_status import NoCluster, collect, read_cluster, table
    from kvstore.ops.credentials import CredentialsError, operator_credentials

    try:
        document, spec = read_cluster(data_dir)
        credentials = operator_credentials(data_dir)
    except (NoCluster, CredentialsError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    _console().print(table(collect(document, spec, credentials), document))


@main.group()
def admin() -> None:
    """Operator commands for a running cluster."""


@admin.command()
@operator_commands.address_option
@operator_commands.access_options("admin")
@click.option("--config", "config_file",
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Instead of asking a process: a config file with the cluster's [cluster] "
                   "table (e.g. data/cluster.toml).")
@click.option("--node", "node_ids", multiple=True,
              help="Only this node (repeatable).  [default: all]")
@click.option("--partition", type=int, help="Only this partition.  [default: every one]")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds for one partition's repair.")
def repair(address: str | None, access: operator_commands.Access, config_file: Path | None,
           node_ids: tuple[str, ...], partition: int | None, timeout: float) -> None:
    """Run Merkle anti-entropy now, partition by partition, showing progress."""
    from kvstore.ops.admin import (RepairError, repair_cluster, repair_targets,
                                   targets_from_config, targets_from_status)

    try:
        members, ring = (targets_from_config(config_file) if config_file is not None
                         else targets_from_status(access.address(address), 10.0,
                                                  access.credentials))
        targets = repair_targets(members, ring, list(node_ids), partition)
        total = repair_cluster(targets, timeout, say=click.echo,
                               credentials=access.credentials)
    except RepairError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"done: {total} key(s) repaired")


@admin.command(name="transfer-leader")
@click.argument("partition", type=int)
@click.argument("node")
@operator_commands.address_option
@operator_commands.access_options("admin")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds for the leadership to move.")
def transfer_leader(partition: int, node: str, address: str | None,
                    access: operator_commands.Access, timeout: float) -> None:
    """Leader mode: make NODE the leader of PARTITION's Raft group."""
    from kvstore.ops.leadership import TransferError
    from kvstore.ops.leadership import transfer_leader as transfer

    try:
        done = transfer(access.address(address), partition, node, timeout, access.credentials)
    except TransferError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if done.previous == done.leader:
        click.echo(f"partition {partition}: {done.leader} leads it already (term {done.term})")
    else:
        click.echo(f"partition {partition}: leadership moved from {done.previous} to "
                   f"{done.leader} (term {done.term})")


@admin.command()
@operator_commands.address_option
@operator_commands.access_options("admin")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The file to write the snapshot to.")
@click.option("--timeout", type=float, default=3600.0, show_default=True,
              help="Seconds for the whole download.")
def snapshot(address: str | None, access: operator_commands.Access, out: Path,
             timeout: float) -> None:
    """Copy a storage node's whole database to a file, over the network."""
    from kvstore.ops.backup import BackupError
    from kvstore.ops.backup import snapshot as take_snapshot
    from kvstore.ops.cluster_status import human_bytes

    target = access.address(address)
    try:
        node_id, size = take_snapshot(target, out, timeout, access.credentials)
    except BackupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{node_id} ({target}): {human_bytes(size)} written to {out}")


@admin.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="The stopped node's data dir (its --data-dir).")
@click.option("--force", is_flag=True, help="Replace the database the data dir holds.")
@click.option("--address", "-a",
              help="Leader mode: a running member of the node's cluster, asked for every "
                   "member's Raft terms (all but the restored node must answer).")
@click.option("--node-id", help="Leader mode: the id of the node being restored.")
@click.option("--timeout", type=float, default=5.0, show_default=True,
              help="Leader mode: seconds to wait for each member's answer.")
@operator_commands.access_options("admin", local_dir_flag="--cluster-dir")
def restore(file: Path, data_dir: Path, force: bool, address: str | None, node_id: str | None,
            timeout: float, access: operator_commands.Access) -> None:
    """Rebuild a stopped node's data dir from a snapshot FILE (on its host).

    A leader-mode node's snapshot also needs --address and --node-id: its
    Raft groups are fenced above the cluster's highest term, so that the
    node cannot vote twice in a term it forgot (see the README's backups)."""
    from kvstore.ops.backup import BackupError, cluster_terms
    from kvstore.ops.backup import restore as restore_snapshot

    terms = None
    if address is not None or node_id is not None:
        if address is None or node_id is None:
            raise click.UsageError("--address and --node-id go together (leader mode)")
        terms = functools.partial(cluster_terms, address, node_id, timeout, access.credentials)
    try:
        restore_snapshot(file, data_dir, force=force, cluster_terms=terms, say=click.echo)
    except BackupError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _client(addresses: tuple[str, ...], timeout: float,
            access: operator_commands.Access) -> "kvclient.Client":
    import kvclient

    # One call per command: asking for the topology first would cost more
    # than the hop inside the cluster that routing by key saves.
    credentials = access.credentials
    return kvclient.Client(list(addresses) or [DEFAULT_ADDRESS], timeout=timeout,
                           token_aware=False, tls=credentials.tls, token=credentials.token)


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
@operator_commands.access_options("client")
@click.option("-r", help="Replicas that must answer: one, quorum, all or a number.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: found, every sibling (hex, and text when it is "
                   "UTF-8), the context (hex) and the timestamp.")
@click.option("--hex", "as_hex", is_flag=True, help="Print each sibling as hex, one per line.")
@click.option("--stale", is_flag=True,
              help="Leader mode: let any replica answer, however far behind.")
def get(key: str, addresses: tuple[str, ...], timeout: float, access: operator_commands.Access,
        r: str | None, as_json: bool, as_hex: bool, stale: bool) -> None:
    """Print the value of KEY, one line per sibling (exit 1 when absent)."""
    if as_json and as_hex:
        raise click.UsageError("choose one of --json and --hex")
    with _client(addresses, timeout, access) as client:
        result = _run_client_call(lambda: client.get(key.encode(), r=_level(r), stale=stale))
    if as_json:
        click.echo(json.dumps({
            "key": key, "found": result.found,
            "siblings": [{"hex": s.hex(), "text": _text_or_none(s)} for s in result.siblings],
            "context": result.context.hex(), "timestamp": result.timestamp,
            "version": result.version}))
        sys.exit(0 if result.found else 1)
    if not result.found:
        click.echo("(not found)", err=True)
        sys.exit(1)
    for sibling in result.siblings:
        sys.stdout.buffer.write((sibling.hex().encode() if as_hex else sibling) + b"\n")


def _text_or_none(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@main.command()
@click.argument("key")
@click.argument("value")
@_address_option
@_timeout_option
@operator_commands.access_options("client")
@click.option("-w", help="Replicas that must acknowledge: one, quorum, all or a number.")
@click.option("--if-version", type=click.IntRange(min=0),
              help="Leader mode: write only if KEY is at this version (0: only if absent).")
def put(key: str, value: str, addresses: tuple[str, ...], timeout: float,
        access: operator_commands.Access, w: str | None, if_version: int | None) -> None:
    """Store VALUE under KEY (VALUE '-' reads the bytes from stdin)."""
    data = sys.stdin.buffer.read() if value == "-" else value.encode()
    with _client(addresses, timeout, access) as client:
        written = _run_client_call(
            lambda: client.put(key.encode(), data, w=_level(w), if_version=if_version))
    click.echo("OK" if written.version is None else f"OK version {written.version}")


@main.command()
@click.argument("key")
@_address_option
@_timeout_option
@operator_commands.access_options("client")
@click.option("-w", help="Replicas that must acknowledge: one, quorum, all or a number.")
@click.option("--if-version", type=click.IntRange(min=0),
              help="Leader mode: delete only if KEY is at this version.")
def delete(key: str, addresses: tuple[str, ...], timeout: float,
           access: operator_commands.Access, w: str | None, if_version: int | None) -> None:
    """Delete KEY."""
    with _client(addresses, timeout, access) as client:
        _run_client_call(lambda: client.delete(key.encode(), w=_level(w), if_version=if_version))
    click.echo("OK")


class _ListOf(click.ParamType):
    """A comma-separated list of values of one type (each checked by `convert`)."""

    name = "list"

    def __init__(self, convert: Any, describe: str) -> None:
        self._convert = convert
        self.name = describe

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            items = tuple(self._convert(item) for item in str(value).split(",") if item.strip())
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)
        if not items:
            self.fail("give at least one value", param, ctx)
        return items


def _at_least(minimum: int) -> Any:
    def convert(text: str) -> int:
        number = int(text)
        if number < minimum:
            raise ValueError(f"{number} is below {minimum}")
        return number
    return convert


def _ratio(text: str) -> float:
    ratio = float(text)
    if not 0 <= ratio <= 1:
        raise ValueError(f"{ratio} is not within 0..1")
    return ratio


@main.command()
@_address_option
@click.option("--server-pid", "server_pids", type=int, multiple=True,
              help="PID of a server process behind --address, for CPU and memory (repeatable).")
@click.option("--concurrency", type=_ListOf(_at_least(1), "N[,N...]"), default="64",
              show_default=True, help="Requests in flight; a list gives a phase for each.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds per phase.")
@click.option("--warmup", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Unmeasured seconds before each phase.")
@click.option("--keys", type=_ListOf(_at_least(1), "N[,N...]"), default="10000",
              show_default=True, help="Keys the phase uses (a list: a phase for each).")
@click.option("--value-size", type=_ListOf(_at_least(0), "BYTES[,BYTES...]"), default="100",
              show_default=True, help="Bytes per value (a list: a phase for each).")
@click.option("--read-ratio", type=_ListOf(_ratio, "R[,R...]"), default="0",
              show_default=True,
              help="Fraction of gets (0: all puts, 1: all gets, after a preload; a list: a phase "
                   "for each).")
@click.option("--echo", is_flag=True, help="First measure KV.Ping: the transport's ceiling.")
@click.option("--durability", type=click.Choice(["sync", "nosync"]), default="sync",
              show_default=True, help="For the temporary node started when no --address is given.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.001), default=10.0, show_default=True,
              help="Seconds each call may take, its retries included.")
@click.option("-r", help="Consistency of gets: one, quorum, all or a number.")
@click.option("-w", help="Consistency of puts: one, quorum, all or a number.")
@click.option("--cluster-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="A running cluster's cluster.json: send to its coordinators (or nodes) "
                   "and watch every process's CPU, memory and metrics.")
@click.option("--via", type=click.Choice(["coordinators", "nodes"]), default="coordinators",
              show_default=True, help="With --cluster-file: which processes the client talks to.")
@click.option("--unary", is_flag=True,
              help="Send unary calls instead of the client's default, the KV.Session stream.")
def bench(addresses: tuple[str, ...], server_pids: tuple[int, ...], durability: str,
          r: str | None, w: str | None, cluster_file: Path | None, via: str,
          concurrency: tuple[int, ...], keys: tuple[int, ...], value_size: tuple[int, ...],
          read_ratio: tuple[float, ...], **settings: Any) -> None:
    """Closed-loop benchmark: ops/s, p50/p99/p999 latency, CPU per operation,
    errors, operations per message on each hop, peak resident memory.

    Without --address or --cluster-file it starts a temporary single node
    (and stops it after). Lists of concurrency, value size, keys and read
    ratio give a phase for each combination.
    """
    from kvclient.security import PLAINTEXT
    from kvstore.ops.bench import (BenchOptions, PhaseResult, Report, Server, run_against,
                                   run_against_temporary_node, targets_of_cluster_file,
                                   workloads)
    from kvstore.ops.process_memory import Resident
    from kvstore.ops.credentials import client_credentials

    credentials = PLAINTEXT
    servers = [Server(f"pid {pid}", pid) for pid in server_pids]
    if cluster_file is not None:
        cluster_addresses, cluster_servers = targets_of_cluster_file(cluster_file, via)
        addresses = tuple(cluster_addresses) + addresses
        servers = cluster_servers + servers
        credentials = client_credentials(cluster_file.parent)  # its tls, or its write token
    options = BenchOptions(addresses=list(addresses), servers=servers, r=_level(r), w=_level(w),
                           workloads=workloads(concurrency, value_size, keys, read_ratio),
                           credentials=credentials, **settings)
    def start(idle: dict[str, Resident]) -> Callable[[PhaseResult], None]:
        report = Report(options, idle)
        click.echo("\n".join(report.header(len(idle))))
        return lambda result: click.echo("\n".join(report.phase(result)))

    if addresses:
        run_against(options, start)
    else:
        run_against_temporary_node(options, durability, start)


if __name__ == "__main__":
    main()
