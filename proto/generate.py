"""Generate the Python protobuf/gRPC modules from proto/ (run by `make proto`).

    .venv/protoc/bin/python proto/generate.py [--out DIR]

Writes kvclient/pb/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py under DIR (default:
client/). Runs in the generator's own venv (proto/tools.txt), whose
grpcio-tools decides the oldest grpcio and protobuf the written code accepts.
tests/test_generated_code.py regenerates into a scratch directory and fails
when the committed files differ.
"""

import argparse
import importlib.resources
import sys
from pathlib import Path

from google.rpc import status_pb2
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "client"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("kvclient/pb/*.proto"))


def include_paths() -> list[Path]:
    """Where protoc finds the imports: proto/, google/protobuf's well-known
    types (bundled with grpcio-tools) and google/rpc/status.proto (shipped by
    googleapis-common-protos, whose generated status_pb2 the client imports)."""
    well_known = Path(str(importlib.resources.files("grpc_tools") / "_proto"))
    google_rpc = Path(status_pb2.__file__).resolve().parent.parent.parent
    return [PROTO_ROOT, well_known, google_rpc]


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        *(f"-I{path}" for path in include_paths()),
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(path.relative_to(PROTO_ROOT)) for path in proto_files()),
    ]
    # protoc resolves the file arguments against the include path.
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    generate(parser.parse_args().out)
    sys.exit(0)
