"""Shipments in PostgreSQL."""

from typing import Any
from uuid import UUID

import asyncpg

from ..domain.shipment import Shipment


async def insert_shipment(conn: asyncpg.Connection, shipment: Shipment) -> None:
    await conn.execute(
        """INSERT INTO shipments (shipment_id, order_id, status, shipping_address, lines)
           VALUES ($1, $2, $3, $4, $5)""",
        shipment.shipment_id,
        shipment.order_id,
        shipment.status.value,
        shipment.shipping_address.model_dump(mode="json"),
        [{"sku": sku, "quantity": qty} for sku, qty in shipment.lines],
    )


async def list_shipments(conn: asyncpg.Connection, order_id: UUID | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT shipment_id, order_id, status, shipping_address, lines, created_at
           FROM shipments WHERE $1::uuid IS NULL OR order_id = $1
           ORDER BY created_at DESC LIMIT 100""",
        order_id,
    )
    return [dict(row) for row in rows]
