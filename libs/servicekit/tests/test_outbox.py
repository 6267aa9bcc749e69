"""The outbox relay on the real RabbitMQ and PostgreSQL: a row the broker refuses waits on
its own backoff and holds up nobody; rows the service writes itself are published at once
(a handler's handed over, without a relay round), rows written elsewhere at the next poll,
and rows whose writer never handed them over once their grace is over; a round reads only
recent rows, whatever the history, and a sweep finds the old ones."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from fastapi import APIRouter
from pydantic_settings import SettingsConfigDict

from contracts import OrderConfirmedV1, OrderCreatedV2
from servicekit.db import create_pool
from servicekit.dependencies import PoolDep
from servicekit.outbox import (
    EVERY_ROW,
    HANDOVER_BACKLOG_BATCHES,
    HANDOVER_GRACE,
    PENDING_ROWS,
    SWEEP_MARGIN,
    OutboxRelay,
    RowToPublish,
    add_to_outbox,
    handing_over,
    staged,
)
from servicekit.service import ServiceSpec, build_app
from servicekit.settings import ServiceSettings
from testkit.broker import publish_event, tap
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import fetch
from testkit.services import service_under_test

pytestmark = pytest.mark.integration

LISTENED_TO = "order.created.v2"
"""The only routing key bound in this module's vhost (by the tap); nothing consumes the rest."""


class RelaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RELAY_")
    http_port: int = 0


NEVER_SWEEPS = 3600.0
"""A sweep interval no test waits out: only the first round sweeps."""


@pytest.fixture(params=[NEVER_SWEEPS])
async def relay_database(request, rabbitmq, databases, tmp_path: Path):
    """A service that consumes nothing and only relays its outbox: its database URL.

    Rows the test writes are another process's to the relay: its poll finds them.
    """
    settings = RelaySettings(
        database_url=databases.url(f"relay{request.param:g}".replace(".", "_")),
        rabbitmq_url=rabbitmq.url,
        outbox_poll_interval=0.2,
        outbox_sweep_interval=request.param,
    )

    def create_app(settings):
        return build_app(ServiceSpec("relay", settings, routers=[], handlers={}))

    async with service_under_test(create_app, settings, tmp_path, "relay"):
        yield settings.database_url


NEVER_POLLS = 3600.0
"""A poll interval no test waits out: what is published came from a wake."""

writes = APIRouter()


@writes.post("/confirmations")
async def confirm_one(pool: PoolDep) -> dict[str, str]:
    """Writes one event to the outbox, as a use case behind a POST would."""
    order = order_created()
    event = OrderConfirmedV1.caused_by(order, producer="relay", order_id=order.order_id)
    async with pool.acquire() as conn, conn.transaction():
        await add_to_outbox(conn, event)
    return {"event_id": str(event.event_id)}


async def confirm_order(conn, event) -> None:
    """Handles order.created by writing order.confirmed, as a consumer's use case would."""
    await add_to_outbox(
        conn, OrderConfirmedV1.caused_by(event, producer="relay", order_id=event.order_id)
    )


@pytest.fixture
async def waking_service(rabbitmq, databases, tmp_path: Path):
    """A service whose relay would not poll during the test, with an HTTP route and an event
    handler that each write an event: an HTTP client to it."""
    settings = RelaySettings(
        database_url=databases.url("waking"),
        rabbitmq_url=rabbitmq.url,
        outbox_poll_interval=NEVER_POLLS,
    )

    def create_app(settings):
        return build_app(
            ServiceSpec(
                "waking", settings, routers=[writes], handlers={OrderCreatedV2: confirm_order}
            )
        )

    async with service_under_test(create_app, settings, tmp_path, "waking") as client:
        yield client


async def outbox_row(database_url: str, event) -> dict:
    [row] = await fetch(
        database_url,
        """SELECT published_at, attempts, last_error, created_at, next_attempt_at
           FROM outbox WHERE event_id = $1""",
        event.event_id,
    )
    return dict(row)


async def test_a_refused_row_backs_off_on_its_own_while_the_rest_of_its_batch_is_published(
    rabbitmq, relay_database
) -> None:
    first, last = order_created(), order_created()
    nobody_listens = OrderConfirmedV1.caused_by(first, producer="orders", order_id=first.order_id)
    pool = await create_pool(relay_database, max_size=2)
    try:
        async with tap(rabbitmq.url, LISTENED_TO) as published:
            async with pool.acquire() as conn, conn.transaction():  # one commit: one batch
                for event in (first, nobody_listens, last):
                    await add_to_outbox(conn, event)

            async def marked_published() -> bool:
                rows = [await outbox_row(relay_database, event) for event in (first, last)]
                return all(row["published_at"] is not None for row in rows)

            await eventually(marked_published)
            seen = await eventually(lambda: len(published) == 2 and published)
    finally:
        await pool.close()

    assert {m.message_id for m in seen} == {str(first.event_id), str(last.event_id)}
    assert {m.routing_key for m in seen} == {LISTENED_TO}
    refused = await outbox_row(relay_database, nobody_listens)
    assert refused["published_at"] is None
    assert refused["attempts"] == 1
    assert "NO_ROUTE" in refused["last_error"]
    assert "order.confirmed.v1" in refused["last_error"]
    # It was due when written (next_attempt_at defaults to now()); now it waits 2^0 seconds.
    assert refused["next_attempt_at"] - refused["created_at"] >= timedelta(seconds=1)


async def test_an_event_written_behind_a_post_is_published_without_waiting_for_a_poll(
    rabbitmq, waking_service
) -> None:
    async with tap(rabbitmq.url, "order.confirmed.v1") as published:
        response = await waking_service.post("/confirmations")
        assert response.status_code == 200
        [message] = await eventually(lambda: published, timeout=10)
    assert message.message_id == response.json()["event_id"]


async def test_an_event_written_by_a_handler_is_handed_over_and_published_without_a_round(
    rabbitmq, databases, waking_service
) -> None:
    order = order_created()
    async with tap(rabbitmq.url, "order.confirmed.v1") as published:
        await publish_event(rabbitmq.url, order)
        [message] = await eventually(lambda: published, timeout=10)
    assert json.loads(message.body)["order_id"] == str(order.order_id)
    [row] = await eventually(
        lambda: fetch(
            databases.url("waking"),
            """SELECT published_at, created_at, next_attempt_at FROM outbox
               WHERE event_id = $1 AND published_at IS NOT NULL""",
            UUID(message.message_id),
        )
    )  # an empty list is not there yet
    assert row["next_attempt_at"] - row["created_at"] == HANDOVER_GRACE
    assert row["published_at"] < row["next_attempt_at"], "published before a round would"


async def test_a_handed_over_row_the_broker_refuses_goes_to_the_relays_rounds_at_once(
    rabbitmq, databases, waking_service
) -> None:
    """Nothing is bound to order.confirmed.v1 without a tap: the broker returns it."""
    order = order_created()
    await publish_event(rabbitmq.url, order)

    async def refused_by_a_round() -> dict:
        rows = await fetch(
            databases.url("waking"),
            """SELECT published_at, attempts, last_error, created_at, next_attempt_at
               FROM outbox WHERE payload->>'order_id' = $1""",
            str(order.order_id),
        )
        assert [row["attempts"] for row in rows] == [1], rows
        return dict(rows[0])

    row = await eventually(refused_by_a_round, timeout=10)
    assert row["published_at"] is None
    assert "NO_ROUTE" in row["last_error"]
    assert row["next_attempt_at"] - row["created_at"] < HANDOVER_GRACE, "backed off from now"


class StuckBroker:
    """A broker that never confirms a publish."""

    async def publish(self, *args, **kwargs) -> None:
        await asyncio.Event().wait()


async def test_the_rows_waiting_to_be_handed_over_are_bounded_while_publishing_is_stuck() -> None:
    """A broker that hangs while orders are still placed must not grow the relay's memory:
    rows beyond the backlog are left in the outbox for the relay's rounds."""
    batch_size = 3
    relay = OutboxRelay(
        lambda: None, StuckBroker(), batch_size=batch_size, poll_interval=3600, confirm_timeout=1
    )
    rows = [RowToPublish(n, uuid4(), "order.created.v2", "{}", None, {}) for n in range(100)]
    relay.hand_over(rows[:1])
    await asyncio.sleep(0)  # the first row's batch starts publishing, and hangs
    for row in rows[1:]:
        relay.hand_over([row])
    relay.hand_over(rows[:5])
    try:
        assert relay.handed_over_waiting == HANDOVER_BACKLOG_BATCHES * batch_size
    finally:
        for task in asyncio.all_tasks():
            if task.get_name() == "outbox-handover":
                task.cancel()


async def test_rows_never_handed_over_are_published_by_a_round_once_their_grace_is_over(
    rabbitmq, relay_database
) -> None:
    """As when the writer dies between its commit and the handover."""
    orphan = order_created()
    pool = await create_pool(relay_database, max_size=1)
    try:
        async with tap(rabbitmq.url, LISTENED_TO) as published:
            with handing_over() as written:
                async with pool.acquire() as conn, conn.transaction():
                    await add_to_outbox(conn, orphan)
            assert [row.event_id for row in written] == [orphan.event_id]
            [message] = await eventually(
                lambda: published, timeout=HANDOVER_GRACE.total_seconds() + 10
            )
    finally:
        await pool.close()
    assert message.message_id == str(orphan.event_id)
    row = await outbox_row(relay_database, orphan)
    assert row["next_attempt_at"] - row["created_at"] == HANDOVER_GRACE
    assert row["published_at"] >= row["next_attempt_at"]


async def test_rows_staged_in_a_block_are_written_as_it_ends_and_not_if_it_fails(
    relay_database,
) -> None:
    kept, dropped, at_once = order_created(), order_created(), order_created()
    pool = await create_pool(relay_database, max_size=2)

    async def written(conn, *events) -> int:
        ids = [event.event_id for event in events]
        return await conn.fetchval("SELECT count(*) FROM outbox WHERE event_id = ANY($1)", ids)

    try:
        async with pool.acquire() as conn, conn.transaction():
            async with staged(conn):
                await add_to_outbox(conn, kept)
                async with pool.acquire() as other:  # not the staged connection: at once
                    await add_to_outbox(other, at_once)
                    assert await written(other, at_once) == 1
                assert await written(conn, kept) == 0
            assert await written(conn, kept) == 1
        async with pool.acquire() as conn, conn.transaction():
            with pytest.raises(RuntimeError):
                async with staged(conn):
                    await add_to_outbox(conn, dropped)
                    raise RuntimeError("the batch failed")
            assert await written(conn, dropped) == 0
    finally:
        await pool.close()
    [row] = await fetch(
        relay_database,
        "SELECT payload::text, jsonb_typeof(payload) AS type FROM outbox WHERE event_id = $1",
        kept.event_id,
    )
    assert row["type"] == "object"
    assert OrderCreatedV2.model_validate_json(row["payload"]) == kept


async def write_long_due(database_url: str, *events) -> None:
    """Write rows due two hours ago, as a transaction that began then, or rows left over
    from an outage, would be: older than any round but a sweep reads."""
    pool = await create_pool(database_url, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for event in events:
                await add_to_outbox(conn, event)
            await conn.execute("UPDATE outbox SET next_attempt_at = now() - interval '2 hours'")
    finally:
        await pool.close()


async def test_rounds_between_sweeps_leave_rows_due_long_ago_for_the_sweep(
    rabbitmq, relay_database
) -> None:
    old, recent = order_created(), order_created()
    async with tap(rabbitmq.url, LISTENED_TO) as published:
        await write_long_due(relay_database, old)
        pool = await create_pool(relay_database, max_size=1)
        try:
            async with pool.acquire() as conn:
                await add_to_outbox(conn, recent)  # a commit of its own, after the old row's
        finally:
            await pool.close()
        [message] = await eventually(lambda: published, timeout=10)
    assert message.message_id == str(recent.event_id)
    assert (await outbox_row(relay_database, old))["published_at"] is None


@pytest.mark.parametrize("relay_database", [0.3], indirect=True)
async def test_a_sweep_publishes_rows_due_long_ago(rabbitmq, relay_database) -> None:
    old = order_created()
    async with tap(rabbitmq.url, LISTENED_TO) as published:
        await write_long_due(relay_database, old)
        [message] = await eventually(lambda: published, timeout=10)
    assert message.message_id == str(old.event_id)


async def test_a_round_reads_as_many_pages_with_a_long_history_as_without(
    relay_database,
) -> None:
    """Published rows leave dead entries in the index of unpublished rows (no vacuum runs
    here): a round must not step over them. Pages read, not time, are the measure."""
    pool = await create_pool(relay_database, max_size=1)

    async def pages_read(due_since: datetime) -> int:
        async with pool.acquire() as conn, conn.transaction():
            [plan] = await conn.fetchval(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {PENDING_ROWS}", 100, due_since
            )
            blocks = plan["Plan"]
            return blocks["Shared Hit Blocks"] + blocks["Shared Read Blocks"]

    try:
        async with pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO outbox (event_id, routing_key, payload, next_attempt_at)
                   SELECT gen_random_uuid(), 'order.created.v2', '{}',
                          now() - interval '3 hours' + n * interval '50 ms'
                   FROM generate_series(1, 40000) AS n"""
            )
            await conn.execute("UPDATE outbox SET published_at = now()")
            swept_from = datetime.now(UTC) - SWEEP_MARGIN
        round_pages = await pages_read(swept_from)
        sweep_pages = await pages_read(EVERY_ROW)
    finally:
        await pool.close()
    assert round_pages < 20, f"a round read {round_pages} pages"
    assert sweep_pages > 20 * round_pages, "the history is there, for the sweep to read"
