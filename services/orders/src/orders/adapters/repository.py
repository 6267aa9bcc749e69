"""Orders and their history in PostgreSQL."""

from typing import Any
from uuid import UUID

import asyncpg

from contracts import Event, OrderCreatedV1

from ..domain.order import OrderStatus


async def insert_order(conn: asyncpg.Connection, event: OrderCreatedV1) -> None:
    await conn.execute(
        """INSERT INTO orders (order_id, customer_email, lines, total, currency,
                               shipping_address, status, correlation_id, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)""",
        event.order_id,
        event.customer_email,
        [line.model_dump(mode="json") for line in event.lines],
        event.total,
        event.currency,
        event.shipping_address.model_dump(mode="json"),
        OrderStatus.PENDING.value,
        event.correlation_id,
        event.occurred_at,
    )


async def lock_status(conn: asyncpg.Connection, order_id: UUID) -> OrderStatus | None:
    status = await conn.fetchval(
        "SELECT status FROM orders WHERE order_id = $1 FOR UPDATE", order_id
    )
    return None if status is None else OrderStatus(status)


async def set_status(conn: asyncpg.Connection, order_id: UUID, status: OrderStatus) -> None:
    await conn.execute(
        "UPDATE orders SET status = $2, updated_at = now() WHERE order_id = $1",
        order_id,
        status.value,
    )


async def append_history(conn: asyncpg.Connection, order_id: UUID, event: Event) -> None:
    await conn.execute(
        """INSERT INTO order_history (event_id, order_id, event_type, producer, occurred_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING""",
        event.event_id,
        order_id,
        event.routing_key(),
        event.producer,
        event.occurred_at,
    )


async def fetch_order(conn: asyncpg.Connection, order_id: UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT order_id, customer_email, lines, total, currency, shipping_address, status,
                  created_at, updated_at
           FROM orders WHERE order_id = $1""",
        order_id,
    )
    if row is None:
        return None
    history = await conn.fetch(
        """SELECT event_type, producer, occurred_at FROM order_history
           WHERE order_id = $1 ORDER BY occurred_at, recorded_at""",
        order_id,
    )
    return {**dict(row), "history": [dict(h) for h in history]}
