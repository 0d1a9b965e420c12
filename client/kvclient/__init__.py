"""kvclient: the Python client of kvstore, blocking (`Client`) and asyncio (`AsyncClient`).

    import kvclient

    with kvclient.Client(["127.0.0.1:7101", "127.0.0.1:7102"]) as kv:
        kv.put(b"greeting", b"hello", w="quorum")
        seen = kv.get(b"greeting")            # seen.value == b"hello"
        kv.put(b"greeting", b"hi", context=seen.context)

Reads return `GetResult` (`.value`, `.siblings`, `.context`, `.timestamp`,
`.found`); writes return `WriteResult` (`.context`, `.timestamp`). When
concurrent writes left several siblings (oldest to newest), `.value` is
`resolver(siblings)` if the client was given a resolver, else the newest.
Failures raise the typed exceptions of `kvclient.errors`.

Over TLS: `kvclient.Client(addresses, tls=kvclient.TLS(ca=..., cert=...,
key=...))`; with a bearer token: `token=...` (see `kvclient.security`).
Connections: `keepalive=kvclient.Keepalive(time=..., timeout=...)`,
`max_reconnect_backoff=...`, `channel_options=...`
(`kvclient.channel_settings`). OpenTelemetry spans of every call once the
application sets a TracerProvider, or with `tracing=...` (`kvclient.tracing`).

In a leader-mode cluster reads are linearizable (`get(key, stale=True)`
may come from any replica), results carry `.version` (the index of the
key's last write in its partition's log, 0 when absent), and
`put(key, value, if_version=V)` / `delete(key, if_version=V)` are
compare-and-set, raising `errors.VersionMismatch` when the key is not at V.

Needs only grpcio and protobuf: nothing here imports the server.
"""

from kvclient import errors
from kvclient.async_client import AsyncClient
from kvclient.channel_settings import Keepalive
from kvclient.client import Client
from kvclient.requests import PutItem
from kvclient.results import GetResult, WriteResult
from kvclient.security import TLS

__all__ = ["AsyncClient", "Client", "GetResult", "Keepalive", "PutItem", "TLS", "WriteResult",
           "errors"]
