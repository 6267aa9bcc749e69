"""Shipping against the real RabbitMQ and PostgreSQL, in-process."""

import pytest

from contracts import ShipmentCreatedV1
from servicekit.testing import (
    consumer_saw_duplicates,
    eventually,
    order_created_event,
    publish_event,
    service_under_test,
    tap,
)
from shipping.config import ShippingSettings
from shipping.main import MIGRATIONS, create_app

pytestmark = pytest.mark.integration


@pytest.fixture
async def shipping(rabbitmq, databases):
    settings = ShippingSettings(database_url=databases.url("shipping"), rabbitmq_url=rabbitmq.url)
    async with service_under_test(create_app, settings, MIGRATIONS, "shipping") as client:
        yield client


async def shipments(client, order_id) -> list[dict]:
    response = await client.get("/shipments", params={"order_id": str(order_id)})
    assert response.status_code == 200
    return response.json()


async def test_an_order_gets_one_shipment_to_its_address(shipping, rabbitmq) -> None:
    order = order_created_event([("SKU-1", 2)])
    async with tap(rabbitmq.url, "shipment.created.v1") as published:
        for _ in range(2):  # the second copy is a redelivery: no second shipment
            await publish_event(rabbitmq.url, order)
        [shipment] = await eventually(lambda: shipments(shipping, order.order_id))
        stats = await eventually(lambda: consumer_saw_duplicates(shipping, 1))
        assert (stats["processed"], stats["retried"], stats["dead_lettered"]) == (1, 0, 0)
        await eventually(lambda: len(published) == 1)
    assert shipment["status"] == "preparing"
    assert shipment["shipping_address"] == order.shipping_address.model_dump()
    assert len(await shipments(shipping, order.order_id)) == 1
    event = ShipmentCreatedV1.model_validate_json(published[0].body)
    assert (str(event.shipment_id), event.order_id, event.causation_id) == (
        shipment["shipment_id"],
        order.order_id,
        order.event_id,
    )
