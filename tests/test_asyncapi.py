"""Each service's AsyncAPI document: committed and current, complete, and served at /asyncapi."""

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from asyncapi_documents import committed_path, render_service
from contracts import (
    AVAILABILITY_QUEUE,
    AvailabilityQueryV1,
    AvailabilityV1,
    OrderCreatedV1,
    OrderCreatedV2,
)
from inventory.config import InventorySettings
from inventory.main import MIGRATIONS
from inventory.main import create_app as create_inventory
from servicekit.asyncapi import asyncapi_document, render
from servicekit.consumer import accepted_events
from servicekit.registry import SERVICES, ServiceEntry, service
from servicekit.topology import EVENTS_EXCHANGE
from testkit.services import service_under_test


def create_app(entry: ServiceEntry) -> FastAPI:
    return importlib.import_module(f"{entry.package}.main").create_app()


def contract_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The contract's JSON schema as the document holds it: nested models are components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


def deref(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or what its `$ref` points to (following references in turn)."""
    while "$ref" in node:
        ref, node = node["$ref"], document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
    return node


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` in `node`."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolves(document: dict[str, Any], ref: str) -> bool:
    """Whether `ref` points at something in `document`."""
    try:
        deref(document, {"$ref": ref})
    except KeyError:
        return False
    return True


def payloads(document: dict[str, Any], channel: str) -> dict[str, dict[str, Any]]:
    """Message name -> payload schema, for every message the channel carries."""
    return {
        name: deref(document, deref(document, message)["payload"])
        for name, message in document["channels"][channel]["messages"].items()
    }


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_committed_document_is_current(entry: ServiceEntry) -> None:
    path = committed_path(entry)
    assert path.is_file(), f"{path} is missing: run `make asyncapi`"
    assert path.read_text() == render_service(entry), f"{path} is stale: run `make asyncapi`"


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_document_lists_what_the_service_consumes_and_publishes(entry: ServiceEntry) -> None:
    app = create_app(entry)
    spec, document = app.state.spec, asyncapi_document(app)
    accepted = {key: contract_schema(cls) for key, cls in accepted_events(spec.handlers).items()}
    for queue in app.state.runtime.topology.consuming_queues:
        assert document["channels"][queue.name]["address"] == queue.name
        assert document["operations"][queue.name]["action"] == "receive"
        assert payloads(document, queue.name) == accepted
    for event in spec.publishes:
        operation = document["operations"][event.routing_key()]
        assert operation["action"] == "send"
        assert deref(document, operation["channel"])["address"] == event.routing_key()
        assert payloads(document, event.routing_key()) == {"Message": contract_schema(event)}


@pytest.mark.parametrize("entry", SERVICES, ids=lambda entry: entry.name)
def test_every_reference_resolves(entry: ServiceEntry) -> None:
    document = asyncapi_document(create_app(entry))
    references = set(refs(document))
    assert references, "the document refers to no message or schema"
    assert [ref for ref in sorted(references) if not resolves(document, ref)] == []


def test_orders_publishes_order_created_v2_on_the_events_exchange() -> None:
    document = asyncapi_document(create_app(service("orders")))
    operation = document["operations"]["order.created.v2"]
    channel = deref(document, operation["channel"])
    assert operation["action"] == "send"
    assert operation["bindings"]["amqp"]["deliveryMode"] == 2  # persistent, as the relay sends
    assert channel["address"] == OrderCreatedV2.routing_key()
    assert channel["bindings"]["amqp"]["exchange"] == {
        "name": EVENTS_EXCHANGE.name,
        "type": EVENTS_EXCHANGE.type.value,
        "durable": EVENTS_EXCHANGE.durable,
        "autoDelete": EVENTS_EXCHANGE.auto_delete,
        "vhost": "/",
    }
    payload = deref(document, deref(document, operation["messages"][0])["payload"])
    assert set(payload["properties"]) == set(OrderCreatedV2.model_fields)
    assert payload == contract_schema(OrderCreatedV2)
    customer = OrderCreatedV2.model_fields["customer"].annotation
    assert deref(document, payload["properties"]["customer"]) == contract_schema(customer)


def test_inventory_accepts_every_version_of_order_created() -> None:
    accepted = payloads(asyncapi_document(create_inventory()), "inventory.work")
    for version in (OrderCreatedV1, OrderCreatedV2):
        assert accepted[version.routing_key()] == contract_schema(version)


def test_inventory_documents_its_availability_query_and_reply() -> None:
    document = asyncapi_document(create_inventory())
    channel = next(
        k for k, c in document["channels"].items() if c.get("address") == AVAILABILITY_QUEUE
    )
    operation = document["operations"][channel]
    assert operation["action"] == "receive"
    assert payloads(document, channel) == {
        "AvailabilityQueryV1": contract_schema(AvailabilityQueryV1)
    }
    reply = operation["reply"]
    assert reply["address"] == {"location": "$message.header#/reply_to"}
    reply_payload = deref(document, deref(document, reply["messages"][0])["payload"])
    assert reply_payload == contract_schema(AvailabilityV1)


def test_document_holds_no_credentials_nor_deployment_values() -> None:
    settings = InventorySettings(
        rabbitmq_url="amqp://ops:s3cret@rabbit.internal:5673/staging",
        database_url="postgresql://ops:pg-s3cret@db.internal/inventory",
    )
    text = render(create_inventory(settings))
    for value in ("s3cret", "rabbit.internal", "5673", "staging", "db.internal"):
        assert value not in text
    assert text == render_service(service("inventory"))


@pytest.mark.integration
async def test_a_running_service_serves_its_document(rabbitmq, databases) -> None:
    settings = InventorySettings(database_url=databases.url("inventory"), rabbitmq_url=rabbitmq.url)
    async with service_under_test(create_inventory, settings, MIGRATIONS, "inventory") as client:
        response = await client.get("/asyncapi")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == render_service(service("inventory"))
