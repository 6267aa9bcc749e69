"""Email against the real RabbitMQ, PostgreSQL and an SMTP server, in-process."""

import pytest

from contracts import OrderConfirmationSentV1
from email_service.config import EmailSettings
from email_service.main import MIGRATIONS, create_app
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
async def email(rabbitmq, databases, smtp_sink):
    settings = EmailSettings(
        database_url=databases.url("email"),
        rabbitmq_url=rabbitmq.url,
        smtp_host=smtp_sink.host,
        smtp_port=smtp_sink.port,
    )
    async with service_under_test(create_app, settings, MIGRATIONS, "email") as client:
        yield client


async def emails(client, order_id) -> list[dict]:
    response = await client.get("/emails", params={"order_id": str(order_id)})
    assert response.status_code == 200
    return response.json()


async def test_an_order_confirmation_is_sent_once_over_smtp(email, rabbitmq, smtp_sink) -> None:
    order = order_created_event([("SKU-1", 2)], customer_email="grace@example.com")
    async with tap(rabbitmq.url, "order_confirmation.sent.v1") as published:
        for _ in range(2):  # the second copy is a redelivery: no second email
            await publish_event(rabbitmq.url, order)
        [sent] = await eventually(lambda: smtp_sink.handler.about(str(order.order_id)))
        stats = await eventually(lambda: consumer_saw_duplicates(email, 1))
        assert (stats["processed"], stats["retried"], stats["dead_lettered"]) == (1, 0, 0)
        await eventually(lambda: len(published) == 1)
    assert sent["To"] == "grace@example.com"
    assert str(order.order_id) in sent["Subject"]
    assert "2 x SKU-1" in sent.get_content()
    assert len(smtp_sink.handler.about(str(order.order_id))) == 1
    [record] = await emails(email, order.order_id)
    assert record["to"] == "grace@example.com"
    assert (record["subject"], record["kind"], record["status"]) == (
        sent["Subject"],
        "order_confirmation",
        "sent",
    )
    assert record["sent_at"]
    event = OrderConfirmationSentV1.model_validate_json(published[0].body)
    assert (str(event.email_id), event.causation_id) == (record["email_id"], order.event_id)
    assert sent["Message-ID"] == f"<{event.email_id}@orderflow>"
