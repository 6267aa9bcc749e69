"""JSON Schema export: `python -m contracts.schemas [--check] [--allow-breaking]`.

The files in `contracts/schemas/` are what other teams and tools read; CI fails when they
drift from the classes. Writing them refuses a breaking change to a committed file (see
`contracts.compatibility`) unless `--allow-breaking` is given.
"""

import argparse
import json
import sys
from pathlib import Path

from .registry import ALL_EVENTS, REQUEST_REPLY_MESSAGES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, one per event class and version, and per request-reply message."""
    models = {
        **{f"event:{cls.routing_key()}": cls for cls in ALL_EVENTS},
        **{f"message:{name}": model for name, model in REQUEST_REPLY_MESSAGES.items()},
    }
    rendered = {}
    for urn, model in models.items():
        schema = model.model_json_schema()
        schema["$id"] = f"urn:orderflow:{urn}"
        name = urn.split(":", 1)[1]
        rendered[f"{name}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


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
    from .compatibility import check  # imported here: compatibility builds on this module

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
