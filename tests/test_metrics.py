"""`GET /metrics` on every service of the running system: Prometheus text whose counters
move with the orders placed."""

import uuid

import pytest

from testkit.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVICES = ("orders", "email", "inventory", "shipping")


def value(samples: dict, sample: str, **labels: str) -> float:
    return samples.get((sample, tuple(sorted(labels.items()))), 0.0)


async def test_counters_move_by_the_orders_placed(system) -> None:
    before = {service: await system.metrics(service) for service in SERVICES}
    sku = f"METRICS-{uuid.uuid4().hex[:6]}"
    await system.inventory.put(f"/stock/{sku}", json={"available": 10})
    orders = [await system.place((sku, 1)) for _ in range(3)]
    for order_id in orders:
        await eventually(lambda order_id=order_id: system.settled(order_id), timeout=30)

    async def moved() -> dict:
        after = {service: await system.metrics(service) for service in SERVICES}
        placed = value(
            after["orders"], "http_request_duration_seconds_count",
            method="POST", route="/orders", status="202",
        ) - value(
            before["orders"], "http_request_duration_seconds_count",
            method="POST", route="/orders", status="202",
        )  # fmt: skip
        assert placed == 3
        for service in ("inventory", "email", "shipping"):
            processed = value(
                after[service], "consumer_messages_total",
                event_type="order.created.v2", outcome="processed",
            ) - value(
                before[service], "consumer_messages_total",
                event_type="order.created.v2", outcome="processed",
            )  # fmt: skip
            assert processed == 3, service
        published = value(after["orders"], "outbox_published_events_total") - value(
            before["orders"], "outbox_published_events_total"
        )
        assert published >= 6, "order.created and order.confirmed of each"
        return after

    after = await eventually(moved, timeout=30, interval=1)
    for service in SERVICES:
        samples = after[service]
        assert value(samples, "queue_consumers", queue=f"{service}.work") == 1, service
        assert ("queue_ready_messages", (("queue", f"{service}.dlq"),)) in samples, service
        assert ("outbox_pending_events", ()) in samples, service
        assert any(name == "faststream_received_messages_total" for name, _ in samples), service
    assert value(after["email"], "circuit_open", name="smtp") == 0
    assert ("circuit_open", (("name", "smtp"),)) in after["email"]
