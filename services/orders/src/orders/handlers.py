"""Orders use cases, called by the HTTP and AMQP entrypoints."""

import logging
from collections.abc import Sequence
from uuid import UUID, uuid4

import asyncpg

from contracts import (
    OrderConfirmationSentV1,
    OrderCreatedV1,
    OrderLineV1,
    ShipmentCreatedV1,
    ShippingAddress,
    StockRejectedV1,
    StockReservedV1,
)
from servicekit.consumer import PermanentFailure
from servicekit.outbox import add_to_outbox

from .adapters import repository
from .domain.order import OrderStatus, order_total, status_after

SERVICE = "orders"
log = logging.getLogger(__name__)


async def place_order(
    pool: asyncpg.Pool,
    *,
    customer_email: str,
    lines: Sequence[OrderLineV1],
    currency: str,
    shipping_address: ShippingAddress,
    correlation_id: UUID | None = None,
) -> OrderCreatedV1:
    """Store a pending order and its `order.created` event in one transaction."""
    event = OrderCreatedV1(
        order_id=uuid4(),
        customer_email=customer_email,
        lines=tuple(lines),
        total=order_total(lines),
        currency=currency,
        shipping_address=shipping_address,
        correlation_id=correlation_id or uuid4(),
        producer=SERVICE,
    )
    async with pool.acquire() as conn, conn.transaction():
        await repository.insert_order(conn, event)
        await repository.append_history(conn, event.order_id, event)
        await add_to_outbox(conn, event)
    log.info("order %s placed; event %s in the outbox", event.order_id, event.event_id)
    return event


async def apply_stock_outcome(
    conn: asyncpg.Connection, event: StockReservedV1 | StockRejectedV1
) -> None:
    """Confirm or reject a pending order; a stale outcome is recorded but moves nothing."""
    current = await _lock_known_order(conn, event.order_id)
    await repository.append_history(conn, event.order_id, event)
    new = status_after(current, event.event_type)
    if new == current:
        log.info("order %s stays %s on %s", event.order_id, current, event.event_type)
        return
    await repository.set_status(conn, event.order_id, new)
    log.info("order %s: %s -> %s", event.order_id, current, new)


async def record_in_history(
    conn: asyncpg.Connection, event: ShipmentCreatedV1 | OrderConfirmationSentV1
) -> None:
    await _lock_known_order(conn, event.order_id)
    await repository.append_history(conn, event.order_id, event)


async def _lock_known_order(conn: asyncpg.Connection, order_id: UUID) -> OrderStatus:
    status = await repository.lock_status(conn, order_id)
    if status is None:
        raise PermanentFailure(f"order {order_id} is unknown to the orders service")
    return status
