"""Transactional outbox: write events with the state change, publish them afterwards.

`add_to_outbox` runs inside the caller's transaction, so an event exists if and only if the
change that caused it committed. `OutboxRelay` publishes pending rows in batches, each
message persistent, mandatory and confirmed, and marks a row sent only after its confirm.
A crash between confirm and mark publishes that row again: consumers are idempotent.

The writer wakes the relay in-process once its transaction has committed (`wake`): the
consumer after a commit that wrote events (`tracking_writes` tells), the HTTP app after a
write request. A PostgreSQL NOTIFY would do the same across processes, but it takes a lock
that serialises every commit in the cluster; rows written by other replicas or by a timer are
found by the relay's poll instead.

A row the broker refuses (returned as unroutable, or nacked) is retried on its own backoff
so it never holds up the others; when the broker cannot be reached, the relay backs off.

Marking a row published leaves a dead entry in the index of unpublished rows until a vacuum
removes it, and a scan from the index's start steps over every one. So a round looks only
at rows due since shortly before the last sweep, which reads the whole index once a
`sweep_interval`: the cost of a round stays the same whatever the history, and a row
written by a transaction older than the margin, or left unpublished through a long outage,
waits at most until the next sweep.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from aiormq.exceptions import DeliveryError
from faststream.rabbit import RabbitBroker

from contracts import Event

from .telemetry import continued_from, outbox_headers
from .topology import EVENTS_EXCHANGE

log = logging.getLogger(__name__)

SWEEP_MARGIN = timedelta(seconds=60)
"""How long before a sweep the rows of the rounds after it may have been written: longer
than any transaction that writes to the outbox should last."""

EVERY_ROW = datetime(1970, 1, 1, tzinfo=UTC)

PENDING_ROWS = """
    SELECT id, event_id, routing_key, payload::text AS body,
           payload->>'correlation_id' AS correlation_id, headers FROM outbox
    WHERE published_at IS NULL AND next_attempt_at <= now() AND next_attempt_at >= $2
    ORDER BY id LIMIT $1
    FOR UPDATE SKIP LOCKED"""
"""Rows due, and due since $2: the lower bound keeps the scan off the dead entries that
published rows leave in the index."""

_writes: ContextVar[list[bool] | None] = ContextVar("outbox_writes", default=None)


@contextlib.contextmanager
def tracking_writes() -> Iterator[Callable[[], bool]]:
    """Within the block, `add_to_outbox` is noted: the yielded callable says whether any row
    was written, so a committed transaction that wrote none needs no relay round."""
    wrote = [False]
    token = _writes.set(wrote)
    try:
        yield lambda: wrote[0]
    finally:
        _writes.reset(token)


OutboxRow = tuple[UUID, str, str, str]
"""event_id, routing_key, and the payload and headers as JSON text."""

INSERT_ROWS = """
    INSERT INTO outbox (event_id, routing_key, payload, headers)
    SELECT event_id, routing_key, payload::jsonb, headers::jsonb
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
         AS row (event_id, routing_key, payload, headers)"""


@dataclass
class _Staging:
    conn: asyncpg.Connection
    rows: list[OutboxRow] = field(default_factory=list)


_staging: ContextVar[_Staging | None] = ContextVar("outbox_staging", default=None)


@contextlib.asynccontextmanager
async def staged(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Within the block, `add_to_outbox` on `conn` keeps its rows, and they are written in
    one statement when the block ends without an error, still inside the transaction: a
    batch of messages writes its events in one round trip, not one each."""
    staging = _Staging(conn)
    token = _staging.set(staging)
    try:
        yield
    finally:
        _staging.reset(token)
    await _insert(conn, staging.rows)


async def add_to_outbox(
    conn: asyncpg.Connection, event: Event, headers: dict[str, Any] | None = None
) -> None:
    """Queue `event` for publishing; call inside the transaction that changes state. The
    row keeps the current trace context, which its publish continues."""
    row = (
        event.event_id,
        event.routing_key(),
        event.model_dump_json(),
        json.dumps(outbox_headers(headers)),
    )
    if (staging := _staging.get()) is not None and staging.conn is conn:
        staging.rows.append(row)
    else:
        await _insert(conn, [row])
    if (wrote := _writes.get()) is not None:
        wrote[0] = True


async def _insert(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
    if rows:
        await conn.execute(INSERT_ROWS, *(list(column) for column in zip(*rows, strict=True)))


async def count_unpublished(conn: asyncpg.Connection) -> int:
    """Events written and not yet published: the relay's backlog, refused rows included."""
    count, _ = await unpublished_backlog(conn)
    return count


async def unpublished_backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """The relay's backlog (refused rows included) and the age in seconds of its oldest row
    (0 when there is none): how far behind publishing is."""
    row = await conn.fetchrow(
        """SELECT count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest
           FROM outbox WHERE published_at IS NULL"""
    )
    return row["pending"], float(row["oldest"] or 0)


class OutboxRelay:
    """Publishes outbox rows until stopped; survives broker and database outages."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        broker: RabbitBroker,
        *,
        batch_size: int,
        poll_interval: float,
        confirm_timeout: float,
        sweep_interval: float = 60.0,
        max_backoff: float = 5.0,
        on_published: Callable[[int, int], None] = lambda published, refused: None,
    ) -> None:
        """`on_published(published, refused)` is told each batch's counts (for metrics)."""
        self._pool = pool
        self._broker = broker
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._confirm_timeout = confirm_timeout
        self._max_backoff = max_backoff
        self._sweep_interval = sweep_interval
        self._on_published = on_published
        self._next_sweep = 0.0  # monotonic; the first round sweeps
        self._due_since = EVERY_ROW
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            self._wake.clear()  # a wake from here on means rows this round may not see
            try:
                await self.publish_pending()
                backoff = 0.1
                await self._sleep(self._poll_interval)
            except Exception as exc:  # noqa: BLE001 - an outage: log, back off, try again
                log.warning(
                    "outbox relay: %s: %s; retrying in %.1fs", type(exc).__name__, exc, backoff
                )
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    def wake(self) -> None:
        """Rows have just committed: publish them now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def publish_pending(self) -> None:
        """Publish batches until one is not full: every row due, on a sweep; else those due
        since shortly before the last sweep."""
        sweeping = time.monotonic() >= self._next_sweep
        if sweeping:
            async with self._pool().acquire() as conn:
                swept_from = await conn.fetchval("SELECT now() - $1::interval", SWEEP_MARGIN)
        due_since = EVERY_ROW if sweeping else self._due_since
        while await self.publish_batch(due_since) == self._batch_size:
            pass  # a full batch means more may be waiting
        if sweeping:
            self._due_since = swept_from
            self._next_sweep = time.monotonic() + self._sweep_interval

    async def publish_batch(self, due_since: datetime = EVERY_ROW) -> int:
        """Publish up to one batch of the rows due since `due_since`; return how many rows
        were marked published."""
        async with self._pool().acquire() as conn, conn.transaction():
            rows = await conn.fetch(PENDING_ROWS, self._batch_size, due_since)
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            published = [
                row["id"] for row, result in zip(rows, results, strict=True) if result is None
            ]
            refused = [
                (row, r)
                for row, r in zip(rows, results, strict=True)
                if isinstance(r, DeliveryError)
            ]
            if published:
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY($1)", published
                )
            if refused:
                await self._retry_later(conn, refused)
        self._on_published(len(published), len(refused))
        for row, error in zip(rows, results, strict=True):
            if error is None:
                log.debug("event %s (%s) published", row["event_id"], row["routing_key"])
            else:
                log.warning(
                    "event %s (%s) not published: %r", row["event_id"], row["routing_key"], error
                )
        if unreachable := [
            r for r in results if r is not None and not isinstance(r, DeliveryError)
        ]:
            raise unreachable[0]
        return len(rows)

    async def _retry_later(
        self, conn: asyncpg.Connection, failures: list[tuple[asyncpg.Record, BaseException]]
    ) -> None:
        await conn.executemany(
            """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                   next_attempt_at = now() + least(interval '1 second' * power(2, attempts),
                                                   interval '60 seconds')
               WHERE id = $1""",
            [(row["id"], repr(error)[:1000]) for row, error in failures],
        )

    async def _publish(self, row: asyncpg.Record) -> None:
        """Publish the row's payload as PostgreSQL renders it: JSON text, never decoded and
        encoded again here; in the trace of the transaction that wrote it."""
        with continued_from(row["headers"]):
            await self._broker.publish(
                row["body"].encode(),
                exchange=EVENTS_EXCHANGE,
                routing_key=row["routing_key"],
                persist=True,
                mandatory=True,
                message_id=str(row["event_id"]),
                correlation_id=row["correlation_id"],
                message_type=row["routing_key"],
                content_type="application/json",
                headers=row["headers"],
                timeout=self._confirm_timeout,
            )

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken or `seconds` have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
