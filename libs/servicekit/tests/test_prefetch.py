"""Bounded work in flight, on the real RabbitMQ and PostgreSQL: each consuming queue is read on
a channel of its own with the service's prefetch; at most `prefetch` handlers run at once when
each message is applied alone, and one at a time (in one batch transaction) when batched.

A probe service whose handler waits until the test lets it go stands in for a real one.
"""

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import OrderCreatedV1
from servicekit.rpc import RESPONDER_PREFETCH, Responder
from servicekit.topology import retry_queue_name, work_queue_name
from testkit.broker import publish_event, publish_raw
from testkit.events import order_created
from testkit.polling import eventually
from testkit.services import probe_service

pytestmark = pytest.mark.integration

PREFETCH = 3
DELAYS = (0.3, 0.6)
WORK = work_queue_name("probe")
RETRY_1 = retry_queue_name("probe", 1)
CONSUMING = {WORK, RETRY_1, retry_queue_name("probe", 2)}
QUERY_QUEUE = "probe.query"


class HeldHandler:
    """Holds every event (and its transaction) until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.running = 0
        self.most_at_once = 0
        self.handled = 0
        self.batch_size = 1

    async def __call__(self, conn, event: OrderCreatedV1) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        self.handled += 1


class Ping(BaseModel):
    pass


async def pong(pool, query: Ping) -> Ping:
    return Ping()


ALONE, BATCHED = 1, 16


@pytest.fixture(params=[ALONE, BATCHED], ids=["alone", "batched"])
async def probe(request, rabbitmq, databases, tmp_path: Path):
    handler = HeldHandler()
    handler.batch_size = request.param
    async with probe_service(
        {OrderCreatedV1: handler},
        responders=[Responder(QUERY_QUEUE, Ping, pong)],
        rabbitmq_url=rabbitmq.url,
        database_url=databases.url("probe"),
        migrations=tmp_path,
        retry_delays=DELAYS,
        prefetch=PREFETCH,
        db_pool_size=PREFETCH + 3,
        consumer_batch_size=request.param,
    ) as client:
        try:
            yield handler, client
        finally:
            handler.release.set()  # let held handlers finish, so the app stops at once


def consumers(rabbitmq) -> list[dict[str, Any]]:
    """The broker's view of every consumer in the test's virtual host."""
    listed = rabbitmq.infrastructure.ctl(
        "list_consumers", "-p", rabbitmq.name,
        "queue_name", "channel_pid", "prefetch_count", "ack_required",
        "--formatter", "json",
    )  # fmt: skip
    return json.loads(listed)


def consuming_on_own_channels(rabbitmq) -> list[dict[str, Any]]:
    """The service's event consumers once there is one per consuming queue, each on a
    channel of its own with the service's prefetch and manual acks."""
    found = consumers(rabbitmq)
    events = [c for c in found if c["queue_name"] in CONSUMING]
    assert sorted(c["queue_name"] for c in events) == sorted(CONSUMING), found
    assert [c["prefetch_count"] for c in events] == [PREFETCH] * len(CONSUMING), found
    assert all(c["ack_required"] for c in events), found
    channels = Counter(c["channel_pid"] for c in found)
    assert all(channels[c["channel_pid"]] == 1 for c in events), found
    return events


async def test_each_consuming_queue_has_a_channel_of_its_own_with_the_configured_prefetch(
    probe, rabbitmq
) -> None:
    consuming_on_own_channels(rabbitmq)


async def test_a_responder_takes_a_few_queries_at_a_time_on_a_channel_of_its_own(
    probe, rabbitmq
) -> None:
    found = consumers(rabbitmq)
    [responder] = [c for c in found if c["queue_name"] == QUERY_QUEUE]
    assert responder["prefetch_count"] == RESPONDER_PREFETCH
    assert [c["channel_pid"] for c in found].count(responder["channel_pid"]) == 1


async def test_each_consuming_queue_holds_at_most_prefetch_unacked_and_handlers_stay_bounded(
    probe, rabbitmq
) -> None:
    handler, _ = probe
    at_once = PREFETCH if handler.batch_size == ALONE else 1  # a batch runs them in turn
    per_queue = PREFETCH + 4
    for _ in range(per_queue):
        await publish_event(rabbitmq.url, order_created(version=1))
        back_from_wait = order_created(version=1)
        await publish_raw(
            rabbitmq.url,
            RETRY_1,
            back_from_wait.model_dump_json().encode(),
            message_id=str(back_from_wait.event_id),
            exchange="",
        )

    def held_at_prefetch() -> bool:
        found = rabbitmq.queue_counts()
        for name in (WORK, RETRY_1):
            assert found[name] == {
                "messages_ready": per_queue - PREFETCH,
                "messages_unacknowledged": PREFETCH,
                "consumers": 1,
            }, f"{name}: {found[name]}"
        assert handler.running == at_once, f"{handler.running} handlers running"
        return True

    await eventually(held_at_prefetch, timeout=15)
    assert handler.most_at_once == at_once

    handler.release.set()

    def drained() -> bool:
        found = rabbitmq.queue_counts()
        assert [found[name]["messages_ready"] for name in (WORK, RETRY_1)] == [0, 0], found
        return handler.handled == 2 * per_queue

    await eventually(drained, timeout=30)
    assert handler.most_at_once == at_once


async def test_consumers_come_back_with_their_prefetch_after_the_connection_is_lost(
    probe, rabbitmq
) -> None:
    handler, client = probe
    before = {c["channel_pid"] for c in consuming_on_own_channels(rabbitmq)}

    rabbitmq.infrastructure.ctl(
        "close_all_connections", "-p", rabbitmq.name, "--limit", "100", "prefetch test"
    )

    def reconnected() -> list[dict[str, Any]]:
        events = consuming_on_own_channels(rabbitmq)
        assert before.isdisjoint(c["channel_pid"] for c in events), "not reconnected yet"
        return events

    await eventually(reconnected, timeout=30)
    handler.release.set()
    await publish_event(rabbitmq.url, order_created(version=1))
    await eventually(lambda: handler.handled == 1, timeout=15)
    assert (await client.get("/health/ready")).status_code == 200
