"""Inventory against the real RabbitMQ and PostgreSQL, in-process."""

import asyncio
import uuid

import pytest

from contracts import StockRejectedV1, StockReservedV1
from inventory.config import InventorySettings
from inventory.main import MIGRATIONS, create_app
from servicekit.testing import (
    consumer_saw_duplicates,
    eventually,
    order_created_event,
    publish_event,
    service_under_test,
    tap,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def inventory(rabbitmq, databases):
    settings = InventorySettings(database_url=databases.url("inventory"), rabbitmq_url=rabbitmq.url)
    async with service_under_test(create_app, settings, MIGRATIONS, "inventory") as client:
        yield client


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


async def reservation(client, order_id):
    response = await client.get(f"/reservations/{order_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def test_stock_is_set_and_read_back(inventory) -> None:
    sku = new_sku()
    assert (await inventory.get(f"/stock/{sku}")).status_code == 404
    assert (await inventory.put(f"/stock/{sku}", json={"available": 7})).status_code == 200
    assert (await inventory.get(f"/stock/{sku}")).json() == {
        "sku": sku,
        "available": 7,
        "reserved": 0,
    }
    bad = await inventory.put(f"/stock/{sku}", json={"available": -1})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "available"]


async def test_order_within_stock_is_reserved_and_announced(inventory, rabbitmq) -> None:
    a, b = new_sku(), new_sku()
    await inventory.put(f"/stock/{a}", json={"available": 5})
    await inventory.put(f"/stock/{b}", json={"available": 1})
    order = order_created_event([(a, 2), (b, 1), (a, 1)])
    async with tap(rabbitmq.url, "stock.*.v1") as published:
        assert (await inventory.get(f"/reservations/{order.order_id}")).status_code == 404
        await publish_event(rabbitmq.url, order)
        found = await eventually(lambda: reservation(inventory, order.order_id))
        assert found["status"] == "reserved"
        assert found["lines"] == [{"sku": s, "quantity": q} for s, q in sorted([(a, 3), (b, 1)])]
        assert (await inventory.get(f"/stock/{a}")).json() == {
            "sku": a,
            "available": 2,
            "reserved": 3,
        }
        assert (await inventory.get(f"/stock/{b}")).json() == {
            "sku": b,
            "available": 0,
            "reserved": 1,
        }
        await eventually(lambda: len(published) == 1)
    message = published[0]
    event = StockReservedV1.model_validate_json(message.body)
    assert (event.order_id, event.causation_id, event.correlation_id) == (
        order.order_id,
        order.event_id,
        order.correlation_id,
    )
    assert message.message_id == str(event.event_id)
    assert message.routing_key == "stock.reserved.v1"
    assert message.delivery_mode == 2  # persistent


async def test_order_beyond_stock_reserves_nothing_and_says_why(inventory, rabbitmq) -> None:
    a, b, unknown = new_sku(), new_sku(), new_sku()
    await inventory.put(f"/stock/{a}", json={"available": 5})
    await inventory.put(f"/stock/{b}", json={"available": 1})
    order = order_created_event([(a, 2), (b, 4), (unknown, 1)])
    async with tap(rabbitmq.url, "stock.rejected.v1") as published:
        await publish_event(rabbitmq.url, order)
        found = await eventually(lambda: reservation(inventory, order.order_id))
        await eventually(lambda: len(published) == 1)
    assert found["status"] == "rejected"
    rejected = StockRejectedV1.model_validate_json(published[0].body).rejected_lines
    assert {(r.sku, r.requested, r.available, r.reason) for r in rejected} == {
        (b, 4, 1, "insufficient_stock"),
        (unknown, 1, 0, "unknown_sku"),
    }
    assert (await inventory.get(f"/stock/{a}")).json() == {"sku": a, "available": 5, "reserved": 0}


async def test_concurrent_orders_never_oversell(inventory, rabbitmq) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 5})
    orders = [order_created_event([(sku, 1)]) for _ in range(15)]
    await asyncio.gather(*(publish_event(rabbitmq.url, order) for order in orders))

    async def all_decided():
        return [await reservation(inventory, order.order_id) for order in orders]

    decided = await eventually(all_decided, timeout=30)
    assert sum(r["status"] == "reserved" for r in decided) == 5
    assert (await inventory.get(f"/stock/{sku}")).json() == {
        "sku": sku,
        "available": 0,
        "reserved": 5,
    }


async def test_a_duplicated_event_reserves_once(inventory, rabbitmq) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 10})
    order = order_created_event([(sku, 3)])
    for _ in range(3):
        await publish_event(rabbitmq.url, order)
    await eventually(lambda: reservation(inventory, order.order_id))
    stats = await eventually(lambda: consumer_saw_duplicates(inventory, 2))
    assert (stats["processed"], stats["retried"], stats["dead_lettered"]) == (1, 0, 0)
    assert (await inventory.get(f"/stock/{sku}")).json() == {
        "sku": sku,
        "available": 7,
        "reserved": 3,
    }
