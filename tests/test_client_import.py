"""kvclient must work with only grpcio, protobuf and googleapis-common-protos
(google.rpc, for gRPC's rich error details) installed: it never imports the
server (kvstore) nor the server's dependencies, and OpenTelemetry (its
tracing extra) only in kvclient.tracing, only once tracing is on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import kvclient

SERVER_ONLY = ["kvstore", "lmdb", "uvloop", "prometheus_client", "click", "rich"]
CLIENT_DIR = Path(kvclient.__file__).parent

# Blocks the server-only packages, imports kvclient, uses it without a server,
# and lists the top-level packages it loaded besides the stdlib, grpc and protobuf.
PROBE = f"""
import sys
for name in {SERVER_ONLY!r}:
    sys.modules[name] = None
import grpc, grpc.aio, google.protobuf
before = set(sys.modules)
import kvclient
from kvclient import errors
client = kvclient.Client(["127.0.0.1:1", "127.0.0.1:2"], timeout=1.0)
try:
    client.put(b"k", b"v", context="not bytes")
except TypeError:
    pass
client.close()
kvclient.AsyncClient("127.0.0.1:1")
assert issubclass(errors.Unavailable, errors.KVError)
new = {{name.split(".")[0] for name in set(sys.modules) - before}}
allowed = set(sys.stdlib_module_names) | {{"grpc", "google"}}
print(" ".join(sorted(new - allowed)))
"""


@pytest.mark.process
def test_client_imports_and_runs_without_server_packages() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, cwd=CLIENT_DIR.parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["kvclient"]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_client_sources_import_only_stdlib_grpc_protobuf_and_google_rpc() -> None:
    """Catches imports a run would miss, e.g. inside a function."""
    allowed_roots = set(sys.stdlib_module_names) | {"grpc", "kvclient"}
    for path in sorted(CLIENT_DIR.rglob("*.py")):
        optional = {"opentelemetry"} if path.name == "tracing.py" else set()
        for module in _imported_modules(path):
            root = module.split(".")[0]
            ok = root in allowed_roots | optional or module in ("google.protobuf", "google.rpc") \
                or module.startswith(("google.protobuf.", "google.rpc."))
            assert ok, f"{path.relative_to(CLIENT_DIR)} imports {module}"


def test_opentelemetry_is_imported_only_where_tracing_is_turned_on() -> None:
    """kvclient.tracing's module level imports none of it (but for the
    type checker): a client that does not trace never loads it."""
    tree = ast.parse((CLIENT_DIR / "tracing.py").read_text())
    at_import = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = {alias.name for node in at_import if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module or "" for node in at_import if isinstance(node, ast.ImportFrom)}
    assert not {name for name in names if name.startswith("opentelemetry")}
