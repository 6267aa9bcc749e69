"""Each workspace member declares exactly what its code imports: no more, no less.

An undeclared import works in the workspace's shared environment and fails in an image
that installs the member alone; a declared package nothing imports is weight in every image.
"""

import ast
import re
import sys
import tomllib
from importlib.metadata import distributions, packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]
MEMBERS = sorted(path for pattern in WORKSPACE["members"] for path in ROOT.glob(pattern))


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project(member: Path) -> dict:
    return tomllib.loads((member / "pyproject.toml").read_text())


def packages(member: Path) -> list[Path]:
    """The member's import packages, as its wheel ships them."""
    wheel = project(member)["tool"]["hatch"]["build"]["targets"]["wheel"]
    return [member / package for package in wheel["packages"]]


def declared(member: Path) -> set[str]:
    """Distribution names of the member's runtime dependencies, extras and versions dropped."""
    dependencies = project(member)["project"].get("dependencies", [])
    return {normalized(re.match(r"[A-Za-z0-9._-]+", dep).group()) for dep in dependencies}


def imported_modules(member: Path) -> set[str]:
    """Dotted names of every absolute import in the member's code (`from a import b`: a.b,
    whether b is a module or a name in a)."""
    names = set()
    for package in packages(member):
        for source in package.rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if isinstance(node, ast.Import):
                    names |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def distribution_of() -> dict[str, str]:
    """Import name -> distribution, for the workspace's members and what is installed; a
    namespace shared by several distributions (`opentelemetry`) maps each of its packages."""
    owners = {}
    for name, dists in packages_distributions().items():
        if len(set(dists)) == 1:
            owners[name] = normalized(dists[0])
    for dist in distributions():
        for file in dist.files or ():
            parts = file.parts
            if len(parts) > 2 and parts[-1] == "__init__.py" and parts[0] not in owners:
                owners.setdefault(".".join(parts[:-1]), normalized(dist.metadata["Name"]))
    for member in MEMBERS:
        for package in packages(member):
            owners[package.name] = normalized(project(member)["project"]["name"])
    return owners


def owner(module: str, owners: dict[str, str]) -> str | None:
    """The distribution of `module`: that of its longest dotted prefix anyone owns."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if (name := ".".join(parts[:end])) in owners:
            return owners[name]
    return None


@pytest.mark.parametrize("member", MEMBERS, ids=lambda member: str(member.relative_to(ROOT)))
def test_a_member_declares_exactly_what_it_imports(member: Path) -> None:
    own = {package.name for package in packages(member)}
    owners = distribution_of()
    third_party = {
        module
        for module in imported_modules(member)
        if module.split(".")[0] not in own | set(sys.stdlib_module_names)
    }
    unknown = sorted(name for name in third_party if owner(name, owners) is None)
    assert unknown == [], f"imports nothing installed provides: {unknown}"
    needed = {owner(name, owners) for name in third_party}
    undeclared, unused = sorted(needed - declared(member)), sorted(declared(member) - needed)
    assert not undeclared, f"imported but not declared: {undeclared}"
    assert not unused, f"declared but never imported: {unused}"
