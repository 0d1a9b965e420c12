"""kvclient as its own distribution (client/pyproject.toml): installed alone
into a fresh virtualenv with the oldest grpcio, protobuf and
googleapis-common-protos it declares, it imports, types and works against a
running node; and with its tracing extra at the oldest opentelemetry-api
that extra admits, a traced call makes its spans."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kvstore.ops.processes import NodeProcess

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client"

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

# Runs in the fresh venv against the node at argv[1]; prints what it saw.
USE_THE_CLIENT = """
import json, sys
import google.protobuf, grpc
import kvclient
from kvclient import errors
try:
    import kvstore
    server = True
except ImportError:
    server = False
with kvclient.Client([sys.argv[1]], timeout=10) as client:
    client.put(b"k", b"v1")
    first = client.get(b"k").value
    client.put_many([(b"a", b"1"), (b"b", b"2")])
    many = [r.value for r in client.get_many([b"a", b"b", b"c"])]
    client.delete(b"k")
    gone = client.get(b"k").value
    try:
        client.get(b"k", r="most")
        refused = None
    except errors.InvalidArgument as error:
        refused = error.code.name
print(json.dumps({
    "grpcio": grpc.__version__, "protobuf": google.protobuf.__version__,
    "server_importable": server, "first": first.decode(),
    "many": [None if v is None else v.decode() for v in many],
    "gone": gone, "refused": refused,
}))
"""


# Runs in the fresh venv against the node at argv[1] with an SDK
# TracerProvider of the same release as the API; prints the spans it made.
TRACE_THE_CLIENT = """
import json, sys
import importlib.metadata
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import kvclient
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
with kvclient.Client([sys.argv[1]], timeout=10, tracing=provider) as client:
    client.put(b"traced", b"v")
    value = client.get(b"traced").value
spans = [{"name": s.name, "kind": s.kind.name, "trace": s.context.trace_id,
          "id": s.context.span_id, "parent": s.parent.span_id if s.parent else None}
         for s in exporter.get_finished_spans()]
print(json.dumps({"api": importlib.metadata.version("opentelemetry-api"),
                  "value": value.decode(), "spans": spans}))
"""


def floors(extra: str | None = None) -> dict[str, str]:
    """The client distribution's dependencies (or those of one of its
    extras), each at its declared floor."""
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    found = {}
    for requirement in declared:
        name, floor = re.fullmatch(r"([\w-]+)>=([\w.]+)", requirement).groups()  # type: ignore[union-attr]
        found[name] = floor
    return found


def fresh_venv(where: Path, *requirements: str) -> Path:
    """The python of a new virtualenv at `where` holding `requirements`."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=60)
    python = where / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *requirements],
        capture_output=True, text=True, timeout=240)
    assert install.returncode == 0, install.stderr
    return python


def test_the_client_alone_works_on_the_oldest_runtimes_it_accepts(
        tmp_path: Path, node: NodeProcess) -> None:
    oldest = floors()
    assert set(oldest) == {"grpcio", "protobuf", "googleapis-common-protos"}
    venv = tmp_path / "venv"
    python = fresh_venv(venv, *[f"{name}=={floor}" for name, floor in oldest.items()],
                        str(CLIENT))
    used = subprocess.run([str(python), "-c", USE_THE_CLIENT, node.address],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    assert used.stderr == ""  # no warning from the older runtimes either
    seen = json.loads(used.stdout)
    assert (seen["grpcio"], seen["protobuf"]) == (oldest["grpcio"], oldest["protobuf"])
    assert seen == {**seen, "server_importable": False, "first": "v1", "many": ["1", "2", None],
                    "gone": None, "refused": "INVALID_ARGUMENT"}
    installed = subprocess.run([str(python), "-c",
                                "import kvclient, pathlib; "
                                "print(pathlib.Path(kvclient.__file__).parent)"],
                               capture_output=True, text=True, timeout=30, cwd=tmp_path)
    package = Path(installed.stdout.strip())
    assert package.is_relative_to(venv)  # the installed copy, not the source tree
    assert (package / "py.typed").exists() and (package / "pb" / "kv_pb2.pyi").exists()


def test_a_traced_call_works_on_the_oldest_opentelemetry_api_the_extra_admits(
        tmp_path: Path, node: NodeProcess) -> None:
    oldest = floors("tracing")
    assert set(oldest) == {"opentelemetry-api"}
    api = oldest["opentelemetry-api"]
    # The SDK of the same release: the extra needs only the API, but an
    # application that sees spans brings an SDK, and its floor is the API's.
    python = fresh_venv(tmp_path / "venv", *[f"{n}=={f}" for n, f in floors().items()],
                        f"opentelemetry-api=={api}", f"opentelemetry-sdk=={api}",
                        f"{CLIENT}[tracing]")
    used = subprocess.run([str(python), "-c", TRACE_THE_CLIENT, node.address],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    seen = json.loads(used.stdout)
    assert seen["api"] == api or seen["api"].startswith(api + ".")  # 1.20 installs 1.20.0
    assert seen["value"] == "v"
    by_name: dict[str, list[dict]] = {}
    for span in seen["spans"]:
        by_name.setdefault(span["name"], []).append(span)
    for call, method in (("kvclient.put", "kvstore.v1.KV/Put"),
                         ("kvclient.get", "kvstore.v1.KV/Get")):
        [outer] = by_name[call]
        attempts = by_name[method]
        assert outer["kind"] == "INTERNAL" and outer["parent"] is None
        assert attempts and all(a["kind"] == "CLIENT" and a["parent"] == outer["id"]
                                and a["trace"] == outer["trace"] for a in attempts)
