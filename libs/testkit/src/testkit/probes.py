"""What a service has committed, read from its database, and what its consumer counted."""

from typing import Any

import asyncpg
import httpx

from contracts import Event


async def fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def handled(database_url: str, event: Event) -> bool:
    """Whether the service has committed the event's effect (or its absence)."""
    found = await fetch(
        database_url, "SELECT 1 FROM processed_messages WHERE event_id = $1", event.event_id
    )
    return bool(found)


async def published_about(database_url: str, order_id: Any) -> list[str]:
    """Routing keys of every event the service wrote to its outbox about the order, in order."""
    rows = await fetch(
        database_url,
        "SELECT routing_key FROM outbox WHERE payload->>'order_id' = $1 ORDER BY id",
        str(order_id),
    )
    return [row["routing_key"] for row in rows]


async def consumer_stats(client: httpx.AsyncClient) -> dict[str, int]:
    """What the service's consumer did since it started, as its readiness reports it."""
    return (await client.get("/health/ready")).json()["messages"]


async def consumer_saw_duplicates(client: httpx.AsyncClient, count: int) -> dict[str, int] | None:
    """The consumer's counters once it has recognised `count` duplicates, else None."""
    stats = await consumer_stats(client)
    return stats if stats["duplicates"] >= count else None
