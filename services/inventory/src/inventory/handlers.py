"""Inventory use cases, called by the HTTP and AMQP entrypoints."""

import logging
from typing import Any

import asyncpg

from contracts import (
    AvailabilityQueryV1,
    AvailabilityV1,
    OrderCancelledV1,
    OrderCreatedV2,
    OrderShippedV1,
    RejectedLineV1,
    ReservedLineV1,
    StockRejectedV1,
    StockReleasedV1,
    StockReservedV1,
)
from servicekit.consumer import OutOfOrder
from servicekit.outbox import add_to_outbox

from .adapters import repository
from .domain.reservation import ReservationStatus, decide, requested_quantities

SERVICE = "inventory"
log = logging.getLogger(__name__)


async def set_stock(pool: asyncpg.Pool, sku: str, available: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        return await repository.set_available(conn, sku, available)


async def availability(pool: asyncpg.Pool, query: AvailabilityQueryV1) -> AvailabilityV1:
    """Answer a request-reply availability query from the current stock."""
    async with pool.acquire() as conn:
        stock = await repository.fetch_stock(conn, query.sku)
    if stock is None:
        return AvailabilityV1(sku=query.sku, stocked=False, available=0, reserved=0)
    return AvailabilityV1(stocked=True, **stock)


async def reserve_stock(conn: asyncpg.Connection, event: OrderCreatedV2) -> None:
    """Reserve every line of the order or none, and say which through the outbox."""
    requested = requested_quantities(event.lines)
    decision = decide(requested, await repository.lock_available(conn, requested))
    await repository.insert_reservation(conn, event.order_id, decision)
    if decision.accepted:
        await repository.reserve(conn, requested)
        outcome = StockReservedV1.caused_by(
            event,
            producer=SERVICE,
            order_id=event.order_id,
            lines=[ReservedLineV1(sku=sku, quantity=qty) for sku, qty in requested.items()],
        )
    else:
        outcome = StockRejectedV1.caused_by(
            event,
            producer=SERVICE,
            order_id=event.order_id,
            rejected_lines=[RejectedLineV1(**vars(s)) for s in decision.shortfalls],
        )
    await add_to_outbox(conn, outcome)
    log.info("order %s: stock %s", event.order_id, decision.status)


async def release_stock(conn: asyncpg.Connection, event: OrderCancelledV1) -> None:
    """Compensate a cancelled order: what it reserved is available again."""
    lines = await _settle_reservation(conn, event, ReservationStatus.RELEASED)
    if lines:
        await repository.release(conn, lines)
        await add_to_outbox(
            conn,
            StockReleasedV1.caused_by(
                event,
                producer=SERVICE,
                order_id=event.order_id,
                lines=[ReservedLineV1(sku=sku, quantity=qty) for sku, qty in lines.items()],
            ),
        )


async def fulfil_reservation(conn: asyncpg.Connection, event: OrderShippedV1) -> None:
    """The reserved units left the warehouse: they are no longer counted as reserved."""
    lines = await _settle_reservation(conn, event, ReservationStatus.FULFILLED)
    if lines:
        await repository.remove_reserved(conn, lines)


async def _settle_reservation(
    conn: asyncpg.Connection, event: OrderCancelledV1 | OrderShippedV1, outcome: ReservationStatus
) -> dict[str, int]:
    """Move the order's reservation from reserved to `outcome`; the quantities it held, or
    nothing when the order reserved nothing (rejected) or was settled already."""
    reservation = await repository.lock_reservation(conn, event.order_id)
    if reservation is None:
        raise OutOfOrder(f"order {event.order_id} has no reservation yet")
    if reservation["status"] != ReservationStatus.RESERVED:
        log.info(
            "order %s: reservation is %s; nothing to do", event.order_id, reservation["status"]
        )
        return {}
    await repository.set_reservation_status(conn, event.order_id, outcome)
    log.info("order %s: reservation %s", event.order_id, outcome)
    return {line["sku"]: line["quantity"] for line in reservation["lines"]}
