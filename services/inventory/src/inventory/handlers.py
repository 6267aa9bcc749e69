"""Inventory use cases, called by the HTTP and AMQP entrypoints."""

import logging
from typing import Any

import asyncpg

from contracts import (
    OrderCreatedV1,
    RejectedLineV1,
    ReservedLineV1,
    StockRejectedV1,
    StockReservedV1,
)
from servicekit.outbox import add_to_outbox

from .adapters import repository
from .domain.reservation import decide, requested_quantities

SERVICE = "inventory"
log = logging.getLogger(__name__)


async def set_stock(pool: asyncpg.Pool, sku: str, available: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        return await repository.set_available(conn, sku, available)


async def reserve_stock(conn: asyncpg.Connection, event: OrderCreatedV1) -> None:
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
    log.info("order %s: stock %s", event.order_id, "reserved" if decision.accepted else "rejected")
