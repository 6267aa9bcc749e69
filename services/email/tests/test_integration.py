"""Email against the real RabbitMQ, PostgreSQL and an SMTP server, in-process."""

import uuid
from datetime import UTC, datetime

import pytest

from contracts import (
    Event,
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderRejectedV1,
    OrderShippedV1,
)
from contracts.audit import EmailKind
from email_service.config import EmailSettings
from email_service.main import MIGRATIONS, create_app
from testkit.broker import publish_event
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import consumer_saw_duplicates, fetch, handled, published_about
from testkit.services import service_under_test

pytestmark = pytest.mark.integration

LINES = (("SKU-1", "Analytical engine", 2), ("SKU-2", "Punched card", 1))


@pytest.fixture
async def email(rabbitmq, databases, smtp_sink):
    settings = EmailSettings(
        database_url=databases.url("email"),
        rabbitmq_url=rabbitmq.url,
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
        # Queue arguments: every app of this module declares the same ones.
        retry_delays=(0.2,),
        max_attempts=50,
    )
    async with service_under_test(create_app, settings, MIGRATIONS, "email") as client:
        yield client


async def emails(client, order_id) -> list[dict]:
    response = await client.get("/emails", params={"order_id": str(order_id)})
    assert response.status_code == 200
    return response.json()


def mails(smtp_sink, order_id, subject: str) -> list:
    """What the SMTP server received about the order under this subject."""
    return [m for m in smtp_sink.handler.about(str(order_id)) if m["Subject"].startswith(subject)]


def from_orders(event_class: type[Event], order: Event, **fields) -> Event:
    """A later event orders publishes about `order`."""
    return event_class.caused_by(order, producer="orders", order_id=order.order_id, **fields)


def order_rejected(order: Event) -> OrderRejectedV1:
    short = [
        {"sku": "SKU-1", "requested": 2, "available": 1, "reason": "insufficient_stock"},
        {"sku": "SKU-2", "requested": 1, "available": 0, "reason": "unknown_sku"},
    ]
    return from_orders(OrderRejectedV1, order, short_items=short)


def order_shipped(order: Event) -> OrderShippedV1:
    return from_orders(
        OrderShippedV1, order, shipment_id=uuid.uuid4(), tracking_number="OF0123456789AB"
    )


def order_cancelled(order: Event) -> OrderCancelledV1:
    return from_orders(
        OrderCancelledV1, order, previous_status="confirmed", reason="changed my mind"
    )


async def known_order(databases, rabbitmq, order: Event) -> Event:
    """Publish the order.created and wait until email has remembered the order."""
    await publish_event(rabbitmq.url, order)
    await eventually(lambda: handled(databases.url("email"), order))
    return order


async def cancelled_order(databases, rabbitmq, smtp_sink, order: Event) -> Event:
    """An order email knows, cancelled, once its cancellation email is out."""
    await known_order(databases, rabbitmq, order)
    await publish_event(rabbitmq.url, order_cancelled(order))
    await eventually(lambda: mails(smtp_sink, order.order_id, "Your order is cancelled"))
    return order


@pytest.mark.parametrize(
    ("version", "greeting", "line"),
    [
        (1, "Hello Ada Lovelace,", "2 x SKU-1 (SKU-1) at 4.50 EUR"),  # v1: the addressee
        (2, "Hello Grace Hopper,", "2 x Analytical engine (SKU-1) at 4.50 EUR"),
    ],
    ids=["order.created.v1", "order.created.v2"],
)
async def test_a_confirmation_is_sent_once_over_smtp_from_what_order_created_said(
    email, rabbitmq, databases, smtp_sink, version, greeting, line
) -> None:
    order = order_created(LINES, customer_name="Grace Hopper", version=version)
    await known_order(databases, rabbitmq, order)
    confirmed = from_orders(OrderConfirmedV1, order)
    for _ in range(2):  # the second copy is a redelivery: no second email
        await publish_event(rabbitmq.url, confirmed)
    [sent] = await eventually(lambda: mails(smtp_sink, order.order_id, "Your order is confirmed"))
    stats = await eventually(lambda: consumer_saw_duplicates(email, 1))
    assert (stats["processed"], stats["retried"], stats["dead_lettered"]) == (2, 0, 0)
    assert sent["To"] == "ada@example.com"
    assert str(order.order_id) in sent["Subject"]
    assert sent.get_content().startswith(greeting)
    assert line in sent.get_content()
    assert len(smtp_sink.handler.about(str(order.order_id))) == 1
    [record] = await emails(email, order.order_id)
    assert record["to"] == "ada@example.com"
    assert (record["subject"], record["kind"], record["status"]) == (
        sent["Subject"],
        "order_confirmation",
        "sent",
    )
    assert record["sent_at"]
    assert await published_about(databases.url("email"), order.order_id) == []
    assert sent["Message-ID"] == f"<{record['email_id']}@orderflow>"


@pytest.mark.parametrize(
    ("outcome", "subject", "kind", "says"),
    [
        (
            order_rejected,
            "We cannot fulfil your order",
            "order_rejection",
            [
                "Analytical engine (SKU-1): you asked for 2, we have 1",
                "Punched card (SKU-2): you asked for 1, we do not sell it",
            ],
        ),
        (
            order_shipped,
            "Your order has shipped",
            "shipment_dispatched",
            ["Tracking number: OF0123456789AB"],
        ),
        (
            order_cancelled,
            "Your order is cancelled",
            "order_cancellation",
            ["is cancelled (changed my mind)"],
        ),
    ],
    ids=["rejected", "shipped", "cancelled"],
)
async def test_each_order_outcome_is_emailed_once_even_when_published_twice(
    email, rabbitmq, databases, smtp_sink, outcome, subject, kind, says
) -> None:
    order = await known_order(databases, rabbitmq, order_created(LINES))
    event = outcome(order)
    for _ in range(2):
        await publish_event(rabbitmq.url, event)
    [sent] = await eventually(lambda: mails(smtp_sink, order.order_id, subject))
    await eventually(lambda: consumer_saw_duplicates(email, 1))
    assert sent["To"] == "ada@example.com"
    for text in says:
        assert text in sent.get_content()
    assert len(smtp_sink.handler.about(str(order.order_id))) == 1
    assert [record["kind"] for record in await emails(email, order.order_id)] == [kind]
    assert (
        await published_about(databases.url("email"), order.order_id) == []
    )  # only confirmations announce


async def test_a_confirmation_arriving_after_the_cancellation_is_not_sent(
    email, rabbitmq, databases, smtp_sink
) -> None:
    order = await cancelled_order(databases, rabbitmq, smtp_sink, order_created(LINES))
    confirmed = from_orders(OrderConfirmedV1, order)
    await publish_event(rabbitmq.url, confirmed)
    await eventually(lambda: handled(databases.url("email"), confirmed))
    assert mails(smtp_sink, order.order_id, "Your order is confirmed") == []
    assert [record["kind"] for record in await emails(email, order.order_id)] == [
        "order_cancellation"
    ]
    assert await published_about(databases.url("email"), order.order_id) == []


async def test_a_confirmation_before_its_order_is_retried_until_the_order_arrives(
    email, rabbitmq, databases, smtp_sink
) -> None:
    order = order_created(LINES)
    confirmed = from_orders(OrderConfirmedV1, order)
    await publish_event(rabbitmq.url, confirmed)

    async def retried() -> bool:
        return (await email.get("/health/ready")).json()["messages"]["retried"] >= 1

    await eventually(retried)  # OutOfOrder: email has not heard of the order yet
    assert smtp_sink.handler.about(str(order.order_id)) == []
    await publish_event(rabbitmq.url, order)
    [sent] = await eventually(lambda: mails(smtp_sink, order.order_id, "Your order is confirmed"))
    assert "Analytical engine" in sent.get_content()
    stats = (await email.get("/health/ready")).json()["messages"]
    assert stats["dead_lettered"] == 0


async def test_the_audit_reads_the_kinds_of_email_sent_about_many_orders_at_once(
    email, rabbitmq, databases, smtp_sink
) -> None:
    cancelled = await cancelled_order(databases, rabbitmq, smtp_sink, order_created(LINES))
    silent = await known_order(databases, rabbitmq, order_created(LINES))
    asked = [str(cancelled.order_id), str(silent.order_id)]

    response = await email.post("/audit/orders", json={"order_ids": asked})

    assert response.status_code == 200, response.text
    assert response.json() == {"emails": {asked[0]: ["order_cancellation"], asked[1]: []}}


async def pages(client, path: str, limit: int, **query) -> list[list[dict]]:
    """Every page of a list route, each of `limit` items at most, the first one first."""
    found, after = [], {}
    while True:
        response = await client.get(path, params={**query, **after, "limit": limit})
        assert response.status_code == 200, response.text
        found.append(response.json())
        assert len(found[-1]) <= limit
        if len(found[-1]) < limit:
            return found
        after = {"after": found[-1][-1]["email_id"]}


async def test_emails_are_listed_newest_first_a_page_at_a_time(email, databases) -> None:
    """Sent in 2030: newer than any other email of the module. Two at the same instant: the
    id orders them."""
    order_id = uuid.uuid4()
    sent_at = {
        EmailKind.ORDER_CONFIRMATION: datetime(2030, 1, 1, tzinfo=UTC),
        EmailKind.ORDER_REJECTION: datetime(2030, 1, 2, tzinfo=UTC),
        EmailKind.SHIPMENT_DISPATCHED: datetime(2030, 1, 2, tzinfo=UTC),
        EmailKind.ORDER_CANCELLATION: datetime(2030, 1, 3, tzinfo=UTC),
    }
    ids = {kind: uuid.uuid4() for kind in sent_at}
    for kind, email_id in ids.items():
        await fetch(
            databases.url("email"),
            """INSERT INTO emails (email_id, order_id, recipient, subject, kind, status,
                                   message_id, sent_at)
               VALUES ($1, $2, 'ada@example.com', 'Your order', $3, 'sent', $4, $5)""",
            email_id,
            order_id,
            kind.value,
            f"<{email_id}@test>",
            sent_at[kind],
        )
    newest_first = [
        str(ids[kind]) for kind in sorted(ids, key=lambda k: (sent_at[k], ids[k]), reverse=True)
    ]

    by_threes = await pages(email, "/emails", 3, order_id=str(order_id))
    by_twos = await pages(email, "/emails", 2)
    unknown = await email.get("/emails", params={"after": str(uuid.uuid4())})

    assert [[e["email_id"] for e in page] for page in by_threes] == [
        newest_first[:3],
        newest_first[3:],
    ]
    listed = [e["email_id"] for page in by_twos for e in page]
    assert listed[:4] == newest_first
    assert len(set(listed)) == len(listed)
    assert unknown.status_code == 422
    assert [e["loc"] for e in unknown.json()["detail"]] == [["query", "after"]]


async def test_the_audit_counts_the_events_waiting_in_the_outbox(email, databases) -> None:
    """Email publishes nothing of its own: a row another writer left, for a routing key no
    queue in this module is bound to, waits in the outbox and is counted."""
    await fetch(
        databases.url("email"),
        """INSERT INTO outbox (event_id, routing_key, payload)
           VALUES ($1, 'nobody.listens.v1', '{}')""",
        uuid.uuid4(),
    )

    async def counted_as_the_outbox_holds() -> bool:
        [pending] = await fetch(
            databases.url("email"), "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        answer = (await email.get("/audit/outbox")).json()
        return pending["count"] >= 1 and answer == {
            "service": "email",
            "unpublished": pending["count"],
        }

    await eventually(counted_as_the_outbox_holds)


async def test_emails_one_after_another_share_one_smtp_connection(
    email, rabbitmq, databases, smtp_sink
) -> None:
    order = await known_order(databases, rabbitmq, order_created(LINES))
    await publish_event(rabbitmq.url, from_orders(OrderConfirmedV1, order))
    await eventually(lambda: mails(smtp_sink, order.order_id, "Your order is confirmed"))
    await cancelled_order(databases, rabbitmq, smtp_sink, order)
    assert len(smtp_sink.handler.about(str(order.order_id))) == 2
    assert len(smtp_sink.handler.connections_for(str(order.order_id))) == 1
