"""Each consumer reads only fields the producer's committed schema promises to send.

By convention each service's `<package>.entrypoints.amqp` declares
`FIELDS_READ: Mapping[type[Event], tuple[str, ...]]`: per event it handles, the field paths
its handlers read (see `contracts.consumer_contracts`).
"""

import importlib
import json
from collections.abc import Mapping
from types import ModuleType

import pytest
from _pytest.mark import ParameterSet

from contracts import Event
from contracts.compatibility import Schema
from contracts.consumer_contracts import missing_fields
from contracts.schemas import SCHEMA_DIR

CONSUMERS = ("orders", "email_service", "inventory", "shipping")


def amqp_entrypoint(package: str) -> ModuleType:
    return importlib.import_module(f"{package}.entrypoints.amqp")


def fields_read(package: str) -> Mapping[type[Event], tuple[str, ...]] | None:
    return getattr(amqp_entrypoint(package), "FIELDS_READ", None)


def handled_events(package: str) -> set[type[Event]]:
    """The events the service's consumer handles, as its app is built (nothing connects)."""
    app = importlib.import_module(f"{package}.main").create_app()
    return set(app.state.runtime.consumer.handled_events)


def committed_schema(routing_key: str) -> Schema:
    path = SCHEMA_DIR / f"{routing_key}.json"
    assert path.exists(), f"{routing_key} has no committed schema: run `make schemas`"
    return json.loads(path.read_text())


def declared_reads() -> list[ParameterSet]:
    """One case per consumer and event it reads; a failing one for a consumer without any."""
    cases = []
    for package in CONSUMERS:
        declared = fields_read(package)
        if declared is None:
            cases.append(pytest.param(package, None, (), id=f"{package}-undeclared"))
            continue
        cases += [
            pytest.param(package, event, paths, id=f"{package}-{event.routing_key()}")
            for event, paths in declared.items()
        ]
    return cases


@pytest.mark.parametrize(("consumer", "event", "paths"), declared_reads())
def test_consumer_reads_only_what_the_committed_schema_provides(
    consumer: str, event: type[Event] | None, paths: tuple[str, ...]
) -> None:
    assert event is not None, f"{consumer} declares no FIELDS_READ"
    problems = missing_fields(committed_schema(event.routing_key()), paths)
    assert problems == [], (
        f"{consumer} reads fields of {event.routing_key()} its committed schema does not "
        f"promise: {problems}"
    )


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_consumer_declares_fields_read_for_exactly_the_events_it_handles(consumer: str) -> None:
    declared = fields_read(consumer)
    assert declared is not None, f"{consumer} declares no FIELDS_READ"
    handled = handled_events(consumer)
    assert set(declared) == handled, (
        f"{consumer}: FIELDS_READ covers {sorted(e.routing_key() for e in declared)}, "
        f"its handlers consume {sorted(e.routing_key() for e in handled)}"
    )


@pytest.fixture
def order_created_v2() -> Schema:
    return committed_schema("order.created.v2")


def test_paths_through_refs_and_arrays_are_provided(order_created_v2: Schema) -> None:
    paths = ["order_id", "customer.email", "lines[].name", "lines[].unit_price.amount"]
    assert missing_fields(order_created_v2, paths) == []
    rejected = committed_schema("order.rejected.v1")
    assert missing_fields(rejected, ["short_items[].reason", "short_items[].sku"]) == []


def test_a_field_removed_from_a_def_is_reported(order_created_v2: Schema) -> None:
    line = order_created_v2["$defs"]["OrderLineV2"]
    del line["properties"]["name"]
    line["required"].remove("name")
    assert missing_fields(order_created_v2, ["lines[].sku", "lines[].name"]) == [
        "lines[].name: `lines[].name` is not in the schema"
    ]


def test_a_renamed_field_is_reported_at_its_step(order_created_v2: Schema) -> None:
    customer = order_created_v2["$defs"]["CustomerV2"]
    customer["properties"]["email_address"] = customer["properties"].pop("email")
    assert missing_fields(order_created_v2, ["customer.email", "customer.name"]) == [
        "customer.email: `customer.email` is not in the schema"
    ]
    assert missing_fields(order_created_v2, ["buyer.email"]) == [
        "buyer.email: `buyer` is not in the schema"
    ]


def test_items_of_a_field_that_is_no_array_are_reported(order_created_v2: Schema) -> None:
    assert missing_fields(order_created_v2, ["total[].amount"]) == [
        "total[].amount: `total` is not an array"
    ]


def test_an_optional_field_is_reported_unless_the_consumer_tolerates_absence(
    order_created_v2: Schema,
) -> None:
    assert missing_fields(order_created_v2, ["causation_id"]) == [
        "causation_id: `causation_id` is optional, so the consumer may get nothing"
        " (end the path with `?` if it copes)"
    ]
    assert missing_fields(order_created_v2, ["causation_id?"]) == []


def test_an_optional_parent_makes_the_path_optional(order_created_v2: Schema) -> None:
    order_created_v2["required"].remove("customer")
    assert missing_fields(order_created_v2, ["customer.email"]) == [
        "customer.email: `customer` is optional, so the consumer may get nothing"
        " (end the path with `?` if it copes)"
    ]
    assert missing_fields(order_created_v2, ["customer.email?"]) == []


def test_any_of_branches_are_followed(order_created_v2: Schema) -> None:
    customer = order_created_v2["properties"]["customer"]
    order_created_v2["properties"]["customer"] = {"anyOf": [customer, {"type": "null"}]}
    assert missing_fields(order_created_v2, ["customer.email", "customer.phone"]) == [
        "customer.phone: `customer.phone` is not in the schema"
    ]


def test_a_field_only_some_branches_have_may_be_absent(order_created_v2: Schema) -> None:
    customer = order_created_v2["properties"]["customer"]
    company = {"type": "object", "properties": {"vat_id": {"type": "string"}}}
    order_created_v2["properties"]["customer"] = {"anyOf": [customer, company]}
    assert missing_fields(order_created_v2, ["customer.email", "customer.vat_id?"]) == [
        "customer.email: `customer.email` is optional, so the consumer may get nothing"
        " (end the path with `?` if it copes)"
    ]
