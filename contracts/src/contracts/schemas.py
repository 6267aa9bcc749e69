"""JSON Schema export: `python -m contracts.schemas [--check]`.

The files in `contracts/schemas/` are what other teams and tools read; CI fails when they
drift from the classes.
"""

import argparse
import json
import sys
from pathlib import Path

from .registry import ALL_EVENTS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text, one per event class and version."""
    rendered = {}
    for cls in ALL_EVENTS:
        schema = cls.model_json_schema()
        schema["$id"] = f"urn:orderflow:event:{cls.routing_key()}"
        rendered[f"{cls.routing_key()}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
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


def write_schemas(directory: Path = SCHEMA_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    expected = render_schemas()
    for stray in {p.name for p in directory.glob("*.json")} - expected.keys():
        (directory / stray).unlink()
    for name, text in expected.items():
        (directory / name).write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed files drift")
    args = parser.parse_args()
    if args.check:
        drift = drifted_files()
        for name in drift:
            print(f"schema drift: {name}", file=sys.stderr)
        return 1 if drift else 0
    write_schemas()
    return 0


if __name__ == "__main__":
    sys.exit(main())
