"""Schema files: `python -m contracts.schema_files [--check] [--allow-breaking]`.

Writes `contracts/schemas/` from the classes (`contracts.schemas`), refusing a breaking
change to a committed file (`contracts.compatibility`) unless `--allow-breaking` is given;
`--check` only reports the files that drift from the classes, as CI does.
"""

import argparse
import sys
from pathlib import Path

from .compatibility import check
from .schemas import SCHEMA_DIR, render_schemas


def drifted_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing, stale or no longer produced."""
    expected = render_schemas()
    on_disk = {p.name for p in directory.glob("*.json")}
    stale = [
        name
        for name, text in expected.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
    return sorted(stale + list(on_disk - expected.keys()))


class BreakingSchemaChange(Exception):
    """Writing the schemas would break committed ones; see `contracts.compatibility`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(["breaking changes to committed schemas:", *problems]))
        self.problems = problems


def write_schemas(directory: Path = SCHEMA_DIR, *, allow_breaking: bool = False) -> None:
    """Write every schema; a breaking change to a committed one needs `allow_breaking`."""
    if not allow_breaking and (problems := check(directory)):
        raise BreakingSchemaChange(problems)
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_schemas()
    for stray in {p.name for p in directory.glob("*.json")} - expected.keys():
        (directory / stray).unlink()
    for name, text in expected.items():
        (directory / name).write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed files drift")
    parser.add_argument(
        "--allow-breaking",
        action="store_true",
        help="overwrite committed files even when the change breaks their consumers",
    )
    args = parser.parse_args()
    if args.check:
        drift = drifted_files()
        for name in drift:
            print(f"schema drift: {name}", file=sys.stderr)
        return 1 if drift else 0
    try:
        write_schemas(allow_breaking=args.allow_breaking)
    except BreakingSchemaChange as error:
        print(error, file=sys.stderr)
        print("publish a new event version, or pass --allow-breaking", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
