"""Email use cases, called by the AMQP and HTTP entrypoints.

Each email goes out inside the consumer's transaction, after its record is written: if
sending fails, nothing is recorded and the event is retried. The one window for a second
copy is a failed commit (or a crash) after a successful send, and the resend carries the
same Message-ID. The email service publishes no event: what it sent is in its own API.
"""

import logging
from collections.abc import Callable
from typing import Protocol

import asyncpg

from contracts import (
    OrderCancelledV1,
    OrderConfirmedV1,
    OrderCreatedV2,
    OrderRejectedV1,
    OrderShippedV1,
)
from servicekit.consumer import OutOfOrder

from .adapters import repository
from .domain.emails import (
    CustomerOrder,
    OutgoingEmail,
    is_superseded,
    order_cancellation,
    order_confirmation,
    order_rejection,
    shipment_dispatched,
)

SERVICE = "email"
log = logging.getLogger(__name__)

OrderEvent = OrderConfirmedV1 | OrderRejectedV1 | OrderShippedV1 | OrderCancelledV1


class Sender(Protocol):
    async def send(self, email: OutgoingEmail) -> None: ...


async def remember_order(conn: asyncpg.Connection, event: OrderCreatedV2) -> None:
    """Keep who ordered what: every later email about the order needs it."""
    await repository.remember_order(conn, CustomerOrder.from_event(event))


async def send_confirmation(
    conn: asyncpg.Connection, event: OrderConfirmedV1, sender: Sender
) -> None:
    if email := await _record(conn, event, lambda order: order_confirmation(order, event.event_id)):
        await _send(sender, email)


async def send_rejection(conn: asyncpg.Connection, event: OrderRejectedV1, sender: Sender) -> None:
    if email := await _record(
        conn, event, lambda order: order_rejection(order, event.short_items, event.event_id)
    ):
        await _send(sender, email)


async def send_dispatch_notice(
    conn: asyncpg.Connection, event: OrderShippedV1, sender: Sender
) -> None:
    if email := await _record(
        conn, event, lambda order: shipment_dispatched(order, event.tracking_number, event.event_id)
    ):
        await _send(sender, email)


async def send_cancellation(
    conn: asyncpg.Connection, event: OrderCancelledV1, sender: Sender
) -> None:
    if email := await _record(
        conn, event, lambda order: order_cancellation(order, event.reason, event.event_id)
    ):
        await _send(sender, email)


async def _record(
    conn: asyncpg.Connection, event: OrderEvent, compose: Callable[[CustomerOrder], OutgoingEmail]
) -> OutgoingEmail | None:
    """Compose and record the email `event` calls for; None when it is no longer worth it."""
    order = await repository.lock_order(conn, event.order_id)
    if order is None:
        raise OutOfOrder(f"order {event.order_id} unknown: its order.created is still on its way")
    email = compose(order)
    if is_superseded(email.kind, await repository.kinds_sent(conn, event.order_id)):
        log.info("order %s: %s skipped, superseded", event.order_id, email.kind)
        return None
    await repository.record_sent(conn, email)
    return email


async def _send(sender: Sender, email: OutgoingEmail) -> None:
    await sender.send(email)
    log.info(
        "order %s: %s %s sent to %s", email.order_id, email.kind, email.message_id, email.recipient
    )
