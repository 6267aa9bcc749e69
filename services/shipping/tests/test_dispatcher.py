"""The dispatcher entrypoint on its own: a timer given a pool and an interval, against the
real PostgreSQL."""

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

import pytest

from servicekit.db import create_pool, ensure_database, migrate
from shipping.adapters import repository
from shipping.domain.shipment import prepare_shipment
from shipping.entrypoints.dispatcher import run_dispatcher
from shipping.main import MIGRATIONS
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import fetch, published_about

pytestmark = pytest.mark.integration


def failed_batches(caplog) -> int:
    return sum("UndefinedTableError" in record.getMessage() for record in caplog.records)


async def test_the_dispatcher_outlives_failing_batches_and_dispatches_once_it_can(
    databases, caplog
) -> None:
    url = databases.url("dispatcher")
    await ensure_database(url)
    pool = await create_pool(url, 2)
    caplog.set_level(logging.WARNING, logger="shipping.entrypoints.dispatcher")
    dispatcher = asyncio.create_task(run_dispatcher(pool, interval=0.05))
    try:
        # No tables yet: every batch fails, and the dispatcher keeps looking.
        await eventually(lambda: failed_batches(caplog) >= 2)
        await migrate(url, MIGRATIONS)
        order = order_created([("SKU-1", 1)])
        shipment = prepare_shipment(order)
        ready_event_id = uuid.uuid4()
        async with pool.acquire() as conn:
            await repository.insert_shipment(conn, shipment)
            await repository.mark_ready(
                conn, shipment.shipment_id, ready_event_id, timedelta(0), ready_trace={}
            )
        [dispatched] = await eventually(
            lambda: fetch(
                url,
                "SELECT tracking_number FROM shipments WHERE shipment_id = $1"
                " AND status = 'dispatched'",
                shipment.shipment_id,
            )
        )
        assert not dispatcher.done()
    finally:
        dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatcher
        await pool.close()
    assert dispatched["tracking_number"]
    assert await published_about(url, order.order_id) == ["shipment.dispatched.v1"]
