"""Shipping against the real RabbitMQ and PostgreSQL, in-process."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from contracts import (
    Event,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV2,
    OrderRejectedV1,
    ShipmentCancelledV1,
    ShipmentDispatchedV1,
)
from contracts.api import MAX_PAGE_SIZE
from servicekit.failures import FAILURE_ATTEMPTS, FAILURE_REASON
from shipping.config import ShippingSettings
from shipping.main import MIGRATIONS, create_app
from testkit.broker import about_order, peek_queue, publish_event, publish_raw, tap
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import consumer_saw_duplicates, fetch, handled, published_about
from testkit.services import service_under_test

pytestmark = pytest.mark.integration

LONG_DELAY = 3600.0
"""Longer than the module runs: a ready shipment waits for a manual dispatch."""

LINES = [("SKU-1", 2)]


def running_shipping(rabbitmq, databases, dispatch_delay: float):
    settings = ShippingSettings(
        database_url=databases.url("shipping"),
        rabbitmq_url=rabbitmq.url,
        dispatch_delay=dispatch_delay,
        dispatch_poll_interval=0.1,
        # Queue arguments: every app of this module declares the same ones.
        retry_delays=(0.2,),
        max_attempts=50,
    )
    return service_under_test(create_app, settings, MIGRATIONS, "shipping")


@pytest.fixture
async def shipping(rabbitmq, databases):
    """Shipping that waits for POST /shipments/{id}/dispatch."""
    async with running_shipping(rabbitmq, databases, LONG_DELAY) as client:
        yield client


async def shipments(client, order_id) -> list[dict]:
    response = await client.get("/shipments", params={"order_id": str(order_id)})
    assert response.status_code == 200
    return response.json()


async def shipment_is(client, order_id, status: str) -> dict | None:
    found = await shipments(client, order_id)
    return found[0] if found and found[0]["status"] == status else None


def at(shipment: dict, field: str) -> datetime:
    return datetime.fromisoformat(shipment[field])


def from_orders(event_class: type[Event], order: OrderCreatedV2, **fields) -> Event:
    """A later event orders publishes about `order`."""
    return event_class.caused_by(order, producer="orders", order_id=order.order_id, **fields)


def order_cancelled(order: OrderCreatedV2) -> OrderCancelledV1:
    return from_orders(
        OrderCancelledV1, order, previous_status="confirmed", reason="changed my mind"
    )


def order_rejected(order: OrderCreatedV2) -> OrderRejectedV1:
    short = [{"sku": "SKU-1", "requested": 2, "available": 0, "reason": "insufficient_stock"}]
    return from_orders(OrderRejectedV1, order, short_items=short)


async def prepared(client, rabbitmq) -> tuple[OrderCreatedV2, dict]:
    """An order whose shipment is prepared, and that shipment."""
    order = order_created(LINES)
    await publish_event(rabbitmq.url, order)
    shipment = await eventually(lambda: shipment_is(client, order.order_id, "preparing"))
    return order, shipment


async def ready(client, rabbitmq) -> tuple[OrderCreatedV2, OrderConfirmedV1, dict]:
    """A confirmed order whose shipment is ready, the confirmation, and that shipment."""
    order, _ = await prepared(client, rabbitmq)
    confirmed = from_orders(OrderConfirmedV1, order)
    await publish_event(rabbitmq.url, confirmed)
    shipment = await eventually(lambda: shipment_is(client, order.order_id, "ready"))
    return order, confirmed, shipment


async def test_an_order_gets_one_shipment_to_its_address_and_nothing_is_published(
    shipping, rabbitmq, databases
) -> None:
    order = order_created(LINES, version=1)  # upcast as it arrives
    for _ in range(2):  # the second copy is a redelivery: no second shipment
        await publish_event(rabbitmq.url, order)
    [shipment] = await eventually(lambda: shipments(shipping, order.order_id))
    stats = await eventually(lambda: consumer_saw_duplicates(shipping, 1))
    assert (stats["processed"], stats["retried"], stats["dead_lettered"]) == (1, 0, 0)
    assert shipment["status"] == "preparing"
    assert shipment["shipping_address"] == order.shipping_address.model_dump()
    assert len(await shipments(shipping, order.order_id)) == 1
    assert await published_about(databases.url("shipping"), order.order_id) == []


async def test_a_confirmed_order_is_dispatched_once_the_handling_delay_is_over(
    rabbitmq, databases
) -> None:
    async with (
        running_shipping(rabbitmq, databases, dispatch_delay=0.2) as client,
        tap(rabbitmq.url, "shipment.dispatched.v1") as published,
    ):
        order, _ = await prepared(client, rabbitmq)
        confirmed = from_orders(OrderConfirmedV1, order)
        await publish_event(rabbitmq.url, confirmed)
        shipment = await eventually(lambda: shipment_is(client, order.order_id, "dispatched"))
        [message] = await eventually(lambda: about_order(published, order.order_id))
    event = ShipmentDispatchedV1.model_validate_json(message.body)
    assert event.tracking_number
    assert (str(event.shipment_id), event.tracking_number) == (
        shipment["shipment_id"],
        shipment["tracking_number"],
    )
    assert (event.causation_id, event.correlation_id) == (confirmed.event_id, order.correlation_id)
    assert at(shipment, "dispatched_at") >= at(shipment, "dispatch_after")


async def test_a_ready_shipment_waits_out_the_delay_or_is_dispatched_by_hand_once(
    shipping, rabbitmq, databases
) -> None:
    order, _, shipment = await ready(shipping, rabbitmq)
    assert shipment["tracking_number"] is None
    assert at(shipment, "dispatch_after") - at(shipment, "updated_at") > timedelta(minutes=59)
    url = f"/shipments/{shipment['shipment_id']}/dispatch"
    async with tap(rabbitmq.url, "shipment.dispatched.v1") as published:
        first = await shipping.post(url)
        again = await shipping.post(url)
        [message] = await eventually(lambda: about_order(published, order.order_id))
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["status"] == "dispatched"
    assert first.json()["tracking_number"]
    assert again.json()["tracking_number"] == first.json()["tracking_number"]
    event = ShipmentDispatchedV1.model_validate_json(message.body)
    assert event.tracking_number == first.json()["tracking_number"]
    assert await published_about(databases.url("shipping"), order.order_id) == [
        "shipment.dispatched.v1",
    ]


async def test_a_shipment_is_not_dispatched_while_its_order_is_unconfirmed(
    shipping, rabbitmq
) -> None:
    order, shipment = await prepared(shipping, rabbitmq)
    response = await shipping.post(f"/shipments/{shipment['shipment_id']}/dispatch")
    assert response.status_code == 409
    assert "not confirmed" in response.json()["detail"]
    assert await shipment_is(shipping, order.order_id, "preparing")


async def test_dispatching_an_unknown_shipment_is_404(shipping) -> None:
    assert (await shipping.post(f"/shipments/{uuid.uuid4()}/dispatch")).status_code == 404


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [(order_rejected, "order_rejected"), (order_cancelled, "order_cancelled")],
    ids=["rejected", "cancelled"],
)
async def test_a_rejected_or_cancelled_order_cancels_its_shipment_for_good(
    shipping, rabbitmq, outcome, reason
) -> None:
    order, shipment = await prepared(shipping, rabbitmq)
    cause = outcome(order)
    async with tap(rabbitmq.url, "shipment.cancelled.v1") as published:
        await publish_event(rabbitmq.url, cause)
        cancelled = await eventually(lambda: shipment_is(shipping, order.order_id, "cancelled"))
        [message] = await eventually(lambda: about_order(published, order.order_id))
    assert cancelled["cancel_reason"] == reason
    event = ShipmentCancelledV1.model_validate_json(message.body)
    assert (str(event.shipment_id), event.reason, event.causation_id) == (
        shipment["shipment_id"],
        reason,
        cause.event_id,
    )
    response = await shipping.post(f"/shipments/{shipment['shipment_id']}/dispatch")
    assert response.status_code == 409
    assert "cancelled" in response.json()["detail"]


async def test_a_cancelled_ready_shipment_is_never_dispatched(
    shipping, rabbitmq, databases
) -> None:
    order, _, shipment = await ready(shipping, rabbitmq)
    await publish_event(rabbitmq.url, order_cancelled(order))
    await eventually(lambda: shipment_is(shipping, order.order_id, "cancelled"))
    response = await shipping.post(f"/shipments/{shipment['shipment_id']}/dispatch")
    assert response.status_code == 409
    assert await published_about(databases.url("shipping"), order.order_id) == [
        "shipment.cancelled.v1",
    ]


async def test_a_cancellation_after_dispatch_leaves_the_shipment_dispatched(
    shipping, rabbitmq, databases
) -> None:
    order, _, shipment = await ready(shipping, rabbitmq)
    dispatched = await shipping.post(f"/shipments/{shipment['shipment_id']}/dispatch")
    assert dispatched.status_code == 200
    cancelled = order_cancelled(order)
    await publish_event(rabbitmq.url, cancelled)
    await eventually(lambda: handled(databases.url("shipping"), cancelled))
    [after] = await shipments(shipping, order.order_id)
    assert (after["status"], after["tracking_number"], after["cancel_reason"]) == (
        "dispatched",
        dispatched.json()["tracking_number"],
        None,
    )
    assert await published_about(databases.url("shipping"), order.order_id) == [
        "shipment.dispatched.v1",
    ]


async def test_a_confirmation_before_its_order_is_retried_until_the_shipment_exists(
    shipping, rabbitmq, databases
) -> None:
    order = order_created(LINES)
    confirmed = from_orders(OrderConfirmedV1, order)
    await publish_event(rabbitmq.url, confirmed)

    async def retried() -> bool:
        return (await shipping.get("/health/ready")).json()["messages"]["retried"] >= 1

    await eventually(retried)  # OutOfOrder: no shipment yet
    assert not await handled(databases.url("shipping"), confirmed)
    await publish_event(rabbitmq.url, order)
    shipment = await eventually(lambda: shipment_is(shipping, order.order_id, "ready"))
    assert shipment["ready_event_id"] == str(confirmed.event_id)


async def test_the_audit_reads_the_shipment_statuses_of_many_orders_at_once(
    shipping, rabbitmq
) -> None:
    preparing, _ = await prepared(shipping, rabbitmq)
    ready_order, _, _ = await ready(shipping, rabbitmq)
    asked = [str(order.order_id) for order in (preparing, ready_order)] + [str(uuid.uuid4())]

    response = await shipping.post("/audit/orders", json={"order_ids": asked})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "shipments": {asked[0]: ["preparing"], asked[1]: ["ready"], asked[2]: []}
    }


async def test_shipments_are_listed_newest_first_a_page_at_a_time(shipping, databases) -> None:
    """Made in 2030: newer than any other shipment of the module. Two at the same instant:
    the id orders them."""
    made_at = [datetime(2030, 1, day, tzinfo=UTC) for day in (1, 2, 2)]
    ids = [uuid.uuid4() for _ in made_at]
    for shipment_id, created_at in zip(ids, made_at, strict=True):
        await fetch(
            databases.url("shipping"),
            """INSERT INTO shipments (shipment_id, order_id, status, shipping_address, lines,
                                      created_at)
               VALUES ($1, $2, 'cancelled', '{}', '[]', $3)""",
            shipment_id,
            uuid.uuid4(),
            created_at,
        )
    newest_first = [str(i) for _, i in sorted(zip(made_at, ids, strict=True), reverse=True)]

    first = await shipping.get("/shipments", params={"limit": 2})
    after = first.json()[-1]["shipment_id"]
    second = await shipping.get("/shipments", params={"limit": 2, "after": after})
    unknown = await shipping.get("/shipments", params={"after": str(uuid.uuid4())})
    empty = await shipping.get("/shipments", params={"limit": 0})

    assert [s["shipment_id"] for s in first.json()] == newest_first[:2]
    assert second.json()[0]["shipment_id"] == newest_first[2]
    assert unknown.status_code == empty.status_code == 422
    assert [e["loc"] for e in unknown.json()["detail"]] == [["query", "after"]]
    assert [e["loc"] for e in empty.json()["detail"]] == [["query", "limit"]]


async def test_the_audit_is_asked_about_a_page_of_orders_at_most(shipping) -> None:
    asked = [str(uuid.uuid4()) for _ in range(MAX_PAGE_SIZE + 1)]

    refused = await shipping.post("/audit/orders", json={"order_ids": asked})
    answered = await shipping.post("/audit/orders", json={"order_ids": asked[:-1]})

    assert refused.status_code == 422
    assert [e["loc"] for e in refused.json()["detail"]] == [["body", "order_ids"]]
    assert answered.status_code == 200


@pytest.mark.parametrize(
    "text", ["12 St James\x00s Square", "12 St James\ud800s Square"], ids=["NUL", "surrogate"]
)
async def test_an_order_with_text_the_database_cannot_store_is_dead_lettered_at_once(
    shipping, rabbitmq, text
) -> None:
    """A contract violation, not a failure to retry: its address would never insert."""
    order = order_created(LINES)
    body = order.model_dump(mode="json")
    body["shipping_address"]["line1"] = text
    await publish_raw(
        rabbitmq.url,
        order.routing_key(),
        json.dumps(body).encode(),  # a lone surrogate as its JSON escape, `\ud800`
        message_id=str(order.event_id),
    )

    async def dead_lettered() -> list:
        letters = await peek_queue(rabbitmq.url, "shipping.dlq")
        return [m for m in letters if m.message_id == str(order.event_id)]

    [letter] = await eventually(dead_lettered)
    reason = letter.headers[FAILURE_REASON]
    assert "violates contract order.created.v2: shipping_address.line1: Value error, " in reason
    assert "text must not contain" in reason
    assert letter.headers[FAILURE_ATTEMPTS] == 1
    assert await shipments(shipping, order.order_id) == []
