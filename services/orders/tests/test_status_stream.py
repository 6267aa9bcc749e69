"""An order's status, live: the use case against a hub and a stand-in pool (a change that
commits while the status is read is neither missed nor repeated), then the routes in-process
on the real RabbitMQ and PostgreSQL (GET /orders/{order_id}/events, GET /orders)."""

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime

import pytest

from contracts import (
    OrderConfirmedV1,
    OrderShippedV1,
    ShipmentDispatchedV1,
    StockReservedV1,
)
from contracts.versions import as_version
from orders import handlers
from orders.config import OrdersSettings
from orders.domain.order import OrderStatus
from orders.main import MIGRATIONS, create_app
from servicekit import cli
from servicekit.live import LiveHub
from testkit.broker import publish_event
from testkit.events import SHIPPING_ADDRESS, order_created
from testkit.polling import eventually
from testkit.services import running_service


class ReadingPool:
    """Stands in for the pool: the order reads as `status`, and `meanwhile` is delivered to
    the hub as the row is read, as if committed and published during the read."""

    def __init__(self, hub: LiveHub, status: OrderStatus | None, *meanwhile) -> None:
        self.hub, self.status, self.meanwhile = hub, status, meanwhile

    @contextlib.asynccontextmanager
    async def acquire(self):
        yield self

    async def fetchrow(self, query: str, order_id: uuid.UUID):
        for event in self.meanwhile:
            self.hub.deliver(event)
        if self.status is None:
            return None
        return {"status": self.status.value, "updated_at": datetime.now(UTC)}


def announced(event_class, order_id: uuid.UUID, **fields):
    return event_class(order_id=order_id, correlation_id=uuid.uuid4(), producer="orders", **fields)


def shipped(order_id: uuid.UUID) -> OrderShippedV1:
    return announced(OrderShippedV1, order_id, shipment_id=uuid.uuid4(), tracking_number="T1")


async def statuses(stream, count: int) -> list[str]:
    return [(await asyncio.wait_for(anext(stream), timeout=5)).status for _ in range(count)]


async def test_a_change_committed_while_the_status_is_read_is_streamed_after_it() -> None:
    hub, order = LiveHub(), uuid.uuid4()
    pool = ReadingPool(hub, OrderStatus.PENDING, announced(OrderConfirmedV1, order))
    async with handlers.follow_status(pool, hub, order) as stream:
        assert await statuses(stream, 2) == ["pending", "confirmed"]


async def test_a_change_already_read_is_not_streamed_again() -> None:
    hub, order = LiveHub(), uuid.uuid4()
    created = order_created().model_copy(update={"order_id": order})
    pool = ReadingPool(
        hub,
        OrderStatus.CONFIRMED,
        created,
        as_version(created, 1),
        announced(OrderConfirmedV1, order),
    )
    async with handlers.follow_status(pool, hub, order) as stream:
        assert await statuses(stream, 1) == ["confirmed"]
        hub.deliver(shipped(order))
        assert await statuses(stream, 1) == ["shipped"]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
    assert hub.listeners == 0


async def test_a_final_status_ends_the_stream_at_once() -> None:
    hub, order = LiveHub(), uuid.uuid4()
    async with handlers.follow_status(ReadingPool(hub, OrderStatus.REJECTED), hub, order) as s:
        assert [change.status async for change in s] == ["rejected"]


async def test_an_unknown_order_is_refused_before_anything_is_streamed() -> None:
    hub = LiveHub()
    with pytest.raises(handlers.OrderNotFound):
        async with handlers.follow_status(ReadingPool(hub, None), hub, uuid.uuid4()):
            pass
    assert hub.listeners == 0


async def test_a_stream_that_falls_behind_ends() -> None:
    hub, order = LiveHub(backlog=1), uuid.uuid4()
    async with handlers.follow_status(ReadingPool(hub, OrderStatus.PENDING), hub, order) as s:
        assert await statuses(s, 1) == ["pending"]
        for _ in range(2):
            hub.deliver(announced(OrderConfirmedV1, order))
        assert [change async for change in s] == []


# The routes, in-process


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event, data) of each event in an event stream, comments left out."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line[:1] != ":")
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.fixture
async def orders_app(rabbitmq, databases):
    settings = OrdersSettings(database_url=databases.url("orders"), rabbitmq_url=rabbitmq.url)
    await cli.prepare_database(settings, MIGRATIONS)
    app = create_app(settings)
    async with running_service(app, "orders") as client:
        yield client, app.state.live


ORDER = {
    "customer_email": "ada@example.com",
    "customer_name": "Ada",
    "items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "9.90"}],
    "shipping_address": SHIPPING_ADDRESS,
}


async def place(client) -> str:
    response = await client.post("/orders", json=ORDER)
    assert response.status_code == 202, response.text
    return response.json()["order_id"]


@pytest.mark.integration
async def test_the_stream_follows_an_order_from_its_status_now_to_its_final_one(
    orders_app, rabbitmq
) -> None:
    client, hub = orders_app
    order_id = await place(client)
    streaming = asyncio.create_task(client.get(f"/orders/{order_id}/events", timeout=30))
    await eventually(lambda: hub.listeners == 1, timeout=10)
    reported = {"correlation_id": uuid.uuid4(), "order_id": uuid.UUID(order_id)}
    for event in (
        StockReservedV1(**reported, producer="inventory", lines=[{"sku": "SKU-1", "quantity": 2}]),
        ShipmentDispatchedV1(
            **reported,
            producer="shipping",
            shipment_id=uuid.uuid4(),
            tracking_number="OF0000000000SS",
        ),
    ):
        await publish_event(rabbitmq.url, event)
    response = await asyncio.wait_for(streaming, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [(name, data["status"]) for name, data in events] == [
        ("status", "pending"),
        ("status", "confirmed"),
        ("status", "shipped"),
    ]
    assert [data["event_type"] for _, data in events] == [
        "order.created",
        "order.confirmed",
        "order.shipped",
    ]
    assert {(data["order_id"], data["producer"]) for _, data in events} == {(order_id, "orders")}
    assert [data["at"] for _, data in events] == sorted(data["at"] for _, data in events)
    assert hub.listeners == 0


@pytest.mark.integration
async def test_the_stream_of_a_cancelled_order_ends_at_once_and_an_unknown_one_is_404(
    orders_app,
) -> None:
    client, _ = orders_app
    order_id = await place(client)
    assert (await client.post(f"/orders/{order_id}/cancel")).status_code == 200
    response = await client.get(f"/orders/{order_id}/events", timeout=10)
    assert [data["status"] for _, data in sse_events(response.text)] == ["cancelled"]
    unknown = await client.get(f"/orders/{uuid.uuid4()}/events")
    assert unknown.status_code == 404
    assert "not found" in unknown.json()["detail"]


@pytest.mark.integration
async def test_the_list_of_orders_is_newest_first_a_page_at_a_time(orders_app) -> None:
    client, _ = orders_app
    placed = [await place(client) for _ in range(3)]
    first = (await client.get("/orders", params={"limit": 2})).json()
    second = await client.get("/orders", params={"limit": 2, "after": first[-1]["order_id"]})
    listed = [order["order_id"] for order in first + second.json()]
    assert listed[:3] == placed[::-1]
    assert first[0] | {"order_id": None, "created_at": None, "updated_at": None} == {
        "order_id": None,
        "status": "pending",
        "customer_name": "Ada",
        "total": "19.80",
        "currency": "EUR",
        "created_at": None,
        "updated_at": None,
    }
    unknown = await client.get("/orders", params={"after": str(uuid.uuid4())})
    assert unknown.status_code == 422
