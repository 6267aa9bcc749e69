"""Shipments in PostgreSQL."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from contracts.api import Page
from servicekit.db import page_start, values_by_order

from ..domain.shipment import Shipment, ShipmentStatus

COLUMNS = """shipment_id, order_id, correlation_id, ready_event_id, status, shipping_address,
             lines, dispatch_after, dispatched_at, tracking_number, cancel_reason, created_at,
             updated_at"""


async def insert_shipment(conn: asyncpg.Connection, shipment: Shipment) -> None:
    await conn.execute(
        """INSERT INTO shipments (shipment_id, order_id, correlation_id, status,
                                  shipping_address, lines)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        shipment.shipment_id,
        shipment.order_id,
        shipment.correlation_id,
        shipment.status.value,
        shipment.shipping_address.model_dump(mode="json"),
        [{"sku": sku, "quantity": qty} for sku, qty in shipment.lines],
    )


async def lock_for_order(conn: asyncpg.Connection, order_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM shipments WHERE order_id = $1 FOR UPDATE", order_id
    )


async def lock(conn: asyncpg.Connection, shipment_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM shipments WHERE shipment_id = $1 FOR UPDATE", shipment_id
    )


async def lock_due(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """Ready shipments whose handling delay is over, with the trace context that made each
    ready; replicas each take different ones."""
    return await conn.fetch(
        f"""SELECT {COLUMNS}, ready_trace FROM shipments
            WHERE status = 'ready' AND dispatch_after <= now()
            ORDER BY dispatch_after LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )


async def mark_ready(
    conn: asyncpg.Connection,
    shipment_id: UUID,
    ready_event_id: UUID,
    delay: timedelta,
    ready_trace: dict[str, str],
) -> None:
    await conn.execute(
        """UPDATE shipments SET status = $2, ready_event_id = $3, dispatch_after = now() + $4,
                                ready_trace = $5, updated_at = now()
           WHERE shipment_id = $1""",
        shipment_id,
        ShipmentStatus.READY.value,
        ready_event_id,
        delay,
        ready_trace,
    )


async def mark_dispatched(
    conn: asyncpg.Connection, shipment_id: UUID, tracking_number: str
) -> asyncpg.Record:
    return await conn.fetchrow(
        f"""UPDATE shipments SET status = $2, tracking_number = $3, dispatched_at = now(),
                                 updated_at = now()
            WHERE shipment_id = $1 RETURNING {COLUMNS}""",
        shipment_id,
        ShipmentStatus.DISPATCHED.value,
        tracking_number,
    )


async def mark_cancelled(conn: asyncpg.Connection, shipment_id: UUID, reason: str) -> None:
    await conn.execute(
        """UPDATE shipments SET status = $2, cancel_reason = $3, updated_at = now()
           WHERE shipment_id = $1""",
        shipment_id,
        ShipmentStatus.CANCELLED.value,
        reason,
    )


async def list_shipments(
    conn: asyncpg.Connection, order_id: UUID | None, page: Page
) -> list[dict[str, Any]] | None:
    """A page of the shipments (of `order_id`, if given), newest first; None when
    `page.after` is no shipment's id."""
    after = await page_start(
        conn, page, "SELECT created_at, shipment_id FROM shipments WHERE shipment_id = $1"
    )
    if after is None:
        return None
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM shipments
            WHERE ($1::uuid IS NULL OR order_id = $1)
              AND ($2::timestamptz IS NULL OR (created_at, shipment_id) < ($2, $3::uuid))
            ORDER BY created_at DESC, shipment_id DESC LIMIT $4""",
        order_id,
        *after,
        page.limit,
    )
    return [dict(row) for row in rows]


async def shipment_statuses(
    conn: asyncpg.Connection, order_ids: Sequence[UUID]
) -> dict[UUID, list[str]]:
    """The status of each shipment of each order ([] for an order with none)."""
    query = "SELECT order_id, status FROM shipments WHERE order_id = ANY($1::uuid[])"
    return await values_by_order(conn, query, order_ids)
