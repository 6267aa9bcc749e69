"""The outbox relay on the real RabbitMQ and PostgreSQL: a row the broker refuses waits on
its own backoff and holds up nobody."""

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from contracts import OrderConfirmedV1
from servicekit.db import create_pool
from servicekit.outbox import add_to_outbox
from servicekit.service import ServiceSpec, build_app
from servicekit.settings import ServiceSettings
from testkit.broker import tap
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


@pytest.fixture
async def relay_database(rabbitmq, databases, tmp_path: Path):
    """A service that consumes nothing and only relays its outbox: its database URL.

    It polls once a minute, so nothing but the NOTIFY of a commit starts a batch: each row
    is tried exactly when the test writes it.
    """
    settings = RelaySettings(
        database_url=databases.url("relay"), rabbitmq_url=rabbitmq.url, outbox_poll_interval=60
    )

    def create_app(settings):
        return build_app(ServiceSpec("relay", settings, routers=[], handlers={}))

    async with service_under_test(create_app, settings, tmp_path, "relay"):
        yield settings.database_url


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
