"""The import rule: the pure cores import no transport, no storage engine, no
protobuf, no event loop, no clock and no threads; and kvclient imports
nothing of the server.

Read from the sources with `ast`, so an import inside a function or under
`if TYPE_CHECKING` counts as much as one at the top. A pure core may import
from kvstore only other pure cores (and the packages that hold them, whose
`__init__` is checked too), so the rule holds for what it imports in turn.
"""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KVSTORE = ROOT / "kvstore"
KVCLIENT = ROOT / "client" / "kvclient"

# Every pure core, by path; a path ending in / is every module of that
# package, present and future. A module whose docstring says it is pure
# belongs here or in PURE_BUT_AT_THE_EDGE (a test below keeps them honest).
PURE_CORES = [
    "kvstore/placement/",
    "kvstore/causality/",
    "kvstore/errors.py",
    "kvstore/health/failure_detector.py",
    "kvstore/leaderless/quorum.py",
    "kvstore/leaderless/hints.py",
    "kvstore/leaderless/merkle.py",
    "kvstore/leaderless/read_request.py",  # the sans-I/O request machines
    "kvstore/leaderless/write_request.py",
    "kvstore/leaderless/purge_plan.py",
    "kvstore/leaderless/peer_ops.py",  # the seam the algorithms call: a protocol
    "kvstore/storage/record.py",
    "kvstore/storage/engine.py",  # the storage seam: the protocol and values LMDB implements
    "kvstore/storage/memory_engine.py",  # the simulation's engine, with LMDB's contract
    "kvstore/leader/raft/",  # the Raft core
    "kvstore/leader/data_format.py",  # leader mode's data: its format, commands, images,
    "kvstore/leader/commands.py",  # the state machine, what a pass writes, the store in
    "kvstore/leader/images.py",  # memory
    "kvstore/leader/state_machine.py",
    "kvstore/leader/persistence.py",
    "kvstore/leader/memory_store.py",
    "kvstore/leader/group_log.py",  # the core's view of a store
    "kvstore/leader/restore_fence.py",  # what a restore from a backup does to each group
    "kvstore/leader/envelopes.py",  # what a node sends another in a pass (wire.py: its bytes)
    "kvstore/leader/quiescence.py",  # the multi-Raft host: when groups sleep, who waits,
    "kvstore/leader/waiters.py",  # and the host itself (driver.py: its asyncio shell)
    "kvstore/leader/host.py",
    "kvstore/leader/settings.py",
    "kvstore/leader/leaders.py",  # who leads each partition, as a process knows it
    "kvstore/leader/route.py",  # where one request goes next (access.py: its asyncio shell)
    "kvstore/rpc/batches.py",  # which items make a message, and its bytes: no protobuf needed
    "kvstore/security/identity.py",  # who a caller is and what it may call
    "kvstore/security/rate_limit.py",  # the token buckets, on the caller's clock
    "kvstore/rpc/admission.py",  # admission control's bounds and refusals
]

PURE_BUT_AT_THE_EDGE = {
    "kvstore/rpc/validation.py": "pure of I/O, but it checks protobuf requests: the rpc edge",
}

FORBIDDEN = [
    "kvstore.rpc", "kvstore.server", "kvstore.ops", "kvstore.causal_context",
    "grpc", "lmdb", "google.protobuf", "kvclient.pb",
    "asyncio", "time", "threading", "socket", "subprocess", "uvloop",
]
FORBIDDEN_PREFIXES = ["grpc_"]  # grpc_health, grpc_reflection, grpc_tools

# Narrow exceptions, each with its reason; a test fails once one is unused.
ALLOWED = {
    ("kvstore/causality/versions.py", "threading"):
        "a Lock around the decode memo, which the event loop and the storage "
        "commit thread share; it starts no thread and never waits on I/O",
    ("kvstore/storage/memory_engine.py", "kvstore.clock"):
        "the default of clock_ms, the system clock as LmdbEngine's; never read when "
        "the simulation passes its own clock",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module `path` imports, and for `from m import n` also `m.n`
    (which may be a submodule); relative imports resolved."""
    return _imports(path.read_text(), _module_name(path), path.name == "__init__.py")


def _imports(source: str, module_name: str, is_package: bool) -> set[str]:
    tree = ast.parse(source)
    package = module_name.split(".") if is_package else module_name.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def is_forbidden(name: str) -> bool:
    root = name.split(".")[0]
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN) or any(
        root.startswith(prefix) for prefix in FORBIDDEN_PREFIXES)


def kvstore_module(name: str) -> str | None:
    """The kvstore module (or package) `name` refers to, if any: the longest
    prefix of it that is a file."""
    parts = name.split(".")
    if parts[0] != "kvstore":
        return None
    for end in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:end])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return ".".join(parts[:end])
    return None


def core_files() -> list[Path]:
    files: list[Path] = []
    for relative in PURE_CORES:
        path = ROOT / relative
        files += sorted(path.glob("*.py")) if relative.endswith("/") else [path]
    return files


def checked_files() -> Iterator[Path]:
    """The pure cores and the `__init__` of every package above them."""
    seen: set[Path] = set()
    for path in core_files():
        for package in path.relative_to(ROOT).parents:
            init = ROOT / package / "__init__.py"
            if package != Path(".") and init not in seen:
                seen.add(init)
                yield init
        if path not in seen:
            seen.add(path)
            yield path


PURE_MODULES = {_module_name(path) for path in checked_files()}


@pytest.mark.parametrize("path", list(checked_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_pure_core_imports_no_io_transport_protobuf_clock_or_threads(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    for name in sorted(imported_names(path)):
        if (relative, name) in ALLOWED:
            continue
        assert not is_forbidden(name), f"{relative} imports {name}"
        module = kvstore_module(name)
        assert module is None or module in PURE_MODULES, (
            f"{relative} imports {module}, which is not a pure core (add it to PURE_CORES "
            "only if it is one)")


def test_every_allowed_exception_is_still_needed() -> None:
    for relative, name in ALLOWED:
        assert name in imported_names(ROOT / relative), (
            f"{relative} no longer imports {name}: drop it from ALLOWED")


def test_every_module_that_says_it_is_pure_is_held_to_the_rule() -> None:
    claims_purity = re.compile(r"\bPure\b")
    cores = set(core_files())
    for path in sorted(KVSTORE.rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        relative = str(path.relative_to(ROOT))
        if claims_purity.search(docstring):
            assert path in cores or relative in PURE_BUT_AT_THE_EDGE, (
                f"{relative}'s docstring says it is pure: add it to PURE_CORES")


def test_the_listed_cores_exist() -> None:
    for relative in [*PURE_CORES, *PURE_BUT_AT_THE_EDGE]:
        path = ROOT / relative
        assert (path / "__init__.py").is_file() if relative.endswith("/") else path.is_file(), (
            relative)


def test_kvclient_imports_nothing_from_kvstore() -> None:
    for path in sorted(KVCLIENT.rglob("*.py")):
        offending = [n for n in imported_names(path) if n == "kvstore" or n.startswith("kvstore.")]
        assert not offending, f"{path.relative_to(ROOT)} imports {offending}"


def test_the_rule_sees_imports_wherever_they_are() -> None:
    """The checker itself: nested, conditional and relative imports, and
    submodules imported with `from`."""
    source = (
        "from . import membership\n"
        "from ..causality import versions\n"
        "def f():\n    import time\n    from kvclient import pb\n"
        "if False:\n    from grpc_health.v1 import health_pb2\n"
    )
    names = _imports(source, "kvstore.placement.ring", is_package=False)
    assert {"kvstore.placement.membership", "kvstore.causality.versions", "time",
            "kvclient.pb", "grpc_health.v1"} <= names
    assert kvstore_module("kvstore.causality.versions.DVVSet") == "kvstore.causality.versions"
    assert all(is_forbidden(n) for n in ["time", "kvclient.pb", "grpc_health.v1", "grpc.aio"])
    assert not any(is_forbidden(n) for n in ["timeit", "kvclient.errors", "kvstore.errors"])
