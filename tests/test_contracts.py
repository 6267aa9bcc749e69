import copy
import functools
import importlib
import json
import operator
import pkgutil
from collections.abc import Iterator
from decimal import Decimal
from uuid import uuid4

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

import contracts
from contracts import (
    ALL_EVENTS,
    EVENTS_BY_ROUTING_KEY,
    REQUEST_REPLY_MESSAGES,
    Event,
    MoneyV2,
    OrderCancelledV1,
    OrderCreatedV1,
    OrderCreatedV2,
    OrderShippedV1,
    ShipmentCreatedV1,
    ShipmentDispatchedV1,
    StockRejectedV1,
    StockReservedV1,
)
from contracts.common import MAX_AMOUNT, Amount, Money, WireModel
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


# Text PostgreSQL cannot store


CONTRACT_MODELS = sorted(
    (
        model
        for module in pkgutil.iter_modules(contracts.__path__, "contracts.")
        for model in vars(importlib.import_module(module.name)).values()
        if isinstance(model, type)
        and issubclass(model, BaseModel)
        and model.__module__ == module.name
    ),
    key=lambda model: model.__name__,
)
"""Every model defined in `contracts`."""


@pytest.mark.parametrize("model", CONTRACT_MODELS, ids=lambda model: model.__name__)
def test_every_model_of_the_contracts_checks_its_text(model: type[BaseModel]) -> None:
    """A nested model too: made on its own (`CustomerV2(...)`), it checks its own text."""
    assert issubclass(model, WireModel)


def text_in(data: object, path: tuple = ()) -> Iterator[tuple]:
    """The path of each string in plain JSON data."""
    if isinstance(data, str):
        yield path
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from text_in(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from text_in(value, (*path, index))


def with_text_at(data: dict, path: tuple, text: str) -> dict:
    changed = copy.deepcopy(data)
    *parents, last = path
    functools.reduce(operator.getitem, parents, changed)[last] = text
    return changed


def events_with_text() -> list[Event]:
    """An event of each kind that carries free text besides the envelope's."""
    created = order_created()
    about = {"producer": "orders", "order_id": created.order_id}
    shipment = {"shipment_id": uuid4(), "order_id": created.order_id}
    return [
        created,
        upcast(created),
        OrderCancelledV1.caused_by(created, **about, previous_status="pending", reason="no"),
        OrderShippedV1.caused_by(created, **about, shipment_id=uuid4(), tracking_number="T1"),
        StockRejectedV1.caused_by(
            created,
            **{**about, "producer": "inventory"},
            rejected_lines=[
                {"sku": "SKU-1", "requested": 2, "available": 0, "reason": "unknown_sku"}
            ],
        ),
        ShipmentCreatedV1.caused_by(
            created,
            producer="shipping",
            **shipment,
            shipping_address=created.shipping_address,
        ),
        ShipmentDispatchedV1.caused_by(
            created, producer="shipping", **shipment, tracking_number="T1"
        ),
    ]


UNSTORABLE = {
    "NUL": ("A\x00B", "Value error, text must not contain NUL (U+0000)"),
    "lone surrogate": ("A\ud800B", "Value error, text must not contain a lone surrogate (U+D800)"),
}
"""Text PostgreSQL cannot store, and the error it is."""


@pytest.mark.parametrize(("text", "error"), UNSTORABLE.values(), ids=UNSTORABLE)
@pytest.mark.parametrize("event", events_with_text(), ids=lambda event: event.routing_key())
def test_text_the_database_cannot_store_anywhere_in_an_event_violates_its_contract(
    event: Event, text: str, error: str
) -> None:
    """Then the consumer dead-letters the event at once, naming the field."""
    wire = event.model_dump(mode="json")
    for path in text_in(wire):
        with pytest.raises(ValidationError) as refused:
            type(event).model_validate(with_text_at(wire, path, text))  # as the consumer does
        assert [(e["loc"], e["msg"]) for e in refused.value.errors()] == [(path, error)]


def test_unstorable_text_is_refused_even_where_the_event_ignores_it() -> None:
    """Ignored fields and keys included: no error can then show the text as it came."""
    wire = {**order_created().model_dump(mode="json"), "gift_note": "A\ud800B", "A\x00": 1}

    with pytest.raises(ValidationError) as error:
        OrderCreatedV1.model_validate(wire)

    assert [(e["loc"], e["input"]) for e in error.value.errors()] == [
        (("gift_note",), "A\\ud800B"),
        ((), "A\x00"),
    ]


@pytest.mark.parametrize("amount", ["1E+5", "-0", "+5", " 5", "5\n", "5.", ".5", "1_000", "\u0663"])
def test_an_amount_is_written_as_the_schema_says_or_refused(amount: str) -> None:
    """Each is a Decimal to Python; none is what the schema's pattern lets a reader expect."""
    with pytest.raises(ValidationError, match="up to 10 digits and 2 after a point"):
        MoneyV2(amount=amount, currency="EUR")


def test_the_largest_amount_is_the_largest_money() -> None:
    for money in (Money, Amount):
        assert TypeAdapter(money).validate_python(str(MAX_AMOUNT)) == MAX_AMOUNT
        with pytest.raises(ValidationError):
            TypeAdapter(money).validate_python(str(MAX_AMOUNT + Decimal("0.01")))
