"""docs/architecture.md is held to the package: its file table names every module, and its
dependency rules hold for every import statement in gateway/ (typing-only imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

from docs_markdown import code_spans, read

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports: of the gateway by module name (``from gateway import
    errors`` is ``gateway.errors``), anything else by its top-level name."""
    path = modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {
                alias.name if alias.name.startswith("gateway") else alias.name.split(".")[0] for alias in node.names
            }
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
            if not base.startswith("gateway"):
                found.add(base.split(".")[0])
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base)
    return frozenset(found - {module})


def closure(module: str) -> set[str]:
    """Everything ``module`` imports, directly or through the gateway's other modules."""
    reached: set[str] = set()
    todo = [module]
    while todo:
        for name in imports(todo.pop()) - reached:
            reached.add(name)
            if name in modules():
                todo.append(name)
    return reached


def gateway_imports(module: str) -> set[str]:
    return {name for name in imports(module) if name == "gateway" or name.startswith("gateway.")}


def importers(target: str) -> set[str]:
    return {module for module in modules() if target in imports(module)}


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_every_module_has_a_row_in_the_file_table() -> None:
    """A newcomer finds every file on the page: each module of gateway/, gateway/audit/ and
    gateway/cli/ has its own row, gateway/stub/ and gateway/fleet/ one row each (their own
    pages go further); and every row names a file or folder that exists."""
    table = read(ARCHITECTURE).table("File", "What it holds")
    rows = [code_spans(cell)[0] for cell in table.column("File")]
    expected = []
    for path in modules().values():
        relative = path.relative_to(ROOT)
        if relative.parts[1] in ("stub", "fleet"):
            folder = f"gateway/{relative.parts[1]}/"
            if folder not in expected:
                expected.append(folder)
        else:
            expected.append(str(relative))
    assert sorted(expected) == sorted(rows)
    assert all((ROOT / row).exists() for row in rows)


def test_config_is_a_leaf() -> None:
    """config imports only passwords and tls, which import nothing of the gateway."""
    assert {"gateway.passwords", "gateway.tls"} == gateway_imports("gateway.config")
    assert set() == gateway_imports("gateway.passwords") | gateway_imports("gateway.tls")


def test_the_audit_store_knows_nothing_of_http() -> None:
    """Nothing gateway/audit/ imports, directly or through another module, is aiohttp; outside
    gateway/audit/ it reaches only the log (the anchor logs the head) and its terminal escaping."""
    for module in modules():
        if inside(module, "gateway.audit"):
            reached = closure(module)
            outside = {name for name in reached if name.startswith("gateway.") and not inside(name, "gateway.audit")}
            assert set() == reached & {"aiohttp", "yarl", "multidict"}, module
            assert outside <= {"gateway.logs", "gateway.terminal"}, module


def test_only_the_sqlite_backend_names_sqlite() -> None:
    """The store and its file format; backends.py chooses it; everything else (the fleet shipper
    too) holds an AuditStore."""
    naming = {module for module in modules() if imports(module) & {"sqlite3", "aiosqlite"}}
    assert {"gateway.audit.sqlite", "gateway.audit.sqlite_file", "gateway.audit.schema"} == naming
    assert {"gateway.audit.backends"} == importers("gateway.audit.sqlite")
    assert {"gateway.audit.backends", "gateway.audit.sqlite"} == importers("gateway.audit.sqlite_file")


def test_the_recorder_process_loads_neither_asyncio_nor_the_reader() -> None:
    """It is started, and restarted after a crash, while calls wait with 503: its start is
    kept to what appending needs (a third less time than with aiosqlite and asyncio)."""
    check = "import sys, gateway.audit.recorder; print(sorted(set(sys.modules) & set(sys.argv[1:])))"
    heavy = ["asyncio", "aiosqlite", "gateway.audit.sqlite", "aiohttp", "structlog"]
    loaded = subprocess.run([sys.executable, "-c", check, *heavy], capture_output=True, text=True, check=True)
    assert "[]\n" == loaded.stdout


def test_the_stub_knows_nothing_of_the_gateway() -> None:
    for module in modules():
        if inside(module, "gateway.stub"):
            foreign = {name for name in gateway_imports(module) if not inside(name, "gateway.stub")}
            assert foreign <= {"gateway.basic"}, module
    assert set() == gateway_imports("gateway.basic")


def test_nothing_but_the_entry_point_imports_the_cli() -> None:
    users = {
        module
        for module in modules()
        if not inside(module, "gateway.cli") and any(inside(name, "gateway.cli") for name in gateway_imports(module))
    }
    assert {"gateway.__main__"} == users


def test_the_request_path_sits_above_its_helpers() -> None:
    """Only app.py imports the handler, and no import cycle exists in the package."""
    assert {"gateway.app"} == importers("gateway.handler")
    graph = {module: gateway_imports(module) & set(modules()) for module in modules()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join([*path[path.index(module) :], module])
        if module in done:
            return
        for name in sorted(graph[module]):
            visit(name, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_test_modules_import_helpers_not_each_other_nor_conftest() -> None:
    """Shared test code lives in plain modules (helpers.py, *_support.py): a test module that
    imports another runs that module's tests' imports and fixtures twice, and hides the helper."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {name}" for name in names if name.startswith("test_") or name == "conftest"]
    assert [] == offenders
