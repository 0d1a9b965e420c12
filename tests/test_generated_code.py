"""The committed protobuf/gRPC modules are what proto/ generates today, with
the pinned generator (proto/tools.txt, in its venv .venv/protoc)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "client" / "kvclient" / "pb"
GENERATOR_PYTHON = ROOT / ".venv" / "protoc" / "bin" / "python"


@pytest.mark.process  # runs the generator
@pytest.mark.timeout(60)
def test_generated_code_matches_proto_sources(tmp_path: Path) -> None:
    assert GENERATOR_PYTHON.exists(), "the generator's venv is missing: `make test` makes it"
    run = subprocess.run([str(GENERATOR_PYTHON), str(ROOT / "proto" / "generate.py"),
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=50)
    assert run.returncode == 0, run.stderr
    fresh = tmp_path / "kvclient" / "pb"
    generated = sorted(p.name for p in fresh.iterdir() if p.is_file())
    assert generated, "protoc produced nothing"
    committed = sorted(p.name for p in COMMITTED.iterdir()
                       if p.is_file() and p.name != "__init__.py")
    assert committed == generated, "generated files differ from committed ones: run `make proto`"
    stale = [name for name in generated
             if (fresh / name).read_bytes() != (COMMITTED / name).read_bytes()]
    assert not stale, f"stale generated code {stale}: run `make proto` and commit the result"
