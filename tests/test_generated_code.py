"""The committed protobuf/gRPC modules are what proto/ generates today."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "client" / "kvclient" / "pb"


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(60)
def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    _load_generator().generate(tmp_path)
    fresh = tmp_path / "kvclient" / "pb"
    generated = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert generated, "protoc produced nothing"
    committed = sorted(p.name for p in COMMITTED.iterdir()
                       if p.is_file() and p.name != "__init__.py")
    assert committed == generated, "generated files differ from committed ones: run `make proto`"
    stale = [name for name in generated
             if (fresh / name).read_bytes() != (COMMITTED / name).read_bytes()]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit the result"
