"""The package's import graph has no cycle, and only the store touches the store's files."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bghttp"


def _runtime_imports(path: Path) -> set[str]:
    """bghttp modules ``path`` imports when it is imported (not under TYPE_CHECKING, not inside functions)."""
    imported: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    imported.add(node.module.split(".")[0])
                else:
                    imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bghttp."):
                imported.add(node.module.split(".")[1])

    visit(ast.parse(path.read_text()).body)
    return imported


def _modules() -> dict[str, Path]:
    return {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}


def test_every_module_imports() -> None:
    for name in _modules():
        importlib.import_module(f"bghttp.{name}")


def test_the_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: _runtime_imports(path) & set(modules) for name, path in modules.items()}
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
