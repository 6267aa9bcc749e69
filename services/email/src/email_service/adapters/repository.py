"""What email knows of orders, and the emails sent, in PostgreSQL."""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from contracts.api import Page
from servicekit.db import page_start, values_by_order

from ..domain.emails import CustomerOrder, OutgoingEmail


async def remember_order(conn: asyncpg.Connection, order: CustomerOrder) -> None:
    await conn.execute(
        """INSERT INTO customer_orders (order_id, customer_name, customer_email, lines, total,
                                        currency, shipping_address)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING""",
        order.order_id,
        order.customer_name,
        order.customer_email,
        list(order.lines),
        order.total,
        order.currency,
        order.shipping_address,
    )


async def lock_order(conn: asyncpg.Connection, order_id: UUID) -> CustomerOrder | None:
    """The order, locked so that two emails about it are decided one after the other."""
    row = await conn.fetchrow(
        """SELECT order_id, customer_name, customer_email, lines, total, currency,
                  shipping_address
           FROM customer_orders WHERE order_id = $1 FOR UPDATE""",
        order_id,
    )
    return None if row is None else CustomerOrder(**dict(row))


async def kinds_sent(conn: asyncpg.Connection, order_id: UUID) -> list[str]:
    return [
        r["kind"] for r in await conn.fetch("SELECT kind FROM emails WHERE order_id = $1", order_id)
    ]


async def record_sent(conn: asyncpg.Connection, email: OutgoingEmail) -> None:
    await conn.execute(
        """INSERT INTO emails (email_id, order_id, recipient, subject, kind, status, message_id)
           VALUES ($1, $2, $3, $4, $5, 'sent', $6)""",
        email.email_id,
        email.order_id,
        email.recipient,
        email.subject,
        email.kind.value,
        email.message_id,
    )


async def list_emails(
    conn: asyncpg.Connection, order_id: UUID | None, page: Page
) -> list[dict[str, Any]] | None:
    """A page of the emails (about `order_id`, if given), newest first; None when
    `page.after` is no email's id."""
    after = await page_start(conn, page, "SELECT sent_at, email_id FROM emails WHERE email_id = $1")
    if after is None:
        return None
    rows = await conn.fetch(
        """SELECT email_id, order_id, recipient AS "to", subject, kind, status, sent_at
           FROM emails
           WHERE ($1::uuid IS NULL OR order_id = $1)
             AND ($2::timestamptz IS NULL OR (sent_at, email_id) < ($2, $3::uuid))
           ORDER BY sent_at DESC, email_id DESC LIMIT $4""",
        order_id,
        *after,
        page.limit,
    )
    return [dict(row) for row in rows]


async def kinds_sent_by_order(
    conn: asyncpg.Connection, order_ids: Sequence[UUID]
) -> dict[UUID, list[str]]:
    """The kind of each email sent about each order ([] for an order with none)."""
    query = "SELECT order_id, kind FROM emails WHERE order_id = ANY($1::uuid[])"
    return await values_by_order(conn, query, order_ids)
