"""Retention on the real PostgreSQL: what expires goes, batch by batch; what must stay
stays; two jobs share the work without waiting for each other; the settings refuse a
retention of processed event ids shorter than a duplicate can arrive."""

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from pydantic import ValidationError

from servicekit.db import create_pool, ensure_database, migrate
from servicekit.durations import parse_duration
from servicekit.metrics import ServiceMetrics
from servicekit.retention import RetentionJob, RetentionRule, kit_rules
from servicekit.settings import ServiceSettings
from testkit.polling import eventually

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


class RetainingSettings(ServiceSettings):
    database_url: str = "postgresql://postgres@127.0.0.1/retaining"
    http_port: int = 0


@pytest.fixture
async def database(databases, tmp_path: Path, request) -> str:
    """A fresh database with the kit's tables (no service migrations of its own)."""
    url = databases.url(f"retention_{request.node.name[:40].lower()}")
    await ensure_database(url)
    await migrate(url, tmp_path)
    return url


@pytest.fixture
async def pool(database: str):
    pool = await create_pool(database, 8)
    yield pool
    await pool.close()


def job(
    pool: asyncpg.Pool, rules: list[RetentionRule], batch_size: int = 1000, **kw
) -> RetentionJob:
    return RetentionJob(
        lambda: pool, rules, interval=kw.pop("interval", HOUR), batch_size=batch_size, **kw
    )


OUTBOX_RULE = kit_rules(RetainingSettings(outbox_retention=HOUR))[0]
PROCESSED_RULE = kit_rules(RetainingSettings(processed_message_retention=timedelta(days=1)))[1]


async def add_outbox_rows(conn, count: int, *, age: timedelta, published: bool) -> None:
    """`count` outbox rows written `age` ago, published then if `published`."""
    await conn.execute(
        """INSERT INTO outbox (event_id, routing_key, payload, created_at, published_at)
           SELECT gen_random_uuid(), $4, '{}', now() - $1::interval,
                  CASE WHEN $3 THEN now() - $1::interval END
           FROM generate_series(1, $2)""",
        age,
        count,
        published,
        f"{'published' if published else 'pending'}.{age.total_seconds():g}",
    )


async def outbox_rows(conn) -> dict[str, int]:
    rows = await conn.fetch("SELECT routing_key, count(*) FROM outbox GROUP BY routing_key")
    return {row["routing_key"]: row["count"] for row in rows}


async def test_old_published_outbox_rows_go_and_unpublished_or_young_ones_stay(pool) -> None:
    async with pool.acquire() as conn:
        await add_outbox_rows(conn, 30, age=2 * HOUR, published=True)
        await add_outbox_rows(conn, 5, age=48 * HOUR, published=False)
        await add_outbox_rows(conn, 7, age=timedelta(minutes=59), published=True)
        deleted = await job(pool, [OUTBOX_RULE]).run_round()
        assert deleted == {"outbox": 30}
        assert await outbox_rows(conn) == {"pending.172800": 5, "published.3540": 7}


async def test_processed_event_ids_older_than_their_retention_go(pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO processed_messages (event_id, event_type, processed_at)
               SELECT gen_random_uuid(), 'old', now() - interval '25 hours'
               FROM generate_series(1, 12)
               UNION ALL
               SELECT gen_random_uuid(), 'young', now() - interval '23 hours'
               FROM generate_series(1, 4)"""
        )
        assert await job(pool, [PROCESSED_RULE]).run_round() == {"processed_messages": 12}
        left = await conn.fetch("SELECT DISTINCT event_type FROM processed_messages")
        assert [row["event_type"] for row in left] == ["young"]


@pytest.mark.parametrize(("rows", "statements"), [(25, 3), (20, 3), (9, 1), (0, 1)])
async def test_a_round_deletes_batch_by_batch_until_a_batch_is_short(
    database, rows: int, statements: int
) -> None:
    deletes: list[str] = []

    def record(query: asyncpg.connection.LoggedQuery) -> None:
        if query.query.lstrip().startswith("DELETE"):
            deletes.append(query.query)

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(record)

    async with asyncpg.create_pool(database, min_size=1, max_size=2, init=log_queries) as pool:
        async with pool.acquire() as conn:
            await add_outbox_rows(conn, rows, age=2 * HOUR, published=True)
        assert await job(pool, [OUTBOX_RULE], batch_size=10).run_round() == {"outbox": rows}
    assert len(deletes) == statements


async def test_two_jobs_delete_each_row_once_and_skip_what_the_other_holds(pool) -> None:
    async with pool.acquire() as conn:
        await add_outbox_rows(conn, 3000, age=2 * HOUR, published=True)
    first, second = job(pool, [OUTBOX_RULE], 50), job(pool, [OUTBOX_RULE], 50)
    rounds = await asyncio.wait_for(asyncio.gather(first.run_round(), second.run_round()), 30)
    assert sum(r["outbox"] for r in rounds) == 3000
    async with pool.acquire() as conn:
        assert await outbox_rows(conn) == {}


async def test_rows_someone_holds_are_skipped_not_waited_for(pool) -> None:
    async with pool.acquire() as conn:
        await add_outbox_rows(conn, 20, age=2 * HOUR, published=True)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT 1 FROM outbox ORDER BY id LIMIT 5 FOR UPDATE")
        deleted = await asyncio.wait_for(job(pool, [OUTBOX_RULE], 4).run_round(), 5)
        assert deleted == {"outbox": 15}
    assert await job(pool, [OUTBOX_RULE], 4).run_round() == {"outbox": 5}


async def test_a_failing_rule_is_logged_and_the_others_and_later_rounds_still_run(
    pool, caplog
) -> None:
    rounds: list[tuple[dict, bool]] = []
    missing = RetentionRule("no_such_table", "created_at", HOUR)
    metrics = ServiceMetrics()

    def observe(deleted, ok) -> None:
        rounds.append((dict(deleted), ok))
        metrics.count_retention_round(deleted, ok)

    running = job(pool, [missing, OUTBOX_RULE], interval=timedelta(seconds=0.05), on_round=observe)
    async with pool.acquire() as conn:
        await add_outbox_rows(conn, 3, age=2 * HOUR, published=True)
    with caplog.at_level(logging.INFO, logger="servicekit.retention"):
        task = asyncio.create_task(running.run())
        await eventually(lambda: len(rounds) >= 2)
        running.stop()
        await asyncio.wait_for(task, 5)
    assert rounds[0] == ({"outbox": 3}, False)
    assert rounds[1] == ({"outbox": 0}, False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no_such_table not cleaned up" in warnings[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["retention: deleted 3 from outbox"], "a line only for a round that deleted"
    registry = metrics.registry
    assert registry.get_sample_value("retention_deleted_rows_total", {"table": "outbox"}) == 3
    assert registry.get_sample_value("retention_rounds_total", {"outcome": "error"}) == len(rounds)


async def test_stopping_ends_the_job_while_it_waits() -> None:
    idle = RetentionJob(lambda: None, [], interval=HOUR, batch_size=1)
    task = asyncio.create_task(idle.run())
    await asyncio.sleep(0)
    idle.stop()
    await asyncio.wait_for(task, 1)


# Settings


def test_the_retry_span_is_every_backoff_a_message_can_wait_the_last_delay_repeating() -> None:
    assert RetainingSettings().retry_span == timedelta(seconds=1 + 10 + 60)
    assert RetainingSettings(max_attempts=6).retry_span == timedelta(seconds=1 + 10 + 60 * 3)
    assert RetainingSettings(max_attempts=2).retry_span == timedelta(seconds=1)
    assert RetainingSettings(max_attempts=1).retry_span == timedelta(0)


def test_processed_ids_must_outlive_twice_the_retry_span_and_the_margin() -> None:
    floor = 2 * timedelta(seconds=71) + HOUR
    assert RetainingSettings(processed_message_retention=floor).processed_message_retention == floor
    with pytest.raises(ValidationError, match="PROCESSED_MESSAGE_RETENTION.* 1:02:22"):
        RetainingSettings(processed_message_retention=floor - timedelta(seconds=1))
    with pytest.raises(ValidationError, match="at least 2 x the retry span"):
        RetainingSettings(processed_message_retention="2h", retry_delays=[600], max_attempts=5)
    short = RetainingSettings(
        processed_message_retention="1s",
        processed_message_retention_margin=0,
        retry_delays=[0.1],
        max_attempts=3,
    )
    assert short.processed_message_retention == timedelta(seconds=1)


def test_the_defaults_keep_published_rows_a_day_and_processed_ids_a_week() -> None:
    settings = RetainingSettings()
    assert settings.outbox_retention == timedelta(hours=24)
    assert settings.processed_message_retention == timedelta(days=7)
    assert settings.retention_interval == timedelta(minutes=5)
    assert settings.retention_batch_size == 1000


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("3600", 3600),
        (3600, 3600),
        ("0.5", 0.5),
        ("90s", 90),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("1.5h", 5400),
        ("P30D", 30 * 86400),
        ("PT1H", 3600),
    ],
)
def test_a_duration_is_seconds_a_number_with_a_unit_or_iso_8601(written, seconds) -> None:
    assert RetainingSettings(outbox_retention=written).outbox_retention == timedelta(
        seconds=seconds
    )


@pytest.mark.parametrize("written", ["abc", "5 weeks", "-5", "0", "0s"])
def test_a_duration_that_is_no_length_of_time_is_refused(written) -> None:
    with pytest.raises(ValidationError, match="outbox_retention"):
        RetainingSettings(outbox_retention=written)


def test_an_environment_duration_is_read_as_text(monkeypatch) -> None:
    monkeypatch.setenv("RETENTION_INTERVAL", "15m")
    monkeypatch.setenv("OUTBOX_RETENTION", "3600")
    settings = RetainingSettings()
    assert settings.retention_interval == timedelta(minutes=15)
    assert settings.outbox_retention == timedelta(hours=1)
    assert parse_duration(timedelta(1)) == timedelta(1)
