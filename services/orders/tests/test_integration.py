"""Orders against the real RabbitMQ and PostgreSQL, in-process."""

import uuid

import pytest

from contracts import OrderCreatedV1, StockRejectedV1, StockReservedV1
from orders.config import OrdersSettings
from orders.main import MIGRATIONS, create_app
from servicekit.testing import eventually, publish_event, service_under_test, tap

pytestmark = pytest.mark.integration

ORDER = {
    "customer_email": "ada@example.com",
    "items": [
        {"sku": "SKU-1", "quantity": 2, "unit_price": "9.90"},
        {"sku": "SKU-2", "quantity": 1, "unit_price": 5},
    ],
    "shipping_address": {
        "name": "Ada",
        "line1": "1 Main St",
        "city": "Paris",
        "postal_code": "75001",
        "country": "FR",
    },
}


@pytest.fixture
async def orders(rabbitmq, databases):
    settings = OrdersSettings(database_url=databases.url("orders"), rabbitmq_url=rabbitmq.url)
    async with service_under_test(create_app, settings, MIGRATIONS, "orders") as client:
        yield client


async def status_is(client, order_id, expected: str) -> bool:
    return (await client.get(f"/orders/{order_id}")).json()["status"] == expected


def stock_rejected(placed: OrderCreatedV1) -> StockRejectedV1:
    return StockRejectedV1.caused_by(
        placed,
        producer="inventory",
        order_id=placed.order_id,
        rejected_lines=[
            {"sku": "SKU-1", "requested": 2, "available": 0, "reason": "insufficient_stock"}
        ],
    )


async def place(client, rabbitmq) -> OrderCreatedV1:
    async with tap(rabbitmq.url, "order.created.v1") as published:
        response = await client.post("/orders", json=ORDER)
        assert response.status_code == 202
        await eventually(lambda: len(published) == 1)
    return OrderCreatedV1.model_validate_json(published[0].body)


async def test_placing_an_order_stores_it_and_publishes_order_created(orders, rabbitmq) -> None:
    correlation_id = str(uuid.uuid4())
    async with tap(rabbitmq.url, "order.created.v1") as published:
        response = await orders.post(
            "/orders", json=ORDER, headers={"X-Correlation-ID": correlation_id}
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "pending"
        await eventually(lambda: len(published) == 1)
    message = published[0]
    event = OrderCreatedV1.model_validate_json(message.body)
    assert str(event.order_id) == body["order_id"]
    assert str(event.correlation_id) == correlation_id
    assert str(event.total) == "24.80"
    assert (message.routing_key, message.message_id, message.delivery_mode) == (
        "order.created.v1",
        str(event.event_id),
        2,
    )
    order = (await orders.get(f"/orders/{body['order_id']}")).json()
    assert (order["status"], order["total"], order["currency"]) == ("pending", "24.80", "EUR")
    assert [h["event_type"] for h in order["history"]] == ["order.created.v1"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_email": "ada"}, ["body", "customer_email"]),
        ({"items": []}, ["body", "items"]),
        (
            {"items": [{"sku": "SKU-1", "quantity": 0, "unit_price": 1}]},
            ["body", "items", 0, "quantity"],
        ),
        (
            {"shipping_address": {**ORDER["shipping_address"], "city": ""}},
            ["body", "shipping_address", "city"],
        ),
    ],
)
async def test_a_bad_order_is_refused_naming_the_field(orders, change, field) -> None:
    response = await orders.post("/orders", json={**ORDER, **change})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [field]


async def test_unknown_order_is_404(orders) -> None:
    assert (await orders.get(f"/orders/{uuid.uuid4()}")).status_code == 404


async def test_reserved_stock_confirms_and_a_late_rejection_changes_nothing(
    orders, rabbitmq
) -> None:
    placed = await place(orders, rabbitmq)
    reserved = StockReservedV1.caused_by(
        placed,
        producer="inventory",
        order_id=placed.order_id,
        lines=[{"sku": "SKU-1", "quantity": 2}],
    )
    await publish_event(rabbitmq.url, reserved)
    await eventually(lambda: status_is(orders, placed.order_id, "confirmed"))
    await publish_event(rabbitmq.url, stock_rejected(placed))  # late: the order is confirmed
    await eventually(lambda: rabbitmq.drained("orders.work"))
    order = (await orders.get(f"/orders/{placed.order_id}")).json()
    assert order["status"] == "confirmed"
    assert [h["event_type"] for h in order["history"]] == [
        "order.created.v1",
        "stock.reserved.v1",
        "stock.rejected.v1",
    ]


async def test_rejected_stock_rejects_the_order(orders, rabbitmq) -> None:
    placed = await place(orders, rabbitmq)
    await publish_event(rabbitmq.url, stock_rejected(placed))
    await eventually(lambda: status_is(orders, placed.order_id, "rejected"))
