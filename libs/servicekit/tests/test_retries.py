"""Retries with backoff through the broker's wait queues, on the real RabbitMQ and PostgreSQL.

A probe service with one scripted handler stands in for a real one: each test tells it how
an order's deliveries should fail.
"""

import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from uuid import UUID

import pytest

from contracts import OrderCreatedV1
from servicekit.consumer import PermanentFailure, RetryLater
from testkit.broker import peek_queue, publish_event, publish_raw
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import consumer_stats
from testkit.services import probe_service

pytestmark = pytest.mark.integration

DELAYS = (0.3, 0.6)
MAX_ATTEMPTS = 3


class ScriptedHandler:
    """Fails an order's first deliveries with the exceptions it is given, then succeeds."""

    def __init__(self) -> None:
        self.failures: dict[UUID, list[Exception]] = {}
        self.calls: dict[UUID, list[float]] = defaultdict(list)
        self.effects: dict[UUID, int] = defaultdict(int)

    async def __call__(self, conn, event: OrderCreatedV1) -> None:
        self.calls[event.order_id].append(time.monotonic())
        if self.failures.get(event.order_id):
            raise self.failures[event.order_id].pop(0)
        self.effects[event.order_id] += 1


@pytest.fixture
async def probe(rabbitmq, databases, tmp_path: Path):
    handler = ScriptedHandler()
    async with probe_service(
        {OrderCreatedV1: handler},
        rabbitmq_url=rabbitmq.url,
        database_url=databases.url("probe"),
        migrations=tmp_path,
        retry_delays=DELAYS,
        max_attempts=MAX_ATTEMPTS,
    ) as client:
        yield handler, client


async def dead_letters(url: str, event: OrderCreatedV1) -> list:
    """This event's copies in the probe's DLQ (the queue outlives each test in the module)."""
    return [m for m in await peek_queue(url, "probe.dlq") if m.message_id == str(event.event_id)]


async def test_a_transient_failure_is_retried_after_each_backoff_delay_then_has_one_effect(
    probe, rabbitmq
) -> None:
    handler, client = probe
    order = order_created(version=1)
    handler.failures[order.order_id] = [RuntimeError("deadlock"), TimeoutError("slow")]
    await publish_event(rabbitmq.url, order)

    await eventually(lambda: handler.effects[order.order_id] == 1, timeout=20)
    first, second, third = handler.calls[order.order_id]
    assert second - first >= DELAYS[0]
    assert third - second >= DELAYS[1]
    assert (await consumer_stats(client))["retried"] == 2
    assert await dead_letters(rabbitmq.url, order) == []


async def test_out_of_attempts_a_message_reaches_the_dlq_with_its_failure_history(
    probe, rabbitmq
) -> None:
    handler, client = probe
    order = order_created(version=1)
    handler.failures[order.order_id] = [RuntimeError(f"bug #{n}") for n in range(10)]
    await publish_event(rabbitmq.url, order)

    [dead] = await eventually(lambda: dead_letters(rabbitmq.url, order), timeout=20)
    assert len(handler.calls[order.order_id]) == MAX_ATTEMPTS
    assert handler.effects[order.order_id] == 0
    assert dead.message_id == str(order.event_id)
    assert OrderCreatedV1.model_validate_json(dead.body) == order
    headers = dead.headers
    assert headers["x-failure-service"] == "probe"
    assert headers["x-failure-exception"] == "RuntimeError"
    assert headers["x-failure-reason"] == f"bug #{MAX_ATTEMPTS - 1}"
    assert headers["x-failure-attempts"] == MAX_ATTEMPTS
    assert headers["x-original-exchange"] == "events"
    assert headers["x-original-routing-key"] == "order.created.v1"
    first = datetime.fromisoformat(headers["x-first-failure-at"])
    last = datetime.fromisoformat(headers["x-last-failure-at"])
    assert (last - first).total_seconds() >= sum(DELAYS)
    rejected = {d["queue"]: d["count"] for d in headers["x-death"] if d["reason"] == "rejected"}
    assert rejected == {"probe.work": 1, "probe.retry.1": 1}
    assert (await consumer_stats(client))["dead_lettered"] == 1


@pytest.mark.parametrize(
    "outage",
    [RetryLater("circuit open"), ConnectionRefusedError("smtp down")],
    ids=["circuit-open", "connection-refused"],
)
async def test_an_outage_backs_off_without_spending_attempts(probe, rabbitmq, outage) -> None:
    handler, client = probe
    order = order_created(version=1)
    handler.failures[order.order_id] = [outage] * (MAX_ATTEMPTS + 2)
    await publish_event(rabbitmq.url, order)

    await eventually(lambda: handler.effects[order.order_id] == 1, timeout=30)
    assert len(handler.calls[order.order_id]) == MAX_ATTEMPTS + 3
    assert await dead_letters(rabbitmq.url, order) == []


async def test_a_permanent_failure_skips_retries(probe, rabbitmq) -> None:
    handler, client = probe
    order = order_created(version=1)
    handler.failures[order.order_id] = [PermanentFailure("order can never ship")]
    await publish_event(rabbitmq.url, order)

    [dead] = await eventually(lambda: dead_letters(rabbitmq.url, order))
    assert len(handler.calls[order.order_id]) == 1
    assert dead.headers["x-failure-reason"] == "order can never ship"
    assert dead.headers["x-failure-attempts"] == 1
    assert (await consumer_stats(client))["retried"] == 0


async def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered_unhandled(
    probe, rabbitmq
) -> None:
    handler, client = probe
    order = order_created(version=1)
    crashed_twice = [
        {
            "queue": queue,
            "reason": "delivery_limit",
            "count": 1,
            "exchange": "",
            "time": datetime.now(),
        }
        for queue in ("probe.work", "probe.retry.1")
    ]  # what the broker writes when 5 deliveries in a row were never settled, twice
    await publish_raw(
        rabbitmq.url,
        "probe.retry.2",
        order.model_dump_json().encode(),
        message_id=str(order.event_id),
        exchange="",
        headers={"x-death": crashed_twice},
    )

    [dead] = await eventually(lambda: dead_letters(rabbitmq.url, order))
    assert handler.calls[order.order_id] == []
    assert dead.headers["x-failure-reason"].startswith("poison message: delivered 2 x 5 times")
