"""`kvstore certs create`: the CA and certificates of a deployment
(`kvstore.security.deployment_pki`), for a Kubernetes Secret or a compose
volume. `kvstore cluster up --tls` makes its own under DATA_DIR/tls/."""

from pathlib import Path

import click


@click.group()
def certs() -> None:
    """Make the certificates of a deployment (a CA of its own, mTLS)."""


@certs.command(name="create")
@click.option("--out", "directory", required=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Where the certificates go: ca.pem, NAME.pem and NAME-key.pem.")
@click.option("--peer", "peers", multiple=True, metavar="NAME[=HOST,...]",
              help="A node or coordinator: NAME.peer.kvstore, serving HOST,... (default: "
                   "NAME) and loopback. Repeat for each.")
@click.option("--client", "clients", multiple=True, metavar="NAME",
              help="A client certificate, NAME.client.kvstore (the KV service only).")
@click.option("--admin", "admins", multiple=True, metavar="NAME",
              help="An operator's certificate, NAME.admin.kvstore.")
@click.option("--ca-key", type=click.Path(path_type=Path, dir_okay=False),
              help="The CA's private key: read if it exists, else written with a new CA.  "
                   "[default: OUT/private/ca-key.pem]")
@click.option("--renew", is_flag=True,
              help="Issue the named certificates again (same CA) even where they exist: "
                   "a rotation. Without it, existing ones are kept.")
@click.option("--days", type=int, default=825, show_default=True,
              help="How long each new certificate is valid.")
def create_command(directory: Path, peers: tuple[str, ...], clients: tuple[str, ...],
                   admins: tuple[str, ...], ca_key: Path | None, renew: bool, days: int) -> None:
    """Create (or complete) a deployment's CA and certificates.

    \b
    kvstore certs create --out tls --peer n1 --peer n2 --peer n3 --peer c1 \\
        --client app --admin operator

    Running it again keeps what exists and adds what is missing. The CA's key
    is kept apart (--ca-key): it can make any identity, admins' included, so
    it must not go where the processes' certificates go.
    """
    # Here, not at the top: `cryptography` would slow every other command's start.
    from kvstore.security.deployment_pki import (ADMIN, CLIENT, CertificateRequestError,
                                                 Request, create, peer_request)

    try:
        requests = ([peer_request(p) for p in peers] + [Request(n, CLIENT) for n in clients]
                    + [Request(n, ADMIN) for n in admins])
        if not requests:
            raise CertificateRequestError("name at least one certificate: --peer, --client "
                                          "or --admin")
        outcomes = create(directory, requests, ca_key=ca_key, renew=renew, valid_days=days)
    except CertificateRequestError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write the certificates: {exc}") from None
    for outcome in outcomes:
        click.echo(f"{outcome.what:8} {outcome.path}")
    click.echo(f"the CA's key: {ca_key or directory / 'private' / 'ca-key.pem'} "
               "(keep it off the cluster)")
