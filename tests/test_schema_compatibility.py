import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from contracts import Event, OrderCancelledV1, OrderCreatedV1
from contracts.compatibility import Schema, breaking_changes, check
from contracts.schema_files import BreakingSchemaChange, drifted_files, write_schemas
from contracts.schemas import SCHEMA_DIR

Edit = Callable[[Schema], None]


def remove_property(schema: Schema, name: str) -> None:
    del schema["properties"][name]
    schema["required"].remove(name)


def set_property(schema: Schema, name: str, definition: Schema, *, required: bool) -> None:
    schema["properties"][name] = definition
    if required:
        schema["required"].append(name)


def edited(model: type[Event], edit: Edit) -> tuple[Schema, Schema]:
    """The model's schema as published now, and a copy with `edit` applied."""
    new = model.model_json_schema()
    edit(new)
    return model.model_json_schema(), new


@pytest.mark.parametrize(
    ("model", "edit", "expected"),
    [
        pytest.param(
            OrderCreatedV1,
            lambda s: remove_property(s, "customer_email"),
            "customer_email: property removed",
            id="property-removed",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: s["properties"].update(order_id={"type": "integer"}),
            "order_id: type changed from string to integer",
            id="retyped",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: set_property(s, "gift_wrap", {"type": "boolean"}, required=True),
            "gift_wrap: new required property",
            id="new-required-property",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: s["required"].append("causation_id"),
            "causation_id: became required",
            id="optional-became-required",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: s["properties"].update(causation_id={"type": "string", "format": "uuid"}),
            "causation_id: type changed from null|string to string",
            id="no-longer-nullable",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: s["properties"]["event_type"].update(const="order.placed"),
            'event_type: values removed: "order.created"',
            id="const-changed",
        ),
        pytest.param(
            OrderCancelledV1,
            lambda s: s["properties"]["previous_status"].update(enum=["pending"]),
            'previous_status: values removed: "confirmed"',
            id="enum-value-removed",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: s["properties"]["producer"].update(enum=["orders"]),
            'producer: values restricted to "orders"',
            id="free-text-restricted",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: s.update(additionalProperties=False),
            "(root): additionalProperties tightened to false",
            id="closed-to-unknown-fields",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: s["$defs"]["OrderLineV1"]["properties"].update(unit_price={"type": "string"}),
            "lines[].unit_price: type changed from number|string to string",
            id="nested-in-defs-retyped",
        ),
        pytest.param(
            OrderCreatedV1,
            lambda s: remove_property(s["$defs"]["ShippingAddress"], "postal_code"),
            "shipping_address.postal_code: property removed",
            id="nested-in-defs-removed",
        ),
    ],
)
def test_breaking_change_is_named_by_its_field_path(
    model: type[Event], edit: Edit, expected: str
) -> None:
    assert breaking_changes(*edited(model, edit)) == [expected]


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda s: None, id="unchanged"),
        pytest.param(
            lambda s: set_property(s, "gift_wrap", {"type": "boolean"}, required=False),
            id="new-optional-property",
        ),
        pytest.param(lambda s: s["required"].remove("order_id"), id="became-optional"),
        pytest.param(
            lambda s: s.update(description="Placed by a customer.", title="OrderPlaced"),
            id="description-and-title",
        ),
        pytest.param(
            lambda s: s["$defs"]["OrderLineV1"]["properties"]["sku"].update(examples=["SKU-1"]),
            id="examples",
        ),
        pytest.param(
            lambda s: s["$defs"]["OrderLineV1"]["properties"]["quantity"].update(type="number"),
            id="integer-widened-to-number",
        ),
        pytest.param(
            lambda s: s["properties"]["event_type"].update(enum=["order.created", "order.placed"]),
            id="value-added",
        ),
    ],
)
def test_compatible_change_passes(edit: Edit) -> None:
    assert breaking_changes(*edited(OrderCreatedV1, edit)) == []


class Category(BaseModel):
    name: str
    children: list["Category"] = []


def test_recursive_model_is_compared_once_per_path() -> None:
    old = Category.model_json_schema()
    new = Category.model_json_schema()
    remove_property(new["$defs"]["Category"], "name")
    assert breaking_changes(old, new) == ["name: property removed"]


@pytest.fixture
def committed(tmp_path: Path) -> Path:
    """A copy of the committed schema files, to edit."""
    return Path(shutil.copytree(SCHEMA_DIR, tmp_path / "schemas"))


def add_required_property(committed: Path, name: str) -> None:
    """Simulates code that stopped publishing a field the committed file promises."""
    file = committed / "order.created.v1.json"
    schema = json.loads(file.read_text())
    set_property(schema, name, {"type": "boolean"}, required=True)
    file.write_text(json.dumps(schema))


def test_the_repository_as_committed_is_compatible() -> None:
    assert check() == []


def test_check_passes_on_the_committed_files_and_with_a_version_not_yet_committed(
    committed: Path,
) -> None:
    assert check(committed) == []
    (committed / "order.created.v2.json").unlink()
    assert check(committed) == []


def test_check_fails_when_the_code_drops_a_committed_field(committed: Path) -> None:
    add_required_property(committed, "gift_wrap")
    assert check(committed) == ["order.created.v1: gift_wrap: property removed"]


def test_check_fails_when_a_committed_version_is_no_longer_published(committed: Path) -> None:
    (committed / "order.deleted.v1.json").write_text("{}")
    assert check(committed) == ["order.deleted.v1: version no longer published"]


def test_write_schemas_refuses_a_breaking_change_unless_allowed(committed: Path) -> None:
    add_required_property(committed, "gift_wrap")
    before = (committed / "order.created.v1.json").read_text()
    with pytest.raises(BreakingSchemaChange) as error:
        write_schemas(committed)
    assert error.value.problems == ["order.created.v1: gift_wrap: property removed"]
    assert (committed / "order.created.v1.json").read_text() == before

    write_schemas(committed, allow_breaking=True)
    assert drifted_files(committed) == []


def run_compatibility(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contracts.compatibility", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_fails_with_the_breaking_changes(committed: Path) -> None:
    add_required_property(committed, "gift_wrap")
    result = run_compatibility("--schemas", str(committed))
    assert result.returncode == 1
    assert "order.created.v1: gift_wrap: property removed" in result.stderr


def test_command_passes_on_the_committed_schemas() -> None:
    result = run_compatibility()
    assert result.returncode == 0, result.stderr
    assert "schemas compatible" in result.stdout
