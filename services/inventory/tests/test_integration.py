"""Inventory against the real RabbitMQ and PostgreSQL, in-process."""

import asyncio
import uuid

import pytest
from faststream.rabbit import RabbitBroker

from contracts import (
    AVAILABILITY_QUEUE,
    AvailabilityQueryV1,
    AvailabilityV1,
    Event,
    OrderCancelledV1,
    OrderCreatedV2,
    OrderShippedV1,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from inventory.config import InventorySettings
from inventory.main import MIGRATIONS, create_app
from servicekit.rpc import ask
from testkit.broker import about_order, publish_event, tap
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import consumer_saw_duplicates, handled, published_about
from testkit.services import service_under_test

pytestmark = pytest.mark.integration


@pytest.fixture
async def inventory(rabbitmq, databases):
    settings = InventorySettings(
        database_url=databases.url("inventory"),
        rabbitmq_url=rabbitmq.url,
        # Queue arguments: every app of this module declares the same ones.
        retry_delays=(0.2,),
        max_attempts=50,
    )
    async with service_under_test(create_app, settings, MIGRATIONS, "inventory") as client:
        yield client


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


def order_cancelled(order: Event, previous_status: str = "confirmed") -> OrderCancelledV1:
    return OrderCancelledV1.caused_by(
        order,
        producer="orders",
        order_id=order.order_id,
        previous_status=previous_status,
        reason="changed my mind",
    )


def order_shipped(order: Event) -> OrderShippedV1:
    return OrderShippedV1.caused_by(
        order,
        producer="orders",
        order_id=order.order_id,
        shipment_id=uuid.uuid4(),
        tracking_number="OF0123456789AB",
    )


async def reservation(client, order_id):
    response = await client.get(f"/reservations/{order_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def reservation_is(client, order_id, status: str) -> dict | None:
    found = await reservation(client, order_id)
    return found if found["status"] == status else None


async def stock(client, sku) -> dict:
    return (await client.get(f"/stock/{sku}")).json()


async def consumer_retried(client) -> dict | None:
    stats = (await client.get("/health/ready")).json()["messages"]
    return stats if stats["retried"] >= 1 else None


async def reserved_order(client, rabbitmq, sku: str, quantity: int) -> OrderCreatedV2:
    order = order_created([(sku, quantity)])
    await publish_event(rabbitmq.url, order)
    await eventually(lambda: reservation_is(client, order.order_id, "reserved"))
    return order


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


@pytest.mark.parametrize("available", [False, True, "5", 5.0], ids=repr)
async def test_a_stock_level_is_a_whole_number_never_a_boolean_or_a_string(
    inventory, available
) -> None:
    sku = new_sku()

    refused = await inventory.put(f"/stock/{sku}", json={"available": available})

    assert refused.status_code == 422
    assert [e["loc"] for e in refused.json()["detail"]] == [["body", "available"]]
    assert (await inventory.get(f"/stock/{sku}")).status_code == 404


@pytest.mark.parametrize("version", [1, 2], ids=["order.created.v1", "order.created.v2"])
async def test_order_within_stock_is_reserved_and_announced(inventory, rabbitmq, version) -> None:
    a, b = new_sku(), new_sku()
    await inventory.put(f"/stock/{a}", json={"available": 5})
    await inventory.put(f"/stock/{b}", json={"available": 1})
    order = order_created([(a, 2), (b, 1), (a, 1)], version=version)
    assert order.routing_key() == f"order.created.v{version}"
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
    order = order_created([(a, 2), (b, 4), (unknown, 1)])
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
    orders = [order_created([(sku, 1)]) for _ in range(15)]
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
    order = order_created([(sku, 3)])
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


async def test_cancelling_a_reserved_order_releases_its_stock(
    inventory, rabbitmq, databases
) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 5})
    order = await reserved_order(inventory, rabbitmq, sku, 3)
    cancelled = order_cancelled(order)
    async with tap(rabbitmq.url, "stock.released.v1") as published:
        await publish_event(rabbitmq.url, cancelled)
        await eventually(lambda: reservation_is(inventory, order.order_id, "released"))
        [message] = await eventually(lambda: about_order(published, order.order_id))
    assert await stock(inventory, sku) == {"sku": sku, "available": 5, "reserved": 0}
    released = StockReleasedV1.model_validate_json(message.body)
    assert [(line.sku, line.quantity) for line in released.lines] == [(sku, 3)]
    assert (released.causation_id, released.correlation_id, released.producer) == (
        cancelled.event_id,
        order.correlation_id,
        "inventory",
    )
    assert await published_about(databases.url("inventory"), order.order_id) == [
        "stock.reserved.v1",
        "stock.released.v1",
    ]


async def test_cancelling_a_rejected_order_releases_nothing(inventory, rabbitmq, databases) -> None:
    sku, other = new_sku(), new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 1})
    await inventory.put(f"/stock/{other}", json={"available": 4})
    order = order_created([(sku, 2), (other, 1)])
    await publish_event(rabbitmq.url, order)
    await eventually(lambda: reservation_is(inventory, order.order_id, "rejected"))
    cancelled = order_cancelled(order, previous_status="pending")
    await publish_event(rabbitmq.url, cancelled)
    await eventually(lambda: handled(databases.url("inventory"), cancelled))
    assert (await reservation(inventory, order.order_id))["status"] == "rejected"
    assert await stock(inventory, sku) == {"sku": sku, "available": 1, "reserved": 0}
    assert await stock(inventory, other) == {"sku": other, "available": 4, "reserved": 0}
    assert await published_about(databases.url("inventory"), order.order_id) == [
        "stock.rejected.v1"
    ]


async def test_a_cancellation_before_its_order_is_retried_and_releases_once_the_order_arrives(
    inventory, rabbitmq, databases
) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 5})
    order = order_created([(sku, 2)])
    cancelled = order_cancelled(order, previous_status="pending")
    async with tap(rabbitmq.url, "stock.released.v1") as published:
        await publish_event(rabbitmq.url, cancelled)
        await eventually(lambda: consumer_retried(inventory))  # OutOfOrder: no reservation yet
        assert not await handled(databases.url("inventory"), cancelled)
        await publish_event(rabbitmq.url, order)
        await eventually(lambda: reservation_is(inventory, order.order_id, "released"))
        await eventually(lambda: about_order(published, order.order_id))
    assert await stock(inventory, sku) == {"sku": sku, "available": 5, "reserved": 0}
    assert await published_about(databases.url("inventory"), order.order_id) == [
        "stock.reserved.v1",
        "stock.released.v1",
    ]
    stats = (await inventory.get("/health/ready")).json()["messages"]
    assert stats["dead_lettered"] == 0


async def test_a_shipped_order_fulfils_its_reservation(inventory, rabbitmq, databases) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 5})
    order = await reserved_order(inventory, rabbitmq, sku, 2)
    assert await stock(inventory, sku) == {"sku": sku, "available": 3, "reserved": 2}
    await publish_event(rabbitmq.url, order_shipped(order))
    await eventually(lambda: reservation_is(inventory, order.order_id, "fulfilled"))
    assert await stock(inventory, sku) == {"sku": sku, "available": 3, "reserved": 0}
    assert await published_about(databases.url("inventory"), order.order_id) == [
        "stock.reserved.v1"
    ]


async def test_a_fulfilled_reservation_is_not_released_by_a_late_cancellation(
    inventory, rabbitmq, databases
) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 5})
    order = await reserved_order(inventory, rabbitmq, sku, 2)
    await publish_event(rabbitmq.url, order_shipped(order))
    await eventually(lambda: reservation_is(inventory, order.order_id, "fulfilled"))
    cancelled = order_cancelled(order)
    await publish_event(rabbitmq.url, cancelled)
    await eventually(lambda: handled(databases.url("inventory"), cancelled))
    assert (await reservation(inventory, order.order_id))["status"] == "fulfilled"
    assert await stock(inventory, sku) == {"sku": sku, "available": 3, "reserved": 0}
    assert await published_about(databases.url("inventory"), order.order_id) == [
        "stock.reserved.v1"
    ]


async def ask_availability(rabbitmq, sku: str) -> AvailabilityV1:
    """Ask as another service would: its own connection, RabbitMQ request-reply."""
    broker = RabbitBroker(rabbitmq.url)
    await broker.connect()
    try:
        return await ask(
            broker, AVAILABILITY_QUEUE, AvailabilityQueryV1(sku=sku), AvailabilityV1, timeout=5
        )
    finally:
        await broker.stop()


async def test_availability_is_answered_over_request_reply(inventory, rabbitmq) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 5})
    await reserved_order(inventory, rabbitmq, sku, 2)
    stocked, unknown = await asyncio.gather(
        ask_availability(rabbitmq, sku), ask_availability(rabbitmq, new_sku())
    )
    assert stocked == AvailabilityV1(sku=sku, stocked=True, available=3, reserved=2)
    assert (unknown.stocked, unknown.available, unknown.reserved) == (False, 0, 0)


async def test_the_audit_reads_the_reservation_statuses_of_many_orders_at_once(
    inventory, rabbitmq
) -> None:
    sku = new_sku()
    await inventory.put(f"/stock/{sku}", json={"available": 1})
    reserved = await reserved_order(inventory, rabbitmq, sku, 1)
    rejected = order_created([(sku, 5)])
    await publish_event(rabbitmq.url, rejected)
    await eventually(lambda: reservation_is(inventory, rejected.order_id, "rejected"))
    unknown = uuid.uuid4()
    asked = [str(order_id) for order_id in (reserved.order_id, rejected.order_id, unknown)]

    response = await inventory.post("/audit/orders", json={"order_ids": asked})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "reservations": {asked[0]: ["reserved"], asked[1]: ["rejected"], asked[2]: []}
    }
