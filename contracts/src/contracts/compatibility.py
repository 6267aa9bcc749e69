"""Breaking-change check: `python -m contracts.compatibility [--schemas DIR]`.

A committed schema file is a published contract: consumers were written against it, and
messages valid under it are still on the wire. The code may change one version of an event
only compatibly; anything else needs a new version (a new class and routing key).

`breaking_changes(old, new)` compares two JSON Schemas of one version, as pydantic's
`model_json_schema()` writes them, walking both in step from the root. `$ref`s are resolved
in each schema's own `$defs`; `anyOf`/`oneOf` branches count as one node that accepts what
any branch accepts; array `items` are walked under `<field>[]`. At each node it reports:

- a type the old node accepted that the new one does not (`type`, over all branches, `null`
  included; `integer` counts as accepted by `number`; a node with no `type` accepts any);
- a `const`/`enum` value the old node accepted that the new one does not, or values newly
  restricted by a `const`/`enum`;
- for objects: a property removed; a property new and required, or turned required;
  `additionalProperties` turned `false`.

Anything else passes: new optional properties, properties turned optional, wider types,
changed descriptions, titles, examples and defaults. Not checked: string and number
constraints (`pattern`, `maxLength`, `minimum` ...), `allOf`, tuple `prefixItems`, and
which `anyOf` branch a value came from (object branches are compared by the first object
branch of each side).

`check()` runs it for every committed file against what the code publishes now; a
committed version the code no longer publishes is breaking too, a new version is not.
`contracts.schema_files` runs the same check before it writes the files.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .schemas import SCHEMA_DIR, render_schemas

Schema = dict[str, Any]


def alternatives(node: Schema, root: Schema) -> list[Schema]:
    """What `node` accepts as a flat list of branches, `$ref`s resolved in `root["$defs"]`."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].removeprefix("#/$defs/")]
    branches = node.get("anyOf") or node.get("oneOf")
    if branches is None:
        return [node]
    return [leaf for branch in branches for leaf in alternatives(branch, root)]


def _types(branches: list[Schema]) -> set[str] | None:
    """The JSON types accepted, or None for any."""
    types: set[str] = set()
    for branch in branches:
        if "type" not in branch:
            return None
        declared = branch["type"]
        types.update([declared] if isinstance(declared, str) else declared)
    return types


def _narrowed(old: set[str] | None, new: set[str] | None) -> bool:
    """Whether `new` rejects a type that `old` accepts."""
    if new is None:
        return False
    if old is None:
        return True
    return bool(old - new - ({"integer"} if "number" in new else set()))


def _values(branches: list[Schema]) -> list[Any] | None:
    """The `const`/`enum` values accepted, or None when some branch takes any value."""
    values: list[Any] = []
    for branch in branches:
        if "const" in branch:
            values.append(branch["const"])
        elif "enum" in branch:
            values.extend(branch["enum"])
        else:
            return None
    return values


def _of_type(branches: list[Schema], json_type: str) -> Schema | None:
    return next((branch for branch in branches if branch.get("type") == json_type), None)


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(types: set[str] | None) -> str:
    return "|".join(sorted(types)) if types is not None else "any"


def _literals(values: list[Any]) -> str:
    return ", ".join(json.dumps(value) for value in values)


@dataclass(frozen=True)
class _Comparison:
    old_root: Schema
    new_root: Schema

    def node(
        self, old: Schema, new: Schema, path: str, enclosing: frozenset[tuple[int, int]]
    ) -> list[str]:
        old_branches = alternatives(old, self.old_root)
        new_branches = alternatives(new, self.new_root)
        label = path or "(root)"
        problems = []

        old_types, new_types = _types(old_branches), _types(new_branches)
        if _narrowed(old_types, new_types):
            problems.append(
                f"{label}: type changed from {_describe(old_types)} to {_describe(new_types)}"
            )

        old_values, new_values = _values(old_branches), _values(new_branches)
        if new_values is not None:
            if old_values is None:
                problems.append(f"{label}: values restricted to {_literals(new_values)}")
            elif removed := [value for value in old_values if value not in new_values]:
                problems.append(f"{label}: values removed: {_literals(removed)}")

        old_object, new_object = _of_type(old_branches, "object"), _of_type(new_branches, "object")
        if old_object is not None and new_object is not None:
            problems += self.object(old_object, new_object, path, enclosing)

        old_array, new_array = _of_type(old_branches, "array"), _of_type(new_branches, "array")
        if old_array is not None and new_array is not None:
            old_items, new_items = old_array.get("items", {}), new_array.get("items", {})
            problems += self.node(old_items, new_items, f"{path}[]", enclosing)
        return problems

    def object(
        self, old: Schema, new: Schema, path: str, enclosing: frozenset[tuple[int, int]]
    ) -> list[str]:
        pair = (id(old), id(new))
        if pair in enclosing:  # a recursive model, already being compared further up
            return []
        enclosing |= {pair}
        old_properties, new_properties = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        problems = []
        if (
            old.get("additionalProperties") is not False
            and new.get("additionalProperties") is False
        ):
            problems.append(f"{path or '(root)'}: additionalProperties tightened to false")
        for name, old_property in old_properties.items():
            if name not in new_properties:
                problems.append(f"{_child(path, name)}: property removed")
            else:
                problems += self.node(
                    old_property, new_properties[name], _child(path, name), enclosing
                )
        for name in sorted(new_required - old_required):
            change = "became required" if name in old_properties else "new required property"
            problems.append(f"{_child(path, name)}: {change}")
        return problems


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """How `new` breaks the contract `old` (the same event version), one line per change."""
    return _Comparison(old, new).node(old, new, path="", enclosing=frozenset())


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Breaking changes from each committed schema in `directory` to what the code publishes."""
    published = {name: json.loads(text) for name, text in render_schemas().items()}
    problems = []
    for committed in sorted(directory.glob("*.json")):
        version = committed.name.removesuffix(".json")
        if committed.name not in published:
            problems.append(f"{version}: version no longer published")
            continue
        changes = breaking_changes(json.loads(committed.read_text()), published[committed.name])
        problems += [f"{version}: {change}" for change in changes]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fail when the code publishes a breaking change to a committed schema."
    )
    parser.add_argument(
        "--schemas",
        type=Path,
        default=SCHEMA_DIR,
        metavar="DIR",
        help="the committed schema files (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.schemas.is_dir():
        parser.error(f"{args.schemas} is not a directory")
    problems = check(args.schemas)
    for problem in problems:
        print(f"breaking change: {problem}", file=sys.stderr)
    if problems:
        print("publish a new event version instead of changing a committed one", file=sys.stderr)
        return 1
    committed = len(list(args.schemas.glob("*.json")))
    print(f"schemas compatible: no breaking change to the {committed} committed schema files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
