"""Stock levels and reservations in PostgreSQL."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

import asyncpg

from servicekit.db import values_by_order

from ..domain.reservation import ReservationDecision, ReservationStatus


async def set_available(conn: asyncpg.Connection, sku: str, available: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        """INSERT INTO stock (sku, available) VALUES ($1, $2)
           ON CONFLICT (sku) DO UPDATE SET available = $2, updated_at = now()
           RETURNING sku, available, reserved""",
        sku,
        available,
    )
    return dict(row)


async def fetch_stock(conn: asyncpg.Connection, sku: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT sku, available, reserved FROM stock WHERE sku = $1", sku)
    return None if row is None else dict(row)


async def lock_available(conn: asyncpg.Connection, skus: Iterable[str]) -> dict[str, int]:
    """Available quantity of each known SKU, its row locked until the transaction ends."""
    rows = await conn.fetch(
        "SELECT sku, available FROM stock WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
        list(skus),
    )
    return {row["sku"]: row["available"] for row in rows}


async def reserve(conn: asyncpg.Connection, quantities: Mapping[str, int]) -> None:
    await conn.executemany(
        """UPDATE stock SET available = available - $2, reserved = reserved + $2,
                            updated_at = now()
           WHERE sku = $1""",
        list(quantities.items()),
    )


async def release(conn: asyncpg.Connection, quantities: Mapping[str, int]) -> None:
    await conn.executemany(
        """UPDATE stock SET available = available + $2, reserved = reserved - $2,
                            updated_at = now()
           WHERE sku = $1""",
        sorted(quantities.items()),
    )


async def remove_reserved(conn: asyncpg.Connection, quantities: Mapping[str, int]) -> None:
    await conn.executemany(
        "UPDATE stock SET reserved = reserved - $2, updated_at = now() WHERE sku = $1",
        sorted(quantities.items()),
    )


async def lock_reservation(conn: asyncpg.Connection, order_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT status, lines FROM reservations WHERE order_id = $1 FOR UPDATE", order_id
    )


async def set_reservation_status(
    conn: asyncpg.Connection, order_id: UUID, status: ReservationStatus
) -> None:
    await conn.execute(
        "UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1",
        order_id,
        status.value,
    )


async def insert_reservation(
    conn: asyncpg.Connection, order_id: UUID, decision: ReservationDecision
) -> None:
    await conn.execute(
        """INSERT INTO reservations (order_id, status, lines, rejected_lines)
           VALUES ($1, $2, $3, $4)""",
        order_id,
        decision.status.value,
        [{"sku": sku, "quantity": qty} for sku, qty in decision.requested.items()],
        [vars(shortfall) for shortfall in decision.shortfalls],
    )


async def fetch_reservation(conn: asyncpg.Connection, order_id: UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT order_id, status, lines, rejected_lines, created_at, updated_at
           FROM reservations WHERE order_id = $1""",
        order_id,
    )
    return None if row is None else dict(row)


async def reservation_statuses(
    conn: asyncpg.Connection, order_ids: Sequence[UUID]
) -> dict[UUID, list[str]]:
    """The status of each reservation of each order ([] for an order with none)."""
    query = "SELECT order_id, status FROM reservations WHERE order_id = ANY($1::uuid[])"
    return await values_by_order(conn, query, order_ids)
