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


#: What the core must never import: an HTTP client, the broker, sockets, or the store.
CORE_FORBIDDEN = re.compile(
    r"^(httpx|httpcore|h11|aiohttp|dramatiq|pika|socket|ssl|select|selectors|asyncio|fcntl"
    r"|bghttp\.(store|store_api|durability|shared_fs|record_log|broker|worker|client|aio))(\.|$)"
)


def _imported_names(path: Path) -> set[str]:
    """Every module ``path`` imports at run time (at any depth, functions included; not the imports
    under ``if TYPE_CHECKING:``, which only name types), as absolute names."""
    package = ["bghttp", *path.parent.relative_to(PACKAGE).parts]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return names


def test_the_core_imports_no_client_broker_socket_or_store() -> None:
    """bghttp.core decides and never waits: no HTTP client, no Dramatiq, no sockets, no store, and
    nothing that imports them (its bghttp imports are followed)."""
    seen: set[str] = set()
    offenders: list[str] = []
    todo = [path for path in (PACKAGE / "core").rglob("*.py")]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_names(path):
            if CORE_FORBIDDEN.match(name):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
            elif name.startswith("bghttp."):
                parts = name.split(".")[1:]
                for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
                    if candidate.exists():
                        todo.append(candidate)
    assert offenders == []
    assert any(path.name == "outcomes.py" for path in seen)  # the walk saw the core


#: The ``bghttp[dashboard]`` extra's packages.
DASHBOARD_FRAMEWORK = {"starlette", "uvicorn", "jinja2", "markupsafe"}


def test_the_library_the_worker_and_the_cli_do_not_load_the_dashboard_framework() -> None:
    """``import bghttp``, the worker's entry point and the CLI's parser load no web framework:
    only ``bghttp dashboard`` does, when it runs (the extra is optional)."""
    import subprocess
    import sys

    probe = (
        "import sys, bghttp, bghttp.actors, bghttp.worker, bghttp.cli; bghttp.cli.build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *DASHBOARD_FRAMEWORK], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_only_the_cli_imports_the_dashboard() -> None:
    modules = _modules()
    importers = [
        name
        for name, path in modules.items()
        if not name.startswith(("dashboard", "cli"))
        and any(target.startswith("dashboard") for target in _runtime_imports(name, path, set(modules)))
    ]
    assert importers == []
