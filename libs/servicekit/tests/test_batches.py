"""Consumer batches on the real RabbitMQ and PostgreSQL: the messages a consumer holds are
applied in one transaction, a savepoint each; one that fails is retried and dead-lettered
alone, and a batch that cannot commit acks nothing and applies each message alone.

A probe service's handler writes its effect with the id of the transaction it ran in. The
first event of each test is held in its handler until the rest is waiting, so they form
the next batch. The probe applies `order.confirmed` alone, as email does the events whose
handlers send mail.
"""

import asyncio
import json
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from contracts import OrderConfirmedV1, OrderCreatedV1, OrderShippedV1
from servicekit.outbox import add_to_outbox
from testkit.broker import peek_queue, publish_event, tap
from testkit.events import order_created
from testkit.polling import eventually
from testkit.services import probe_service

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3
TABLES = """
CREATE TABLE effects (order_id uuid NOT NULL, txid bigint NOT NULL);
-- a second row for one order breaks the transaction only when it commits
CREATE TABLE promises (
    order_id uuid NOT NULL,
    CONSTRAINT one_promise_per_order UNIQUE (order_id) DEFERRABLE INITIALLY DEFERRED
);
"""


class TransactionRecordingHandler:
    def __init__(self) -> None:
        self.held: UUID | None = None
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.failing: set[UUID] = set()
        self.breaking_commit: set[UUID] = set()
        self.announcing = False
        """Each message writes an event to the outbox before it fails, if it does."""

    async def __call__(
        self, conn: asyncpg.Connection, event: OrderCreatedV1 | OrderConfirmedV1
    ) -> None:
        if event.order_id == self.held:
            self.holding.set()
            await self.release.wait()
        if self.announcing:
            await add_to_outbox(conn, announcement_of(event))
        if event.order_id in self.failing:
            raise RuntimeError(f"injected failure for {event.order_id}")
        if event.order_id in self.breaking_commit:
            for _ in range(2):
                await conn.execute("INSERT INTO promises VALUES ($1)", event.order_id)
        await conn.execute("INSERT INTO effects VALUES ($1, txid_current())", event.order_id)


def announcement_of(event: OrderCreatedV1 | OrderConfirmedV1) -> OrderShippedV1:
    """An event nobody in the probe's vhost consumes: only the test's tap sees it."""
    return OrderShippedV1.caused_by(
        event,
        producer="probe",
        order_id=event.order_id,
        shipment_id=uuid4(),
        tracking_number="T-1",
    )


@pytest.fixture
async def probe(rabbitmq, databases, tmp_path: Path, request):
    (tmp_path / "001_effects.sql").write_text(TABLES)
    handler = TransactionRecordingHandler()
    url = databases.url(f"batch{request.node.name[-8:].lower()}")
    async with probe_service(
        {OrderCreatedV1: handler, OrderConfirmedV1: handler},
        applied_alone=(OrderConfirmedV1,),
        rabbitmq_url=rabbitmq.url,
        database_url=url,
        migrations=tmp_path,
        retry_delays=(0.2,),
        max_attempts=MAX_ATTEMPTS,
        consumer_batch_size=16,
    ) as client:
        conn = await asyncpg.connect(url)
        try:
            yield handler, client, conn
        finally:
            handler.release.set()
            await conn.close()


async def transactions(
    conn: asyncpg.Connection, orders: list[OrderCreatedV1 | OrderConfirmedV1]
) -> list[list[int]]:
    """Per order, the ids of the transactions that wrote its effect."""
    rows = await conn.fetch("SELECT order_id, txid FROM effects ORDER BY txid")
    return [[r["txid"] for r in rows if r["order_id"] == o.order_id] for o in orders]


async def hold_a_batch(rabbitmq, handler, events: list[OrderCreatedV1]) -> OrderCreatedV1:
    """Publish one event and hold it in its handler, then `events`, and wait until the
    consumer holds them all: they are the next batch once the first is released."""
    first = order_created(version=1)
    handler.held = first.order_id
    await publish_event(rabbitmq.url, first)
    await asyncio.wait_for(handler.holding.wait(), timeout=15)
    for event in events:
        await publish_event(rabbitmq.url, event)

    def all_delivered() -> bool:
        work = rabbitmq.queue_counts()["probe.work"]
        return work["messages_unacknowledged"] == 1 + len(events)

    await eventually(all_delivered, timeout=15)
    handler.release.set()
    return first


async def dead_lettered(rabbitmq, event: OrderCreatedV1) -> dict:
    """The headers of the event's one copy in the DLQ, once it is there."""
    queued = await peek_queue(rabbitmq.url, "probe.dlq")
    letters = [m for m in queued if m.message_id == str(event.event_id)]
    assert len(letters) == 1, f"{len(letters)} copies dead-lettered"
    return letters[0].headers


async def applied_once_each(
    conn: asyncpg.Connection, orders: list[OrderCreatedV1 | OrderConfirmedV1]
) -> list[int]:
    """Once every order has its effect: the one transaction that wrote each."""

    async def all_applied() -> list[list[int]]:
        applied = await transactions(conn, orders)
        assert all(applied), applied
        return applied

    applied = await eventually(all_applied, timeout=15)
    assert all(len(txs) == 1 for txs in applied), f"each effect exactly once: {applied}"
    return [tx for [tx] in applied]


async def test_a_batch_commits_once_and_the_messages_failing_in_it_are_retried_alone(
    probe, rabbitmq
) -> None:
    """The first failure rolls back the batch, which runs again without it, a savepoint
    each; the second fails in its savepoint."""
    handler, client, conn = probe
    events = [order_created(version=1) for _ in range(7)]
    failing = [events[2], events[4]]
    handler.failing.update(event.order_id for event in failing)
    first = await hold_a_batch(rabbitmq, handler, events)
    good = [e for e in events if e not in failing]

    first_tx, *good_txs = await applied_once_each(conn, [first, *good])
    assert len(set(good_txs)) == 1, "the held-back five commit in one transaction"
    assert first_tx not in good_txs

    for event in failing:

        async def failing_dead_lettered(event=event) -> dict:
            return await dead_lettered(rabbitmq, event)

        headers = await eventually(failing_dead_lettered, timeout=20)
        assert headers["x-failure-attempts"] == MAX_ATTEMPTS
        assert headers["x-failure-exception"] == "RuntimeError"
        assert f"injected failure for {event.order_id}" in headers["x-failure-reason"]
    assert await transactions(conn, failing) == [[], []]
    messages = (await client.get("/health/ready")).json()["messages"]
    assert messages["retried"] == 2 * (MAX_ATTEMPTS - 1), "only the failing were retried"
    assert messages["processed"] == 1 + len(good)


async def test_only_the_events_of_the_messages_that_commit_in_a_batch_are_published(
    probe, rabbitmq
) -> None:
    """Every message writes an event, then two fail: one rolls the batch back, the other its
    savepoint. What is handed to the relay after the commit is the rest's events alone."""
    handler, client, conn = probe
    handler.announcing = True
    events = [order_created(version=1) for _ in range(7)]
    failing = [events[2], events[4]]
    handler.failing.update(event.order_id for event in failing)
    async with tap(rabbitmq.url, "order.shipped.v1") as published:
        first = await hold_a_batch(rabbitmq, handler, events)
        committed = [first, *(e for e in events if e not in failing)]
        await applied_once_each(conn, committed)
        for event in failing:
            await eventually(lambda event=event: dead_lettered(rabbitmq, event), timeout=20)

        async def all_published() -> list[str]:
            rows = await conn.fetch("SELECT payload->>'order_id' AS id, published_at FROM outbox")
            assert rows and all(row["published_at"] for row in rows), rows
            assert len(published) == len(rows), (len(published), len(rows))
            return [row["id"] for row in rows]

        written = await eventually(all_published, timeout=10)
    announced = sorted(str(event.order_id) for event in committed)
    assert sorted(written) == announced, "no event of a message that failed"
    assert sorted(json.loads(m.body)["order_id"] for m in published) == announced, "each once"


async def test_a_batch_that_cannot_commit_acks_nothing_and_applies_each_message_alone(
    probe, rabbitmq
) -> None:
    handler, client, conn = probe
    events = [order_created(version=1) for _ in range(5)]
    breaking = events[1]
    handler.breaking_commit.add(breaking.order_id)
    first = await hold_a_batch(rabbitmq, handler, events)
    good = [e for e in events if e is not breaking]

    good_txs = await applied_once_each(conn, good)
    assert len(set(good_txs)) == len(good), "after the failed commit, each alone"

    async def breaking_dead_lettered() -> dict:
        return await dead_lettered(rabbitmq, breaking)

    headers = await eventually(breaking_dead_lettered, timeout=20)
    assert headers["x-failure-attempts"] == MAX_ATTEMPTS
    assert "one_promise_per_order" in headers["x-failure-reason"]
    assert await transactions(conn, [breaking]) == [[]]
    await applied_once_each(conn, [first])
    messages = (await client.get("/health/ready")).json()["messages"]
    assert messages["retried"] == MAX_ATTEMPTS - 1, "the others spent no attempt"
    assert messages["processed"] == 1 + len(good)

    def all_settled() -> bool:
        work = rabbitmq.queue_counts()["probe.work"]
        return work["messages_unacknowledged"] == work["messages_ready"] == 0

    await eventually(all_settled, timeout=15)


async def test_an_event_twice_in_one_batch_has_one_effect(probe, rabbitmq) -> None:
    handler, client, conn = probe
    twice = order_created(version=1)
    await hold_a_batch(rabbitmq, handler, [twice, order_created(version=1), twice])

    assert len(await applied_once_each(conn, [twice])) == 1

    async def counted() -> dict:
        messages = (await client.get("/health/ready")).json()["messages"]
        assert messages == {**messages, "processed": 3, "duplicates": 1}, messages
        return messages

    await eventually(counted, timeout=10)
    await applied_once_each(conn, [twice])  # and still once, now that all is settled


async def test_events_applied_alone_do_not_wait_for_a_batch_nor_share_its_transaction(
    probe, rabbitmq
) -> None:
    handler, client, conn = probe
    first = order_created(version=1)
    handler.held = first.order_id
    await publish_event(rabbitmq.url, first)
    await asyncio.wait_for(handler.holding.wait(), timeout=15)
    batched = [order_created(version=1) for _ in range(3)]
    alone = [
        OrderConfirmedV1(order_id=uuid4(), correlation_id=uuid4(), producer="orders")
        for _ in range(3)
    ]
    for event in [*batched, *alone]:
        await publish_event(rabbitmq.url, event)

    alone_txs = await applied_once_each(conn, alone)  # while the batch is held
    assert len(set(alone_txs)) == len(alone), "each in a transaction of its own"
    assert await transactions(conn, batched) == [[], [], []], "the batch is still held"
    handler.release.set()
    batched_txs = await applied_once_each(conn, batched)
    assert len(set(batched_txs)) == 1, "order.created still in one batch"
    assert not set(batched_txs) & set(alone_txs)
