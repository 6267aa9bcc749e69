"""The tree keeps its layering: dependencies point one way, shared code knows no service.

Read from the sources (no import runs), so a violation fails here before it surprises
someone at run time.
"""

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicekit.registry import SERVICES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    path.parent.name: path.parent
    for pattern in ("contracts/src/*/__init__.py", "libs/*/src/*/__init__.py")
    for path in ROOT.glob(pattern)
}
SERVICE_SOURCES = {
    entry.package: ROOT / "services" / entry.name / "src" / entry.package for entry in SERVICES
}
PACKAGES = {**SOURCES, **SERVICE_SOURCES}
FRAMEWORKS = {"fastapi", "faststream", "asyncpg", "aio_pika", "aiormq", "aiosmtplib", "uvicorn"}


def module_name(path: Path) -> str:
    for package, folder in PACKAGES.items():
        if path.is_relative_to(folder):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(f"{path} is in no package")


def runtime_imports(path: Path) -> Iterator[str]:
    """Absolute names of what the module imports when it runs (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports."""
    modules = {
        module_name(path): path for folder in PACKAGES.values() for path in folder.rglob("*.py")
    }
    return {
        name: {imported for imported in runtime_imports(path) if imported in modules} - {name}
        for name, path in modules.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in edges[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while (member := stack.pop()) != node:
                group.append(member)
            group.append(node)
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("library", sorted(SOURCES))
def test_a_shared_library_imports_no_service(library: str) -> None:
    imports = {
        (module, imported.split(".")[0])
        for module, targets in graph().items()
        if module.split(".")[0] == library
        for imported in targets
    }
    assert sorted(m for m, top in imports if top in SERVICE_SOURCES) == []


@pytest.mark.parametrize("package", sorted(SERVICE_SOURCES))
def test_a_domain_imports_no_framework(package: str) -> None:
    domain = SERVICE_SOURCES[package] / "domain"
    used = {
        (path.name, imported.split(".")[0])
        for path in domain.rglob("*.py")
        for imported in runtime_imports(path)
    }
    assert sorted((name, top) for name, top in used if top in FRAMEWORKS) == []


@pytest.mark.parametrize("package", sorted(SERVICE_SOURCES))
def test_use_cases_need_no_type_ignore(package: str) -> None:
    handlers = (SERVICE_SOURCES[package] / "handlers.py").read_text()
    assert not re.findall(r"type:\s*ignore.*", handlers)
