"""Transactional outbox: write events with the state change, publish them afterwards.

`add_to_outbox` runs inside the caller's transaction, so an event exists if and only if the
change that caused it committed. Rows are published persistent, mandatory and confirmed,
and a row is marked sent only after its confirm. A crash between confirm and mark publishes
that row again: consumers are idempotent.

Two paths publish, so that a row waits neither for a poll nor for a relay round:
- handed over: a writer that knows when it commits (the consumer, orders' placing) collects
  the rows it writes (`handing_over`) and hands them to the relay once committed
  (`OutboxRelay.hand_over`), which publishes them from memory and marks them in one
  statement: no transaction and no read of the outbox for them. Until `HANDOVER_GRACE` has
  passed such a row is not due for the relay's rounds, so they do not publish it a second
  time while it is on its way; a row the broker refuses or cannot take is made due at once,
  and the relay's rounds take it from there; a row whose writer crashed before publishing
  is published by a round once the grace is over, as is a row handed over while the
  relay's backlog of handed-over rows is full (`HANDOVER_BACKLOG_BATCHES`).
- relay rounds (`OutboxRelay.run`): every other row is due when written. A round reads the
  due rows, publishes them and marks them, in one transaction. The HTTP app wakes the relay
  after a write request that wrote such rows (`noting_writes` tells); rows written by other
  replicas or by a timer are found by the relay's poll. A PostgreSQL NOTIFY would wake it
  across processes, but it takes a lock that serialises every commit in the cluster.

A row the broker refuses (returned as unroutable, or nacked) is retried by the rounds on its
own backoff, so it never holds up the others; when the broker cannot be reached, the relay
backs off.

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

HANDOVER_GRACE = timedelta(seconds=5)
"""How long a row handed over to the relay is left to that path before the relay's rounds
take it as due: far longer than a publish and its confirm take."""

HANDOVER_BACKLOG_BATCHES = 10
"""Batches of handed-over rows the relay keeps waiting while one is being published; rows
handed over beyond them are left to its rounds, so memory stays bounded while the broker is
slow or down and orders are still accepted."""


@dataclass(frozen=True)
class RowToPublish:
    """An outbox row as the relay publishes it: the payload and headers as written."""

    id: int
    event_id: UUID
    routing_key: str
    body: str
    """The payload as JSON text."""
    correlation_id: str | None
    headers: dict[str, Any]


@dataclass
class _Writes:
    handing_over: bool
    rows: list[RowToPublish] = field(default_factory=list)
    due_now: bool = False
    """Rows were written that only the relay's rounds will publish."""


MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY($1)"

_writes: ContextVar[_Writes | None] = ContextVar("outbox_writes", default=None)


@contextlib.contextmanager
def handing_over() -> Iterator[list[RowToPublish]]:
    """Within the block, the rows `add_to_outbox` writes are collected into the yielded list
    and written due only after `HANDOVER_GRACE`: the caller passes the list to
    `OutboxRelay.hand_over` once their transaction has committed, and not if it rolled back.
    Rows written inside a savepoint belong in the list only once the savepoint is released:
    collect them in a block of their own and add them after."""
    writes = _Writes(handing_over=True)
    token = _writes.set(writes)
    try:
        yield writes.rows
    finally:
        _writes.reset(token)


@contextlib.contextmanager
def noting_writes() -> Iterator[Callable[[], bool]]:
    """Within the block, the yielded callable says whether rows were written that are due
    for the relay's rounds (not handed over), so a block that wrote none needs no round."""
    writes = _Writes(handing_over=False)
    token = _writes.set(writes)
    try:
        yield lambda: writes.due_now
    finally:
        _writes.reset(token)


OutboxRow = tuple[UUID, str, str, dict[str, Any], UUID]
"""event_id, routing_key, the payload as JSON text, the headers, and the correlation id."""

INSERT_ROWS = """
    INSERT INTO outbox (event_id, routing_key, payload, headers, next_attempt_at)
    SELECT event_id, routing_key, payload::jsonb, headers::jsonb, now() + $5::interval
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
         AS row (event_id, routing_key, payload, headers)
    RETURNING id, event_id, routing_key"""


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
        outbox_headers(headers),
        event.correlation_id,
    )
    if (staging := _staging.get()) is not None and staging.conn is conn:
        staging.rows.append(row)
    else:
        await _insert(conn, [row])


async def _insert(conn: asyncpg.Connection, rows: Sequence[OutboxRow]) -> None:
    if not rows:
        return
    writes = _writes.get()
    handing = writes is not None and writes.handing_over
    event_ids, routing_keys, bodies, headers, _ = zip(*rows, strict=True)
    inserted = await conn.fetch(
        INSERT_ROWS,
        event_ids,
        routing_keys,
        bodies,
        [json.dumps(h) for h in headers],
        HANDOVER_GRACE if handing else timedelta(0),
    )
    if writes is None:
        return
    if not handing:
        writes.due_now = True
        return
    ids = {(r["event_id"], r["routing_key"]): r["id"] for r in inserted}
    writes.rows.extend(
        RowToPublish(ids[event_id, key], event_id, key, body, str(correlation_id), row_headers)
        for event_id, key, body, row_headers, correlation_id in rows
    )


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
        self._handed: list[RowToPublish] = []
        self._handing: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Relay rounds until stopped; then the rows handed over are published before it
        returns, while the broker is still connected."""
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
        if self._handing is not None:
            await self._handing

    def wake(self) -> None:
        """Rows have just committed: publish them now rather than at the next poll."""
        self._wake.set()

    def hand_over(self, rows: Sequence[RowToPublish]) -> None:
        """Rows written under `handing_over` whose transaction has just committed: publish
        them now, in the background, batches one at a time. None is taken once stopped,
        nor beyond `HANDOVER_BACKLOG_BATCHES` waiting: the relay's rounds publish those when
        they are due, in this process or the next."""
        room = HANDOVER_BACKLOG_BATCHES * self._batch_size - len(self._handed)
        if not rows or self._stopping.is_set() or room <= 0:
            return
        self._handed.extend(rows[:room])
        if self._handing is None:
            self._handing = asyncio.create_task(self._publish_handed(), name="outbox-handover")

    async def _publish_handed(self) -> None:
        try:
            while self._handed:
                batch = self._handed[: self._batch_size]
                del self._handed[: self._batch_size]
                await self._publish_handed_batch(batch)
        finally:
            self._handing = None

    async def _publish_handed_batch(self, rows: Sequence[RowToPublish]) -> None:
        """Publish the rows and mark those confirmed; the others are made due at once for
        the relay's rounds, which back off and count attempts as for any row."""
        results = await asyncio.gather(
            *(self._publish(row) for row in rows), return_exceptions=True
        )
        outcomes = list(zip(rows, results, strict=True))
        published = [row.id for row, result in outcomes if result is None]
        failed = [row.id for row, result in outcomes if result is not None]
        try:
            async with self._pool().acquire() as conn:
                if published:
                    await conn.execute(MARK_PUBLISHED, published)
                if failed:
                    await conn.execute(
                        "UPDATE outbox SET next_attempt_at = now() WHERE id = ANY($1)", failed
                    )
        except Exception as exc:  # noqa: BLE001 - the rounds take them once the grace is over
            log.warning(
                "outbox relay: cannot mark %d handed-over row(s) (%s: %s); the relay's rounds "
                "publish them once due",
                len(rows),
                type(exc).__name__,
                exc,
            )
        else:
            self._on_published(len(published), 0)
        _log_outcomes(rows, results)
        if failed:
            self.wake()

    @property
    def handed_over_waiting(self) -> int:
        """Rows handed over and waiting for the batch being published."""
        return len(self._handed)

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
            rows = [
                RowToPublish(**record)
                for record in await conn.fetch(PENDING_ROWS, self._batch_size, due_since)
            ]
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            published = [
                row.id for row, result in zip(rows, results, strict=True) if result is None
            ]
            refused = [
                (row, r)
                for row, r in zip(rows, results, strict=True)
                if isinstance(r, DeliveryError)
            ]
            if published:
                await conn.execute(MARK_PUBLISHED, published)
            if refused:
                await self._retry_later(conn, refused)
        self._on_published(len(published), len(refused))
        _log_outcomes(rows, results)
        if unreachable := [
            r for r in results if r is not None and not isinstance(r, DeliveryError)
        ]:
            raise unreachable[0]
        return len(rows)

    async def _retry_later(
        self, conn: asyncpg.Connection, failures: list[tuple[RowToPublish, BaseException]]
    ) -> None:
        await conn.executemany(
            """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                   next_attempt_at = now() + least(interval '1 second' * power(2, attempts),
                                                   interval '60 seconds')
               WHERE id = $1""",
            [(row.id, repr(error)[:1000]) for row, error in failures],
        )

    async def _publish(self, row: RowToPublish) -> None:
        """Publish the row's payload as JSON text, never decoded and encoded again here; in
        the trace of the transaction that wrote it."""
        with continued_from(row.headers):
            await self._broker.publish(
                row.body.encode(),
                exchange=EVENTS_EXCHANGE,
                routing_key=row.routing_key,
                persist=True,
                mandatory=True,
                message_id=str(row.event_id),
                correlation_id=row.correlation_id,
                message_type=row.routing_key,
                content_type="application/json",
                headers=row.headers,
                timeout=self._confirm_timeout,
            )

    async def _sleep(self, seconds: float) -> None:
        """Sleep until woken or `seconds` have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)


def _log_outcomes(rows: Sequence[RowToPublish], results: Sequence[BaseException | None]) -> None:
    for row, error in zip(rows, results, strict=True):
        if error is None:
            log.debug("event %s (%s) published", row.event_id, row.routing_key)
        else:
            log.warning("event %s (%s) not published: %r", row.event_id, row.routing_key, error)
