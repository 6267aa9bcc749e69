"""Email use cases, called by the AMQP and HTTP entrypoints."""

import logging
from typing import Protocol

import asyncpg

from contracts import OrderConfirmationSentV1, OrderCreatedV1
from servicekit.outbox import add_to_outbox

from .adapters import repository
from .domain.messages import OutgoingEmail, order_confirmation

SERVICE = "email"
log = logging.getLogger(__name__)


class Sender(Protocol):
    async def send(self, email: OutgoingEmail) -> None: ...


async def send_order_confirmation(
    conn: asyncpg.Connection, event: OrderCreatedV1, sender: Sender
) -> None:
    """Send the confirmation inside the consumer's transaction.

    The SMTP server accepts the email before the record commits: if sending fails,
    nothing is recorded and the event is retried; the one window for a second copy is
    a failed commit (or a crash) after a successful send, and the resend carries the same
    Message-ID.
    """
    email = order_confirmation(event)
    await repository.record_sent(conn, email)
    await add_to_outbox(
        conn,
        OrderConfirmationSentV1.caused_by(
            event,
            producer=SERVICE,
            order_id=event.order_id,
            email_id=email.email_id,
            recipient=email.recipient,
        ),
    )
    await sender.send(email)
    log.info(
        "order %s: confirmation %s sent to %s", event.order_id, email.message_id, email.recipient
    )
