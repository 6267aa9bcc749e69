"""Each service's Dockerfile installs dependencies from the lock before copying the code.

No Docker engine runs here, so this replays that first stage: the files the Dockerfile
copies before `uv sync --locked`, and uv's own check that the lock matches them. It fails
when a new workspace member is missing from a Dockerfile, as the image build would.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted(ROOT.glob("services/*/Dockerfile"))


def dependency_stage_files(dockerfile: Path) -> list[tuple[str, str]]:
    """(source, destination) of each COPY before the first `uv sync`."""
    copies = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("RUN uv sync"):
            return copies
        if line.startswith("COPY "):
            *sources, destination = line.split()[1:]
            copies += [(source, destination) for source in sources]
    raise AssertionError(f"{dockerfile} never runs uv sync")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_the_dependency_stage_sees_a_lock_that_matches_the_workspace(
    dockerfile: Path, tmp_path: Path
) -> None:
    assert len(DOCKERFILES) == 4
    for source, destination in dependency_stage_files(dockerfile):
        target = tmp_path / destination / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / source, target)

    check = subprocess.run(
        ["uv", "lock", "--check", "--offline"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
