"""Sent emails in PostgreSQL."""

from typing import Any
from uuid import UUID

import asyncpg

from ..domain.messages import OutgoingEmail


async def record_sent(conn: asyncpg.Connection, email: OutgoingEmail) -> None:
    await conn.execute(
        """INSERT INTO emails (email_id, order_id, recipient, subject, kind, status, message_id)
           VALUES ($1, $2, $3, $4, $5, 'sent', $6)""",
        email.email_id,
        email.order_id,
        email.recipient,
        email.subject,
        email.kind,
        email.message_id,
    )


async def list_emails(conn: asyncpg.Connection, order_id: UUID | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT email_id, order_id, recipient AS "to", subject, kind, status, sent_at
           FROM emails WHERE $1::uuid IS NULL OR order_id = $1
           ORDER BY sent_at DESC LIMIT 100""",
        order_id,
    )
    return [dict(row) for row in rows]
