"""kvclient as its own distribution (client/pyproject.toml): installed alone
into a fresh virtualenv with the oldest grpcio, protobuf and
googleapis-common-protos it declares, it imports, types and works against a
running node."""

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


def floors() -> dict[str, str]:
    """The client distribution's dependencies, each at its declared floor."""
    declared = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = {}
    for requirement in declared:
        name, floor = re.fullmatch(r"([\w-]+)>=([\w.]+)", requirement).groups()  # type: ignore[union-attr]
        found[name] = floor
    return found


def test_the_client_alone_works_on_the_oldest_runtimes_it_accepts(
        tmp_path: Path, node: NodeProcess) -> None:
    oldest = floors()
    assert set(oldest) == {"grpcio", "protobuf", "googleapis-common-protos"}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    pins = [f"{name}=={floor}" for name, floor in oldest.items()]
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *pins, str(CLIENT)],
        capture_output=True, text=True, timeout=240)
    assert install.returncode == 0, install.stderr
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
