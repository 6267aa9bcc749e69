"""Consumer-driven contracts: does a producer's schema still provide what a consumer reads?

A consumer lists the fields its handlers read as dotted paths: `order_id`,
`customer.email`, `lines[].unit_price.amount`, where `[]` means "each item of the array".
`missing_fields(schema, paths)` reports, per path:

- a step that is not a property where the path expects it (`$ref`s resolved in the schema's
  `$defs`; under `anyOf`/`oneOf` a step exists if some non-null branch has it), or a `[]`
  step on a field that is not an array;
- otherwise, a step that may be absent: not `required` in every non-null branch of the
  object holding it, so the consumer may get nothing. A path ending in `?`
  (`causation_id?`) says the consumer copes with that, and is not reported for it.

Only presence is checked: a required field whose value may be `null`, and the field's type,
are the schema compatibility check's business (`contracts.compatibility`).
"""

from collections.abc import Iterable

from .compatibility import Schema, alternatives


def missing_fields(schema: Schema, paths: Iterable[str]) -> list[str]:
    """One message per path in `paths` that `schema` does not promise to provide."""
    return [problem for path in paths if (problem := _missing(schema, path)) is not None]


def _missing(schema: Schema, path: str) -> str | None:
    nodes = [schema]
    walked = ""
    may_be_absent = None
    for step in path.removesuffix("?").split("."):
        name = step.removesuffix("[]")
        walked = f"{walked}.{name}" if walked else name
        branches = [
            branch
            for node in nodes
            for branch in alternatives(node, schema)
            if branch.get("type") != "null"
        ]
        holders = [branch for branch in branches if name in branch.get("properties", {})]
        if not holders:
            return f"{path}: `{walked}` is not in the schema"
        if may_be_absent is None and any(name not in b.get("required", ()) for b in branches):
            may_be_absent = walked
        nodes = [holder["properties"][name] for holder in holders]
        if step.endswith("[]"):
            arrays = [
                branch
                for node in nodes
                for branch in alternatives(node, schema)
                if branch.get("type") == "array"
            ]
            if not arrays:
                return f"{path}: `{walked}` is not an array"
            nodes = [array.get("items", {}) for array in arrays]
            walked += "[]"
    if may_be_absent is not None and not path.endswith("?"):
        return (
            f"{path}: `{may_be_absent}` is optional, so the consumer may get nothing"
            " (end the path with `?` if it copes)"
        )
    return None
