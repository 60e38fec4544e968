"""The package's import graph has no cycle, and only the store touches the store's files."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bghttp"


def _runtime_imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """bghttp modules (dotted, under ``bghttp``) that module ``name`` imports when it is imported.

    Not those under TYPE_CHECKING or inside functions; ``from . import x`` counts ``x``
    when it is a module, else the package it came from.
    """
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    imported: set[str] = set()

    def add(target: str, names: list[str]) -> None:
        for alias in names:
            child = f"{target}.{alias}" if target else alias
            if child in modules:
                imported.add(child)
            elif target in modules:
                imported.add(target)

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
                add(target, [alias.name for alias in node.names])
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bghttp."):
                add(node.module.removeprefix("bghttp."), [alias.name for alias in node.names])

    visit(ast.parse(path.read_text()).body)
    imported.discard(name)
    return imported


def _modules() -> dict[str, Path]:
    """Every module of the package, subpackages included, by dotted name under ``bghttp``."""
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",) or parts[-1] == "__main__":
            continue
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_every_module_imports() -> None:
    for name in _modules():
        importlib.import_module(f"bghttp.{name}")


def test_the_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: _runtime_imports(name, path, set(modules)) for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def walk(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append([*trail[trail.index(target):], target] if target in trail else [name, target])
            elif target not in state:
                walk(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


#: The submit path (submission, validation, sendable) is shared: the worker's intake
#: (``submit_request`` messages) validates and submits exactly as a client does.
CLIENT_SIDE = {"client", "aio", "bulk", "reading", "waiting"}


def test_the_client_and_the_worker_side_import_only_the_shared_layer() -> None:
    """The worker side never imports the client side or the CLI; the top level imports the
    worker side only in ``actors`` (the ``dramatiq bghttp.actors`` entry point)."""
    modules = _modules()
    crossings = []
    for name, path in modules.items():
        imported = _runtime_imports(name, path, set(modules))
        if name.startswith("worker"):
            crossings += [(name, target) for target in imported if target in CLIENT_SIDE or target.startswith("cli")]
        elif not name.startswith("cli") and name != "actors":
            crossings += [(name, target) for target in imported if target.startswith("worker")]
    assert crossings == []


STORE_INTERNALS = re.compile(
    r"\.(request_path|body_path|files_dir|response_part_path|response_body_path|_path|sync_new_request"
    r"|syncs_deferred|group_commit|_must_sync|sync_file|open_private)\(|sync_filesystem"
)


def test_only_the_store_touches_its_paths_and_syncs() -> None:
    allowed = {"store", "durability"}
    offenders = [
        f"{name}.py:{number}: {line.strip()}"
        for name, path in _modules().items()
        if name not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if STORE_INTERNALS.search(line)
    ]
    assert offenders == []
