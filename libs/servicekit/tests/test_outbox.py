"""The outbox relay on the real RabbitMQ and PostgreSQL: a row the broker refuses waits on
its own backoff and holds up nobody; rows the service writes itself are published at once,
rows written elsewhere at the next poll."""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import APIRouter
from pydantic_settings import SettingsConfigDict

from contracts import OrderConfirmedV1, OrderCreatedV2
from servicekit.db import create_pool
from servicekit.dependencies import PoolDep
from servicekit.outbox import add_to_outbox
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


@pytest.fixture
async def relay_database(rabbitmq, databases, tmp_path: Path):
    """A service that consumes nothing and only relays its outbox: its database URL.

    Rows the test writes are another process's to the relay: its poll finds them.
    """
    settings = RelaySettings(
        database_url=databases.url("relay"), rabbitmq_url=rabbitmq.url, outbox_poll_interval=0.2
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


async def test_an_event_written_by_a_handler_is_published_without_waiting_for_a_poll(
    rabbitmq, waking_service
) -> None:
    order = order_created()
    async with tap(rabbitmq.url, "order.confirmed.v1") as published:
        await publish_event(rabbitmq.url, order)
        [message] = await eventually(lambda: published, timeout=10)
    assert json.loads(message.body)["order_id"] == str(order.order_id)
