"""Retention on the running system: with ages of a second or two and a round every half
second, orders placed without pause all flow through exactly once, the audit is clean, and
every service's outbox, processed-message records and idempotency keys stay bounded and
empty out once the orders stop."""

import asyncio
import uuid

import asyncpg
import pytest

from servicekit.registry import SERVICES
from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

RETENTION = {
    "RETENTION_INTERVAL": "0.5",
    "OUTBOX_RETENTION": "1s",
    "PROCESSED_MESSAGE_RETENTION": "2s",
    # The floor, 2 x the retry span + the margin, is 2 x (4 x 0.25 s) + 0 = 2 s.
    "PROCESSED_MESSAGE_RETENTION_MARGIN": "0",
    "RETRY_DELAYS": "[0.25]",
    "MAX_ATTEMPTS": "5",
}
SERVICE_ENV = {
    **{f"{s.env_prefix}{name}": value for s in SERVICES for name, value in RETENTION.items()},
    "ORDERS_IDEMPOTENCY_KEY_RETENTION": "1s",
    "SHIPPING_DISPATCH_DELAY": "0.5",
}
STREAM_SECONDS, PACE = 10.0, 0.05
"""Orders are placed for many times the ages below, at most one every PACE seconds."""
RETAINED = {
    "outbox": "SELECT count(*) FROM outbox",
    "processed_messages": "SELECT count(*) FROM processed_messages",
}
ORDERS_RETAINED = {**RETAINED, "idempotency_keys": "SELECT count(*) FROM idempotency_keys"}


class TableWatch:
    """The row counts of the retained tables of every service, sampled until stopped: the
    most each table held."""

    def __init__(self, system) -> None:
        self.system = system
        self.peaks: dict[tuple[str, str], int] = {}

    async def counts(self) -> dict[tuple[str, str], int]:
        found = {}
        for entry in SERVICES:
            conn = await asyncpg.connect(self.system.databases.url(entry.name))
            try:
                queries = ORDERS_RETAINED if entry.name == "orders" else RETAINED
                for table, query in queries.items():
                    found[(entry.name, table)] = await conn.fetchval(query)
            finally:
                await conn.close()
        return found

    async def sample(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            for where, count in (await self.counts()).items():
                self.peaks[where] = max(count, self.peaks.get(where, 0))
            await asyncio.sleep(0.2)


async def deleted_rows(system, service: str, table: str) -> float:
    samples = await system.metrics(service)
    return samples.get(("retention_deleted_rows_total", (("table", table),)), 0.0)


async def test_orders_flow_once_while_retention_keeps_every_table_bounded(system) -> None:
    sku = f"RETAIN-{uuid.uuid4().hex[:6]}"
    assert (
        await system.inventory.put(f"/stock/{sku}", json={"available": 1000})
    ).status_code == 200
    watch, stopping = TableWatch(system), asyncio.Event()
    sampling = asyncio.create_task(watch.sample(stopping))
    placed: list[str] = []

    async def retention_has_deleted_everywhere() -> bool:
        deleted = [
            *[(s.name, "processed_messages") for s in SERVICES],
            *[(s, "outbox") for s in ("orders", "inventory", "shipping")],  # email publishes none
            ("orders", "idempotency_keys"),
        ]
        return all([await deleted_rows(system, s, table) > 0 for s, table in deleted])

    async def place_until(done) -> None:
        """An order every PACE seconds for STREAM_SECONDS at least, many times the ages."""
        started = asyncio.get_running_loop().time()
        while True:
            response = await system.order_request((sku, 1), idempotency_key=str(uuid.uuid4()))
            assert response.status_code == 202, response.text
            placed.append(response.json()["order_id"])
            elapsed = asyncio.get_running_loop().time() - started
            if elapsed >= STREAM_SECONDS and await done():
                return
            await asyncio.sleep(PACE)

    try:
        await asyncio.wait_for(place_until(retention_has_deleted_everywhere), timeout=120)
    finally:
        stopping.set()
        await sampling

    for order_id in placed:
        outcome = await eventually(lambda: system.settled(order_id, "shipped"), timeout=60)
        assert outcome["reservation"] == "fulfilled", outcome
        assert outcome["email_kinds"] == ["order_confirmation", "shipment_dispatched"], outcome
        [shipment] = outcome["shipments"]
        assert shipment["status"] == "dispatched", outcome
        assert len(set(outcome["mails"])) == len(outcome["emails"]) == 2, "each email sent once"
    report = await eventually(system.audit_is_clean, timeout=60)
    assert report.orders_checked >= len(placed)

    async def every_table_emptied() -> bool:
        counts = await watch.counts()
        assert set(counts.values()) == {0}, counts
        return True

    await eventually(every_table_emptied, timeout=30, interval=0.5)
    # Every row those tables ever held is now deleted: with nothing deleted during the
    # stream, a table would have held all of them at its end.
    held = {where: await deleted_rows(system, *where) for where in watch.peaks}
    assert all(peak <= held[where] / 2 for where, peak in watch.peaks.items()), (
        watch.peaks,
        held,
    )


async def test_an_expired_idempotency_key_places_a_new_order(system) -> None:
    sku = f"RETAIN-KEY-{uuid.uuid4().hex[:6]}"
    await system.inventory.put(f"/stock/{sku}", json={"available": 10})
    key = str(uuid.uuid4())
    first = await system.order_request((sku, 1), idempotency_key=key)
    assert first.status_code == 202

    async def placed_anew() -> str | None:
        again = await system.order_request((sku, 1), idempotency_key=key)
        assert again.status_code == 202, again.text
        return None if "Idempotent-Replayed" in again.headers else again.json()["order_id"]

    second = await eventually(placed_anew, timeout=10, interval=0.2)
    assert second != first.json()["order_id"]
    for order_id in (first.json()["order_id"], second):
        await eventually(lambda: system.settled(order_id, "shipped"), timeout=30)
    await eventually(system.audit_is_clean, timeout=60)
