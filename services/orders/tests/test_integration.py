"""Orders against the real RabbitMQ and PostgreSQL, in-process."""

import asyncio
import copy
import functools
import json
import operator
import shutil
import time
import uuid
from decimal import Decimal

import asyncpg
import pytest

from contracts import (
    CustomerV2,
    Event,
    MoneyV2,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV1,
    OrderCreatedV2,
    OrderRejectedV1,
    OrderShippedV1,
    ShipmentCancelledV1,
    ShipmentDispatchedV1,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from contracts.api import MAX_PAGE_SIZE, PAGE_SIZE
from orders.config import OrdersSettings
from orders.entrypoints.http import PlaceOrderRequest
from orders.main import MIGRATIONS, create_app
from servicekit.db import ensure_database, migrate
from servicekit.failures import FAILURE_ATTEMPTS, FAILURE_REASON
from testkit.broker import about_order, peek_queue, publish_event, tap
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import published_about
from testkit.services import service_under_test

pytestmark = pytest.mark.integration

ADDRESS = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Paris",
    "postal_code": "75001",
    "country": "FR",
}
ORDER = {
    "customer_email": "ada@example.com",
    "items": [
        {"sku": "SKU-1", "quantity": 2, "unit_price": "9.90"},
        {"sku": "SKU-2", "quantity": 1, "unit_price": "5"},
    ],
    "shipping_address": ADDRESS,
}
NAMED_ORDER = {
    **ORDER,
    "customer_name": "Ada Lovelace",
    "items": [
        {"sku": "SKU-1", "name": "Analytical engine", "quantity": 2, "unit_price": "9.90"},
        {"sku": "SKU-2", "name": "Punched card", "quantity": 1, "unit_price": "5"},
    ],
}


def settings(rabbitmq, databases, **overrides) -> OrdersSettings:
    return OrdersSettings(
        database_url=databases.url("orders"), rabbitmq_url=rabbitmq.url, **overrides
    )


def running_orders(rabbitmq, databases, **overrides):
    return service_under_test(
        create_app, settings(rabbitmq, databases, **overrides), MIGRATIONS, "orders"
    )


@pytest.fixture
async def orders(rabbitmq, databases):
    async with running_orders(rabbitmq, databases) as client:
        yield client


def unique_customer() -> str:
    """An email no other test orders with, to tell this test's orders from the rest."""
    return f"ada-{uuid.uuid4().hex[:8]}@example.com"


async def outbox(databases) -> list[tuple[str, dict]]:
    """(routing key, payload) of everything orders has published or will publish."""
    conn = await asyncpg.connect(databases.url("orders"))
    try:
        rows = await conn.fetch("SELECT routing_key, payload FROM outbox ORDER BY id")
    finally:
        await conn.close()
    return [(row["routing_key"], json.loads(row["payload"])) for row in rows]


async def order_of(client, order_id) -> dict:
    response = await client.get(f"/orders/{order_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def status_is(client, order_id, expected: str) -> bool:
    return (await order_of(client, order_id))["status"] == expected


async def place(client, rabbitmq, order=ORDER) -> OrderCreatedV2:
    """Place an order over HTTP; the order.created it published."""
    async with tap(rabbitmq.url, "order.created.v2") as published:
        response = await client.post("/orders", json=order)
        assert response.status_code == 202, response.text
        order_id = response.json()["order_id"]
        [message] = await eventually(lambda: about_order(published, order_id))
    return OrderCreatedV2.model_validate_json(message.body)


def reported(event_class: type[Event], cause: OrderCreatedV2, producer: str, **fields) -> Event:
    """What another service reports about the order `cause` placed."""
    return event_class.caused_by(cause, producer=producer, order_id=cause.order_id, **fields)


def stock_reserved(placed: OrderCreatedV2) -> StockReservedV1:
    return reported(StockReservedV1, placed, "inventory", lines=[{"sku": "SKU-1", "quantity": 2}])


def stock_rejected(placed: OrderCreatedV2) -> StockRejectedV1:
    short = [{"sku": "SKU-1", "requested": 2, "available": 0, "reason": "insufficient_stock"}]
    return reported(StockRejectedV1, placed, "inventory", rejected_lines=short)


def shipment_dispatched(placed: OrderCreatedV2, tracking_number: str) -> ShipmentDispatchedV1:
    return reported(
        ShipmentDispatchedV1,
        placed,
        "shipping",
        shipment_id=uuid.uuid4(),
        tracking_number=tracking_number,
    )


async def confirm(client, rabbitmq, placed: OrderCreatedV2) -> StockReservedV1:
    reserved = stock_reserved(placed)
    await publish_event(rabbitmq.url, reserved)
    await eventually(lambda: status_is(client, placed.order_id, "confirmed"))
    return reserved


# Placing orders


@pytest.mark.parametrize("versions", [(2,), (1, 2)], ids=["v2", "v1-and-v2"])
async def test_placing_an_order_publishes_order_created_in_each_configured_version(
    rabbitmq, databases, versions
) -> None:
    async with (
        running_orders(rabbitmq, databases, order_created_versions=versions) as client,
        tap(rabbitmq.url, "order.created.*") as published,
    ):
        response = await client.post("/orders", json=NAMED_ORDER)
        assert response.status_code == 202
        order_id = response.json()["order_id"]
        await eventually(lambda: len(about_order(published, order_id)) == len(versions))
    messages = about_order(published, order_id)
    assert await published_about(databases.url("orders"), order_id) == [
        f"order.created.v{version}" for version in versions
    ]
    assert sorted(m.routing_key for m in messages) == [f"order.created.v{v}" for v in versions]
    [event_id] = {m.message_id for m in messages}  # one event, in every version
    v2 = OrderCreatedV2.model_validate_json(
        next(m.body for m in messages if m.routing_key == "order.created.v2")
    )
    assert str(v2.event_id) == event_id
    if 1 in versions:
        v1 = OrderCreatedV1.model_validate_json(
            next(m.body for m in messages if m.routing_key == "order.created.v1")
        )
        assert (v1.event_id, v1.order_id, v1.correlation_id) == (
            v2.event_id,
            v2.order_id,
            v2.correlation_id,
        )
        assert (v1.customer_email, v1.total, v1.currency) == (
            "ada@example.com",
            v2.total.amount,
            "EUR",
        )
        assert [(line.sku, line.quantity, line.unit_price) for line in v1.lines] == [
            ("SKU-1", 2, Decimal("9.90")),
            ("SKU-2", 1, Decimal("5")),
        ]


async def test_an_order_created_v2_carries_names_amounts_and_the_correlation_id(
    orders, rabbitmq
) -> None:
    correlation_id = uuid.uuid4()
    async with tap(rabbitmq.url, "order.created.v2") as published:
        response = await orders.post(
            "/orders", json=NAMED_ORDER, headers={"X-Correlation-ID": str(correlation_id)}
        )
        assert response.status_code == 202
        body = response.json()
        assert body["status"] == "pending"
        assert response.headers["Location"] == f"/orders/{body['order_id']}"
        assert "Idempotent-Replayed" not in response.headers
        [message] = await eventually(lambda: about_order(published, body["order_id"]))
    event = OrderCreatedV2.model_validate_json(message.body)
    assert (message.routing_key, message.message_id, message.delivery_mode) == (
        "order.created.v2",
        str(event.event_id),
        2,  # persistent
    )
    assert (str(event.order_id), event.correlation_id, event.producer) == (
        body["order_id"],
        correlation_id,
        "orders",
    )
    assert event.customer == CustomerV2(name="Ada Lovelace", email="ada@example.com")
    assert [(line.sku, line.name, line.quantity, line.unit_price) for line in event.lines] == [
        ("SKU-1", "Analytical engine", 2, MoneyV2(amount=Decimal("9.90"), currency="EUR")),
        ("SKU-2", "Punched card", 1, MoneyV2(amount=Decimal("5"), currency="EUR")),
    ]
    assert event.total == MoneyV2(amount=Decimal("24.80"), currency="EUR")
    assert event.shipping_address.model_dump() == ADDRESS
    order = await order_of(orders, body["order_id"])
    assert (order["status"], order["customer_name"], order["total"], order["currency"]) == (
        "pending",
        "Ada Lovelace",
        "24.80",
        "EUR",
    )
    assert [h["event_type"] for h in order["history"]] == ["order.created.v2"]


async def test_without_names_the_customer_is_the_addressee_and_a_product_its_sku(
    orders, rabbitmq
) -> None:
    placed = await place(orders, rabbitmq, ORDER)
    assert placed.customer.name == ADDRESS["name"]
    assert [line.name for line in placed.lines] == ["SKU-1", "SKU-2"]
    assert (await order_of(orders, placed.order_id))["customer_name"] == ADDRESS["name"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"customer_email": "ada"}, ["body", "customer_email"]),
        ({"customer_name": ""}, ["body", "customer_name"]),
        ({"items": []}, ["body", "items"]),
        (
            {"items": [{"sku": "SKU-1", "quantity": 0, "unit_price": "1"}]},
            ["body", "items", 0, "quantity"],
        ),
        (
            {"items": [{"sku": "SKU-1", "name": "", "quantity": 1, "unit_price": "1"}]},
            ["body", "items", 0, "name"],
        ),
        (
            {"shipping_address": {**ADDRESS, "city": ""}},
            ["body", "shipping_address", "city"],
        ),
        *(
            (
                {"items": [{"sku": "SKU-1", "quantity": quantity, "unit_price": "1"}]},
                ["body", "items", 0, "quantity"],
            )
            for quantity in (True, "2", 2.0)
        ),
        (
            {"items": [{"sku": "SKU-1", "quantity": 1, "unit_price": 9.9}]},
            ["body", "items", 0, "unit_price"],
        ),
        (
            {"items": [{"sku": "SKU-1", "quantity": 1, "unit_price": "1e5"}]},
            ["body", "items", 0, "unit_price"],
        ),
        (
            {"items": [{"sku": "SKU-1", "quantity": 2, "unit_price": "9999999999.99"}]},
            ["body", "items"],
        ),
    ],
    ids=[
        "email",
        "empty name",
        "no items",
        "no quantity",
        "empty product name",
        "empty city",
        "quantity a boolean",
        "quantity a numeric string",
        "quantity a float",
        "price a JSON number",
        "price in exponent notation",
        "total beyond what money holds",
    ],
)
async def test_a_bad_order_is_refused_naming_the_field(orders, change, field) -> None:
    response = await orders.post("/orders", json={**ORDER, **change})
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["detail"]] == [field]


UNSTORABLE = {"NUL": "A\x00B", "lone surrogate": "A\ud800B"}
"""Text PostgreSQL cannot store. `json.dumps` writes a lone surrogate as its JSON escape,
`\\ud800`, as a hostile client would; httpx's `json=` cannot encode it at all."""


def as_json(body: dict, path: tuple, text: str) -> dict:
    """Arguments for a JSON request of `body` with `text` at `path`."""
    changed = copy.deepcopy(body)
    *parents, last = path
    functools.reduce(operator.getitem, parents, changed)[last] = text
    return {"content": json.dumps(changed), "headers": {"Content-Type": "application/json"}}


@pytest.mark.parametrize("text", UNSTORABLE.values(), ids=UNSTORABLE)
@pytest.mark.parametrize(
    "path",
    [
        ("customer_name",),
        ("items", 0, "name"),
        *(("shipping_address", field) for field in ("name", "line1", "city", "postal_code")),
    ],
    ids=lambda path: ".".join(map(str, path)),
)
async def test_text_the_database_cannot_store_is_refused_naming_the_field(
    orders, path, text
) -> None:
    response = await orders.post("/orders", **as_json(NAMED_ORDER, path, text))

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", *path]
    assert "text must not contain" in error["msg"]


@pytest.mark.parametrize("text", UNSTORABLE.values(), ids=UNSTORABLE)
async def test_a_cancellation_reason_the_database_cannot_store_is_refused(
    orders, rabbitmq, text
) -> None:
    placed = await place(orders, rabbitmq)

    response = await orders.post(
        f"/orders/{placed.order_id}/cancel", **as_json({"reason": "no"}, ("reason",), text)
    )

    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", "reason"]]
    assert (await order_of(orders, placed.order_id))["status"] == "pending"


async def test_unknown_order_is_404(orders) -> None:
    assert (await orders.get(f"/orders/{uuid.uuid4()}")).status_code == 404


# Idempotency-Key


async def orders_placed_by(databases, customer_email: str) -> set[str]:
    """Ids of the orders whose order.created names this customer."""
    return {
        payload["order_id"]
        for key, payload in await outbox(databases)
        if key == "order.created.v2" and payload["customer"]["email"] == customer_email
    }


async def test_a_retry_with_the_same_idempotency_key_gets_the_first_answer(
    orders, rabbitmq, databases
) -> None:
    order = {**ORDER, "customer_email": unique_customer()}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    async with tap(rabbitmq.url, "order.created.v2") as published:
        first = await orders.post("/orders", json=order, headers=key)
        again = await orders.post("/orders", json=order, headers=key)
        await eventually(lambda: about_order(published, first.json()["order_id"]))
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert await orders_placed_by(databases, order["customer_email"]) == {first.json()["order_id"]}
    assert len(about_order(published, first.json()["order_id"])) == 1


async def test_an_idempotency_key_reused_with_another_body_is_refused(orders, databases) -> None:
    order = {**ORDER, "customer_email": unique_customer()}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await orders.post("/orders", json=order, headers=key)
    assert first.status_code == 202
    other = {**order, "items": [{"sku": "SKU-1", "quantity": 3, "unit_price": "9.90"}]}
    refused = await orders.post("/orders", json=other, headers=key)
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]
    assert (problem["loc"], problem["type"]) == (
        ["header", "Idempotency-Key"],
        "idempotency_key_reused",
    )
    assert await orders_placed_by(databases, order["customer_email"]) == {first.json()["order_id"]}


async def test_concurrent_requests_with_one_idempotency_key_place_one_order(
    orders, databases
) -> None:
    order = {**ORDER, "customer_email": unique_customer()}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    responses = await asyncio.gather(
        *(orders.post("/orders", json=order, headers=key) for _ in range(5))
    )
    assert [r.status_code for r in responses] == [202] * 5
    [order_id] = {r.json()["order_id"] for r in responses}
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    assert await orders_placed_by(databases, order["customer_email"]) == {order_id}
    assert (await order_of(orders, order_id))["status"] == "pending"


async def test_an_idempotency_key_past_its_retention_is_a_new_key(orders, databases) -> None:
    """Whether or not the retention job has deleted it yet: a key older than
    ORDERS_IDEMPOTENCY_KEY_RETENTION (24 h) answers nothing of its first request."""
    order = {**ORDER, "customer_email": unique_customer()}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await orders.post("/orders", json=order, headers=key)
    assert first.status_code == 202
    conn = await asyncpg.connect(databases.url("orders"))
    try:
        await conn.execute(
            """UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second'
               WHERE key = $1""",
            key["Idempotency-Key"],
        )
        other = {**order, "items": [{"sku": "SKU-1", "quantity": 3, "unit_price": "9.90"}]}
        again = await orders.post("/orders", json=other, headers=key)
        assert again.status_code == 202, "another body is no reuse of an expired key"
        assert "Idempotent-Replayed" not in again.headers
        assert again.json()["order_id"] != first.json()["order_id"]
        replayed = await orders.post("/orders", json=other, headers=key)
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.json() == again.json()
        kept = await conn.fetch(
            "SELECT order_id::text FROM idempotency_keys WHERE key = $1", key["Idempotency-Key"]
        )
        assert [row["order_id"] for row in kept] == [again.json()["order_id"]]
    finally:
        await conn.close()
    placed = await orders_placed_by(databases, order["customer_email"])
    assert placed == {first.json()["order_id"], again.json()["order_id"]}


async def placing_transactions(databases, customer_emails: list[str]) -> dict[str, int]:
    """Customer email -> the id of the transaction that placed their one order."""
    conn = await asyncpg.connect(databases.url("orders"))
    try:
        rows = await conn.fetch(
            """SELECT customer_email, xmin::text::bigint AS txid FROM orders
               WHERE customer_email = ANY($1)""",
            customer_emails,
        )
    finally:
        await conn.close()
    assert len(rows) == len(customer_emails), "one order each"
    return {row["customer_email"]: row["txid"] for row in rows}


async def test_concurrent_orders_are_placed_in_shared_transactions_each_published_once(
    orders, databases
) -> None:
    customers = [unique_customer() for _ in range(12)]
    responses = await asyncio.gather(
        *(orders.post("/orders", json={**ORDER, "customer_email": c}) for c in customers)
    )
    assert [r.status_code for r in responses] == [202] * len(customers)
    transactions = await placing_transactions(databases, customers)
    assert len(set(transactions.values())) < len(customers), "some placed together"
    for customer, response in zip(customers, responses, strict=True):
        assert await orders_placed_by(databases, customer) == {response.json()["order_id"]}


async def test_with_a_placing_batch_of_one_each_order_has_a_transaction_of_its_own(
    rabbitmq, databases
) -> None:
    customers = [unique_customer() for _ in range(6)]
    async with running_orders(rabbitmq, databases, placing_batch_size=1) as client:
        responses = await asyncio.gather(
            *(client.post("/orders", json={**ORDER, "customer_email": c}) for c in customers)
        )
    assert [r.status_code for r in responses] == [202] * len(customers)
    transactions = await placing_transactions(databases, customers)
    assert len(set(transactions.values())) == len(customers)


async def test_an_order_the_database_refuses_fails_alone_and_the_others_are_placed(
    orders, databases
) -> None:
    refused = f"mallory-{uuid.uuid4().hex[:8]}@example.com"
    check = f"CHECK (customer_email <> '{refused}')"
    conn = await asyncpg.connect(databases.url("orders"))
    try:
        await conn.execute(f"ALTER TABLE orders ADD CONSTRAINT refuses_mallory {check}")
        customers = [unique_customer() for _ in range(5)]
        *placed, failed = await asyncio.gather(
            *(orders.post("/orders", json={**ORDER, "customer_email": c}) for c in customers),
            orders.post("/orders", json={**ORDER, "customer_email": refused}),
            return_exceptions=True,
        )
    finally:
        await conn.execute("ALTER TABLE orders DROP CONSTRAINT refuses_mallory")
        await conn.close()
    # The in-process client raises what the app raised; over the wire it is a 500.
    assert isinstance(failed, asyncpg.CheckViolationError), failed
    assert [r.status_code for r in placed] == [202] * len(customers)
    await placing_transactions(databases, customers)
    assert await orders_placed_by(databases, refused) == set()
    for customer, response in zip(customers, placed, strict=True):
        assert await orders_placed_by(databases, customer) == {response.json()["order_id"]}


async def database_with_a_key_stored_before_003(
    databases, name: str, tmp_path, *, status_code: int = 202, response: dict | None = None
) -> tuple[str, str, uuid.UUID]:
    """A database migrated up to 002 holding one order and the idempotency key for ORDER as
    the code before 003 stored it (the HTTP status and body); its URL, key and order id."""
    url = databases.url(name)
    before_003 = tmp_path / "migrations"
    before_003.mkdir()
    for migration in sorted(MIGRATIONS.glob("*.sql"))[:2]:
        shutil.copy(migration, before_003)
    await ensure_database(url)
    await migrate(url, before_003)
    key, order_id = str(uuid.uuid4()), uuid.uuid4()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """INSERT INTO orders (order_id, customer_name, customer_email, lines, total,
                                   currency, shipping_address, status, correlation_id)
               VALUES ($1, 'Ada', 'ada@example.com', '[]', 24.80, 'EUR', $2, 'pending', $3)""",
            order_id,
            json.dumps(ADDRESS),
            uuid.uuid4(),
        )
        await conn.execute(
            """INSERT INTO idempotency_keys (key, request_hash, order_id, status_code, response)
               VALUES ($1, $2, $3, $4, $5)""",
            key,
            PlaceOrderRequest.model_validate(ORDER).fingerprint(),
            order_id,
            status_code,
            json.dumps(response or {"order_id": str(order_id), "status": "pending"}),
        )
    finally:
        await conn.close()
    return url, key, order_id


async def test_a_key_stored_before_migration_003_replays_the_answer_it_gave(
    rabbitmq, databases, tmp_path
) -> None:
    url, key, order_id = await database_with_a_key_stored_before_003(
        databases, "orders_keys_before_003", tmp_path
    )
    settings = OrdersSettings(database_url=url, rabbitmq_url=rabbitmq.url)
    async with service_under_test(create_app, settings, MIGRATIONS, "orders") as client:
        again = await client.post("/orders", json=ORDER, headers={"Idempotency-Key": key})
        other = {**ORDER, "items": [{"sku": "SKU-1", "quantity": 3, "unit_price": "9.90"}]}
        refused = await client.post("/orders", json=other, headers={"Idempotency-Key": key})
    assert again.status_code == 202
    assert again.json() == {"order_id": str(order_id), "status": "pending"}
    assert again.headers["Location"] == f"/orders/{order_id}"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["type"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    "stored",
    [
        pytest.param({"status_code": 201}, id="another-status-code"),
        pytest.param(
            {"response": {"order_id": str(uuid.uuid4()), "status": "pending"}},
            id="another-order-id",
        ),
    ],
)
async def test_migration_003_refuses_a_stored_answer_it_could_not_rebuild(
    databases, tmp_path, stored
) -> None:
    name = f"orders_odd_key_{uuid.uuid4().hex[:8]}"
    url, _, _ = await database_with_a_key_stored_before_003(databases, name, tmp_path, **stored)
    with pytest.raises(asyncpg.RaiseError, match="cannot rebuild"):
        await migrate(url, MIGRATIONS)
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            """SELECT column_name FROM information_schema.columns
               WHERE table_name = 'idempotency_keys'"""
        )
    finally:
        await conn.close()
    assert {"status_code", "response"} <= {row["column_name"] for row in columns}


# Cancelling


@pytest.mark.parametrize("previous_status", ["pending", "confirmed"])
async def test_cancelling_an_undispatched_order_announces_it(
    orders, rabbitmq, previous_status
) -> None:
    placed = await place(orders, rabbitmq)
    if previous_status == "confirmed":
        await confirm(orders, rabbitmq, placed)
    async with tap(rabbitmq.url, "order.cancelled.v1") as published:
        response = await orders.post(
            f"/orders/{placed.order_id}/cancel", json={"reason": "changed my mind"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"order_id": str(placed.order_id), "status": "cancelled"}
        [message] = await eventually(lambda: about_order(published, placed.order_id))
    event = OrderCancelledV1.model_validate_json(message.body)
    assert (event.previous_status, event.reason, event.correlation_id, event.producer) == (
        previous_status,
        "changed my mind",
        placed.correlation_id,
        "orders",
    )
    order = await order_of(orders, placed.order_id)
    assert order["status"] == "cancelled"
    assert [step["status"] for step in order["timeline"]][-1] == "cancelled"


async def test_cancelling_twice_succeeds_and_announces_once(orders, rabbitmq, databases) -> None:
    placed = await place(orders, rabbitmq)
    async with tap(rabbitmq.url, "order.cancelled.v1") as published:
        first = await orders.post(f"/orders/{placed.order_id}/cancel")
        again = await orders.post(f"/orders/{placed.order_id}/cancel")
        [message] = await eventually(lambda: about_order(published, placed.order_id))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == {"order_id": str(placed.order_id), "status": "cancelled"}
    assert OrderCancelledV1.model_validate_json(message.body).reason == "cancelled by the customer"
    assert await published_about(databases.url("orders"), placed.order_id) == [
        "order.created.v2",
        "order.cancelled.v1",
    ]


async def test_cancelling_an_unknown_order_is_404(orders) -> None:
    assert (await orders.post(f"/orders/{uuid.uuid4()}/cancel")).status_code == 404


async def test_a_rejected_order_cannot_be_cancelled(orders, rabbitmq, databases) -> None:
    placed = await place(orders, rabbitmq)
    await publish_event(rabbitmq.url, stock_rejected(placed))
    await eventually(lambda: status_is(orders, placed.order_id, "rejected"))
    response = await orders.post(f"/orders/{placed.order_id}/cancel")
    assert response.status_code == 409
    assert "rejected" in response.json()["detail"]
    assert await status_is(orders, placed.order_id, "rejected")
    assert "order.cancelled.v1" not in await published_about(
        databases.url("orders"), placed.order_id
    )


# What inventory and shipping report


async def test_reserved_stock_confirms_and_a_late_rejection_changes_nothing(
    orders, rabbitmq, databases
) -> None:
    placed = await place(orders, rabbitmq)
    async with tap(rabbitmq.url, "order.confirmed.v1") as published:
        reserved = await confirm(orders, rabbitmq, placed)
        [message] = await eventually(lambda: about_order(published, placed.order_id))
    confirmed = OrderConfirmedV1.model_validate_json(message.body)
    assert (confirmed.causation_id, confirmed.correlation_id, confirmed.producer) == (
        reserved.event_id,
        placed.correlation_id,
        "orders",
    )

    await publish_event(rabbitmq.url, stock_rejected(placed))  # late: the order is confirmed

    async def recorded_three_events() -> dict | None:
        order = await order_of(orders, placed.order_id)
        return order if len(order["history"]) == 3 else None

    order = await eventually(recorded_three_events)
    assert order["status"] == "confirmed"
    assert [h["event_type"] for h in order["history"]] == [
        "order.created.v2",
        "stock.reserved.v1",
        "stock.rejected.v1",
    ]
    assert order["history"][-1]["note"].startswith("stale")
    assert await published_about(databases.url("orders"), placed.order_id) == [
        "order.created.v2",
        "order.confirmed.v1",
    ]


async def test_rejected_stock_rejects_the_order_naming_the_short_items(orders, rabbitmq) -> None:
    placed = await place(orders, rabbitmq)
    rejected = stock_rejected(placed)
    async with tap(rabbitmq.url, "order.rejected.v1") as published:
        await publish_event(rabbitmq.url, rejected)
        await eventually(lambda: status_is(orders, placed.order_id, "rejected"))
        [message] = await eventually(lambda: about_order(published, placed.order_id))
    event = OrderRejectedV1.model_validate_json(message.body)
    assert event.short_items == rejected.rejected_lines
    assert (event.causation_id, event.correlation_id) == (rejected.event_id, placed.correlation_id)


async def test_a_dispatched_shipment_ships_the_order_and_it_can_no_longer_be_cancelled(
    orders, rabbitmq
) -> None:
    placed = await place(orders, rabbitmq)
    await confirm(orders, rabbitmq, placed)
    dispatched = shipment_dispatched(placed, "OF0123456789AB")
    async with tap(rabbitmq.url, "order.shipped.v1") as published:
        await publish_event(rabbitmq.url, dispatched)
        await eventually(lambda: status_is(orders, placed.order_id, "shipped"))
        [message] = await eventually(lambda: about_order(published, placed.order_id))
    shipped = OrderShippedV1.model_validate_json(message.body)
    assert (shipped.shipment_id, shipped.tracking_number, shipped.causation_id) == (
        dispatched.shipment_id,
        "OF0123456789AB",
        dispatched.event_id,
    )
    order = await order_of(orders, placed.order_id)
    assert (order["tracking_number"], order["shipment_id"]) == (
        "OF0123456789AB",
        str(dispatched.shipment_id),
    )

    refused = await orders.post(f"/orders/{placed.order_id}/cancel")
    assert refused.status_code == 409
    assert "dispatched" in refused.json()["detail"]
    assert await status_is(orders, placed.order_id, "shipped")


async def test_the_timeline_lists_each_status_change_in_order_with_its_producer(
    orders, rabbitmq
) -> None:
    placed = await place(orders, rabbitmq)
    await confirm(orders, rabbitmq, placed)
    await publish_event(rabbitmq.url, shipment_dispatched(placed, "OF00000000TL01"))
    await eventually(lambda: status_is(orders, placed.order_id, "shipped"))
    timeline = (await order_of(orders, placed.order_id))["timeline"]
    assert [(s["status"], s["event_type"], s["producer"]) for s in timeline] == [
        ("pending", "order.created.v2", "orders"),
        ("confirmed", "stock.reserved.v1", "inventory"),
        ("shipped", "shipment.dispatched.v1", "shipping"),
    ]
    assert [s["at"] for s in timeline] == sorted(s["at"] for s in timeline)


async def test_stock_reserved_after_cancellation_is_recorded_as_stale(
    orders, rabbitmq, databases
) -> None:
    placed = await place(orders, rabbitmq)
    assert (await orders.post(f"/orders/{placed.order_id}/cancel")).status_code == 200
    reserved = stock_reserved(placed)
    await publish_event(rabbitmq.url, reserved)

    async def recorded() -> dict | None:
        order = await order_of(orders, placed.order_id)
        return next((h for h in order["history"] if h["event_id"] == str(reserved.event_id)), None)

    entry = await eventually(recorded)
    assert entry["status_after"] is None
    assert entry["note"].startswith("stale")
    order = await order_of(orders, placed.order_id)
    assert order["status"] == "cancelled"
    assert [step["status"] for step in order["timeline"]] == ["pending", "cancelled"]
    assert "order.confirmed.v1" not in await published_about(
        databases.url("orders"), placed.order_id
    )


async def test_events_that_move_no_order_are_recorded_in_its_history_only(
    orders, rabbitmq, databases
) -> None:
    placed = await place(orders, rabbitmq)
    await confirm(orders, rabbitmq, placed)
    shipment_id = uuid.uuid4()
    informational = [
        reported(StockReleasedV1, placed, "inventory", lines=[{"sku": "SKU-1", "quantity": 2}]),
        reported(
            ShipmentCancelledV1,
            placed,
            "shipping",
            shipment_id=shipment_id,
            reason="order_cancelled",
        ),
    ]
    for event in informational:
        await publish_event(rabbitmq.url, event)

    async def recorded() -> list[dict] | None:
        history = (await order_of(orders, placed.order_id))["history"]
        ids = {str(event.event_id) for event in informational}
        entries = [h for h in history if h["event_id"] in ids]
        return entries if len(entries) == len(informational) else None

    entries = await eventually(recorded)
    assert {(h["status_after"], h["note"]) for h in entries} == {(None, None)}
    order = await order_of(orders, placed.order_id)
    assert (order["status"], order["shipment_id"]) == ("confirmed", None)
    assert [step["status"] for step in order["timeline"]] == ["pending", "confirmed"]
    assert await published_about(databases.url("orders"), placed.order_id) == [
        "order.created.v2",
        "order.confirmed.v1",
    ]


async def test_an_event_about_an_order_never_placed_is_dead_lettered_at_once(
    orders, rabbitmq
) -> None:
    never_placed = order_created()
    reserved = stock_reserved(never_placed)
    await publish_event(rabbitmq.url, reserved)

    async def dead_lettered() -> list:
        letters = await peek_queue(rabbitmq.url, "orders.dlq")
        return [m for m in letters if m.message_id == str(reserved.event_id)]

    [letter] = await eventually(dead_lettered)
    assert "unknown to the orders service" in letter.headers[FAILURE_REASON]
    assert letter.headers[FAILURE_ATTEMPTS] == 1
    assert (await orders.get(f"/orders/{never_placed.order_id}")).status_code == 404


# Availability (request-reply to inventory)


async def test_availability_is_504_in_bounded_time_when_inventory_does_not_answer(
    rabbitmq, databases
) -> None:
    async with running_orders(rabbitmq, databases, availability_timeout=0.5) as client:
        started = time.monotonic()
        response = await client.get("/availability", params={"sku": "SKU-1"})
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert "inventory" in response.json()["detail"]
    assert elapsed < 3


# What the audit reads


async def audited(client, limit: int | None = None) -> list[dict]:
    """Every order in GET /audit/orders, page after page (of `limit`, if given)."""
    every: list[dict] = []
    query = {} if limit is None else {"limit": limit}
    while True:
        response = await client.get("/audit/orders", params=query)
        assert response.status_code == 200, response.text
        page = response.json()["orders"]
        assert len(page) <= (limit or PAGE_SIZE)
        every += page
        if len(page) < (limit or PAGE_SIZE):
            return every
        query["after"] = page[-1]["order_id"]


async def test_the_audit_reads_each_orders_status_and_whether_it_was_ever_confirmed(
    orders, rabbitmq
) -> None:
    cancelled = await place(orders, rabbitmq)
    await confirm(orders, rabbitmq, cancelled)
    assert (await orders.post(f"/orders/{cancelled.order_id}/cancel")).status_code == 200
    pending = await place(orders, rabbitmq)

    every = await audited(orders)
    one = await orders.get("/audit/orders", params={"order_id": str(pending.order_id)})
    unknown_id = uuid.uuid4()
    unknown = await orders.get("/audit/orders", params={"order_id": str(unknown_id)})

    ids = [order["order_id"] for order in every]
    assert ids.index(str(cancelled.order_id)) < ids.index(str(pending.order_id))  # oldest first
    cancelled_audit = {"order_id": str(cancelled.order_id), "status": "cancelled"}
    assert {**cancelled_audit, "was_confirmed": True} in every
    assert one.json() == {
        "orders": [{"order_id": str(pending.order_id), "status": "pending", "was_confirmed": False}]
    }
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"detail": f"order {unknown_id} not found"},
    )


async def test_the_audit_answers_a_page_at_a_time_and_every_order_once(orders, rabbitmq) -> None:
    placed = [str((await place(orders, rabbitmq)).order_id) for _ in range(3)]

    first = await orders.get("/audit/orders", params={"limit": 2})
    by_twos = [order["order_id"] for order in await audited(orders, limit=2)]
    at_once = [order["order_id"] for order in await audited(orders)]
    unknown = await orders.get("/audit/orders", params={"after": str(uuid.uuid4())})
    too_many = await orders.get("/audit/orders", params={"limit": MAX_PAGE_SIZE + 1})

    assert len(first.json()["orders"]) == 2
    assert by_twos == at_once
    assert len(set(by_twos)) == len(by_twos)
    assert [order_id for order_id in by_twos if order_id in placed] == placed  # oldest first
    assert unknown.status_code == too_many.status_code == 422
    assert [e["loc"] for e in unknown.json()["detail"]] == [["query", "after"]]
    assert [e["loc"] for e in too_many.json()["detail"]] == [["query", "limit"]]
