"""Orders, their history and idempotency keys in PostgreSQL."""

from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from contracts import Event, OrderCreatedV2
from contracts.api import Page
from servicekit.db import page_start
from servicekit.retention import RetentionRule

from ..domain.order import OrderStatus


async def insert_orders(conn: asyncpg.Connection, events: Sequence[OrderCreatedV2]) -> None:
    """One pending order per event, in one round trip."""
    await conn.executemany(
        """INSERT INTO orders (order_id, customer_name, customer_email, lines, total, currency,
                               shipping_address, status, correlation_id, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)""",
        [
            (
                event.order_id,
                event.customer.name,
                event.customer.email,
                [line.model_dump(mode="json") for line in event.lines],
                event.total.amount,
                event.total.currency,
                event.shipping_address.model_dump(mode="json"),
                OrderStatus.PENDING.value,
                event.correlation_id,
                event.occurred_at,
            )
            for event in events
        ],
    )


async def lock_order(conn: asyncpg.Connection, order_id: UUID) -> asyncpg.Record | None:
    """The order's status and correlation id, its row locked until the transaction ends."""
    return await conn.fetchrow(
        "SELECT status, correlation_id FROM orders WHERE order_id = $1 FOR UPDATE", order_id
    )


async def set_status(
    conn: asyncpg.Connection,
    order_id: UUID,
    status: OrderStatus,
    shipment_id: UUID | None = None,
    tracking_number: str | None = None,
) -> None:
    await conn.execute(
        """UPDATE orders SET status = $2, updated_at = now(),
                             shipment_id = coalesce($3, shipment_id),
                             tracking_number = coalesce($4, tracking_number)
           WHERE order_id = $1""",
        order_id,
        status.value,
        shipment_id,
        tracking_number,
    )


HistoryEntry = tuple[UUID, Event, OrderStatus | None]
"""The order, the event about it, and the status it left the order in (None: unchanged)."""


async def append_history(
    conn: asyncpg.Connection,
    order_id: UUID,
    event: Event,
    status_after: OrderStatus | None,
    note: str | None = None,
) -> None:
    await append_histories(conn, [(order_id, event, status_after)], note)


async def append_histories(
    conn: asyncpg.Connection, entries: Sequence[HistoryEntry], note: str | None = None
) -> None:
    """Each entry in the orders' histories, in one round trip; an event already there is
    not added again."""
    await conn.executemany(
        """INSERT INTO order_history
               (event_id, order_id, event_type, producer, occurred_at, status_after, note)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING""",
        [
            (
                event.event_id,
                order_id,
                event.routing_key(),
                event.producer,
                event.occurred_at,
                status_after and status_after.value,
                note,
            )
            for order_id, event, status_after in entries
        ],
    )


async def fetch_order(conn: asyncpg.Connection, order_id: UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT order_id, customer_name, customer_email, lines, total, currency,
                  shipping_address, status, shipment_id, tracking_number, created_at, updated_at
           FROM orders WHERE order_id = $1""",
        order_id,
    )
    if row is None:
        return None
    history = [
        dict(h)
        for h in await conn.fetch(
            """SELECT event_id, event_type, producer, occurred_at, status_after, note
               FROM order_history WHERE order_id = $1 ORDER BY occurred_at, recorded_at""",
            order_id,
        )
    ]
    timeline = [
        {
            "status": h["status_after"],
            "event_type": h["event_type"],
            "producer": h["producer"],
            "at": h["occurred_at"],
        }
        for h in history
        if h["status_after"] is not None
    ]
    return {**dict(row), "timeline": timeline, "history": history}


async def fetch_status(conn: asyncpg.Connection, order_id: UUID) -> asyncpg.Record | None:
    """The order's status and when it was set (`updated_at`)."""
    return await conn.fetchrow(
        "SELECT status, updated_at FROM orders WHERE order_id = $1", order_id
    )


ORDER_SORT_KEY = "SELECT created_at, order_id FROM orders WHERE order_id = $1"
"""Where a page of the orders starts: they are paged by when placed, then by id."""


async def list_orders(conn: asyncpg.Connection, page: Page) -> list[asyncpg.Record] | None:
    """A page of the orders, newest first (by when placed, then by id); None when
    `page.after` is no order's id."""
    after = await page_start(conn, page, ORDER_SORT_KEY)
    if after is None:
        return None
    return await conn.fetch(
        """SELECT order_id, status, customer_name, total, currency, created_at, updated_at
           FROM orders
           WHERE $1::timestamptz IS NULL OR (created_at, order_id) < ($1, $2::uuid)
           ORDER BY created_at DESC, order_id DESC LIMIT $3""",
        *after,
        page.limit,
    )


AUDITED = f"""SELECT order_id, status, EXISTS (
                     SELECT 1 FROM order_history AS h
                     WHERE h.order_id = o.order_id AND h.status_after = '{OrderStatus.CONFIRMED}'
                 ) AS was_confirmed
             FROM orders AS o"""
"""Each order's (order_id, status, was_confirmed). Confirmed once: its history has an event
that moved it to confirmed."""


async def audit_order(conn: asyncpg.Connection, order_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(f"{AUDITED} WHERE order_id = $1", order_id)


async def audit_orders(conn: asyncpg.Connection, page: Page) -> list[asyncpg.Record] | None:
    """A page of the orders, oldest first (by when placed, then by id); None when
    `page.after` is no order's id."""
    after = await page_start(conn, page, ORDER_SORT_KEY)
    if after is None:
        return None
    return await conn.fetch(
        f"""{AUDITED} WHERE $1::timestamptz IS NULL OR (created_at, order_id) > ($1, $2::uuid)
            ORDER BY created_at, order_id LIMIT $3""",
        *after,
        page.limit,
    )


def expired_idempotency_keys(retention: timedelta) -> RetentionRule:
    """Keys older than `retention`, which `find_idempotency_keys` no longer finds."""
    return RetentionRule("idempotency_keys", "created_at", retention)


async def find_idempotency_keys(
    conn: asyncpg.Connection, keys: Collection[str], retention: timedelta
) -> dict[str, tuple[str, UUID, str]]:
    """Each of `keys` used within `retention`: the request fingerprint it was first used
    with, and the order that request placed (its id, and the status placing it left the
    order in)."""
    rows = await conn.fetch(
        """SELECT key, request_hash, order_id, status FROM idempotency_keys
           WHERE key = ANY($1) AND created_at >= now() - $2::interval""",
        list(keys),
        retention,
    )
    return {row["key"]: (row["request_hash"], row["order_id"], row["status"]) for row in rows}


async def insert_idempotency_keys(
    conn: asyncpg.Connection,
    keys: Sequence[tuple[str, str, UUID, OrderStatus]],
    retention: timedelta,
) -> None:
    """(key, request fingerprint, order id, status) for each key; a key older than
    `retention` that the retention job has not deleted yet is replaced."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE key = ANY($1) AND created_at < now() - $2::interval",
        [key for key, *_ in keys],
        retention,
    )
    await conn.executemany(
        """INSERT INTO idempotency_keys (key, request_hash, order_id, status)
           VALUES ($1, $2, $3, $4)""",
        [
            (key, request_hash, order_id, status.value)
            for key, request_hash, order_id, status in keys
        ],
    )
