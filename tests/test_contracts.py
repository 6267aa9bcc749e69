import json
from decimal import Decimal
from uuid import uuid4

import pytest
from pydantic import ValidationError

from contracts import (
    ALL_EVENTS,
    EVENTS_BY_ROUTING_KEY,
    REQUEST_REPLY_MESSAGES,
    OrderCreatedV1,
    OrderCreatedV2,
    StockReservedV1,
)
from contracts.schema_files import drifted_files, write_schemas
from contracts.schemas import SCHEMA_DIR
from contracts.versions import as_version, readable_as, upcast


def order_created(**overrides: object) -> OrderCreatedV1:
    fields: dict = {
        "order_id": uuid4(),
        "customer_email": "ada@example.com",
        "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": "9.90"}],
        "total": "19.80",
        "currency": "EUR",
        "shipping_address": {
            "name": "Ada",
            "line1": "1 Main St",
            "city": "Paris",
            "postal_code": "75001",
            "country": "FR",
        },
        "correlation_id": uuid4(),
        "producer": "orders",
    }
    return OrderCreatedV1(**{**fields, **overrides})


def test_routing_keys_name_aggregate_event_and_version() -> None:
    assert OrderCreatedV1.routing_key() == "order.created.v1"
    assert set(EVENTS_BY_ROUTING_KEY) == {
        "order.created.v1",
        "order.created.v2",
        "order.confirmed.v1",
        "order.rejected.v1",
        "order.cancelled.v1",
        "order.shipped.v1",
        "stock.reserved.v1",
        "stock.rejected.v1",
        "stock.released.v1",
        "shipment.created.v1",
        "shipment.dispatched.v1",
        "shipment.cancelled.v1",
        "order_confirmation.sent.v1",
    }


def test_event_survives_the_wire_with_exact_money() -> None:
    event = order_created()
    wire = event.model_dump_json()
    assert json.loads(wire)["lines"][0]["unit_price"] == "9.90"
    decoded = OrderCreatedV1.model_validate_json(wire)
    assert decoded == event
    assert decoded.total == Decimal("19.80")


def test_follow_up_event_continues_the_flow() -> None:
    cause = order_created()
    follow_up = StockReservedV1.caused_by(
        cause,
        producer="inventory",
        order_id=cause.order_id,
        lines=[{"sku": "SKU-1", "quantity": 2}],
    )
    assert follow_up.correlation_id == cause.correlation_id
    assert follow_up.causation_id == cause.event_id
    assert follow_up.event_id != cause.event_id


def test_unknown_fields_are_ignored_so_producers_can_add_optional_ones() -> None:
    data = json.loads(order_created().model_dump_json())
    data["gift_wrap"] = True
    decoded = OrderCreatedV1.model_validate(data)
    assert str(decoded.order_id) == data["order_id"]
    assert "gift_wrap" not in decoded.model_dump()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"lines": []}, "lines"),
        ({"currency": "euro"}, "currency"),
        ({"customer_email": "not-an-email"}, "customer_email"),
        ({"event_type": "order.shipped"}, "event_type"),
    ],
)
def test_contract_violations_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        order_created(**change)
    assert field in {str(e["loc"][0]) for e in error.value.errors()}


def test_committed_json_schemas_match_the_classes() -> None:
    assert drifted_files() == [], "run `make schemas` and commit contracts/schemas/"
    assert {p.name for p in SCHEMA_DIR.glob("*.json")} == {
        *(f"{cls.routing_key()}.json" for cls in ALL_EVENTS),
        *(f"{name}.json" for name in REQUEST_REPLY_MESSAGES),
    }


def test_drift_check_notices_a_changed_schema_file(tmp_path) -> None:
    write_schemas(tmp_path)
    assert drifted_files(tmp_path) == []
    target = tmp_path / "order.created.v1.json"
    target.write_text(target.read_text().replace('"customer_email"', '"email"'))
    (tmp_path / "order.deleted.v1.json").write_text("{}")
    assert drifted_files(tmp_path) == ["order.created.v1.json", "order.deleted.v1.json"]


def order_created_v2(**overrides: object) -> OrderCreatedV2:
    return upcast(order_created(**overrides))


def test_v1_upcasts_to_v2_keeping_the_event_and_filling_what_v1_never_said() -> None:
    old = order_created()
    new = upcast(old)
    assert isinstance(new, OrderCreatedV2)
    assert (new.event_id, new.correlation_id, new.occurred_at) == (
        old.event_id,
        old.correlation_id,
        old.occurred_at,
    )
    assert new.customer.model_dump() == {"name": "Ada", "email": "ada@example.com"}
    [line] = new.lines
    assert (line.name, line.quantity) == ("SKU-1", 2)
    assert line.unit_price.model_dump(mode="json") == {"amount": "9.90", "currency": "EUR"}
    assert new.total.amount == Decimal("19.80")


def test_v2_written_as_v1_for_older_consumers_round_trips() -> None:
    new = order_created_v2()
    old = as_version(new, 1)
    assert isinstance(old, OrderCreatedV1) and old.event_id == new.event_id
    assert upcast(old) == new
    assert as_version(new, 2) is new
    with pytest.raises(ValueError, match="cannot be written as version 3"):
        as_version(new, 3)


def test_a_consumer_of_v2_reads_every_version_still_on_the_wire() -> None:
    assert readable_as(OrderCreatedV2) == (OrderCreatedV2, OrderCreatedV1)
    assert readable_as(StockReservedV1) == (StockReservedV1,)


def test_v2_money_is_a_decimal_string_in_one_currency() -> None:
    wire = json.loads(order_created_v2().model_dump_json())
    assert wire["lines"][0]["unit_price"] == {"amount": "9.90", "currency": "EUR"}
    with pytest.raises(ValidationError, match="decimal string"):
        OrderCreatedV2.model_validate({**wire, "total": {"amount": 19.8, "currency": "EUR"}})
    wire["lines"][0]["unit_price"]["currency"] = "USD"
    with pytest.raises(ValidationError, match="one currency"):
        OrderCreatedV2.model_validate(wire)
