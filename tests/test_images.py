"""Every service's image: one Dockerfile, told which service it is, installing that service
alone from the lock.

No Docker engine runs here, so these replay what a build does: the dependency stage's
copies and `uv sync` in a fresh folder, then the final `uv sync` into a fresh environment,
and the installed service's own command. An import the service does not declare fails here
as it would in its image.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from servicekit.registry import SERVICES, ServiceEntry

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
SYNC = "RUN uv sync"


def dependency_stage_files() -> list[tuple[str, str]]:
    """(source, destination) of each COPY before the first `uv sync`."""
    copies = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith(SYNC):
            return copies
        if line.startswith("COPY "):
            *sources, destination = line.split()[1:]
            copies += [(source, destination) for source in sources]
    raise AssertionError(f"{DOCKERFILE} never runs uv sync")


def sync_commands(entry: ServiceEntry) -> list[list[str]]:
    """The Dockerfile's `uv sync` commands, for this service."""
    return [
        ["uv", *line.removeprefix("RUN uv ").replace("$SERVICE", entry.name).split()]
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith(SYNC)
    ]


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [arg.strip('"') for arg in command],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_a_service_installs_alone_from_the_lock_and_starts(
    entry: ServiceEntry, tmp_path: Path
) -> None:
    dependencies_stage, final_stage = sync_commands(entry)
    assert "--no-install-workspace" in dependencies_stage
    assert "--locked" in final_stage and "--no-dev" in final_stage

    # The dependency stage sees only the copied pyproject files and the lock.
    stage = tmp_path / "stage"
    for source, destination in dependency_stage_files():
        target = stage / destination / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / source, target)
    run(dependencies_stage, stage, {"UV_PROJECT_ENVIRONMENT": str(tmp_path / "deps")})

    # The final stage has the whole tree: install into an environment of its own.
    venv = tmp_path / "venv"
    run(final_stage, ROOT, {"UV_PROJECT_ENVIRONMENT": str(venv)})
    others = [other.package for other in SERVICES if other != entry]
    run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.util, sys; from {entry.package}.main import create_app; "
            "create_app(); "
            f"found = [p for p in {others!r} if importlib.util.find_spec(p)]; "
            "sys.exit(f'other services installed too: {found}' if found else 0)",
        ],
        tmp_path,
    )
    assert f"usage: {entry.name}" in run([str(venv / "bin" / entry.name), "--help"], tmp_path)


def test_compose_builds_every_service_from_the_one_dockerfile() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for entry in SERVICES:
        service = compose["services"][entry.name]
        assert service["build"]["context"] == "."
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["build"]["args"] == {"SERVICE": entry.name}
        assert f"{entry.default_port}:{entry.default_port}" in service["ports"]
        assert service["environment"][f"{entry.env_prefix}DATABASE_URL"].endswith(
            f"/{entry.name}"
        )
    assert not list(ROOT.glob("services/*/Dockerfile")), "one Dockerfile serves every service"
