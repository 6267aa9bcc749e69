"""`orderctl topology plan` and `apply` against the real RabbitMQ and its management API:
what differs is named, and applying it loses no message."""

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from uuid import UUID

import aio_pika
import pytest
from typer.testing import CliRunner

from contracts import OrderCreatedV1
from orderctl.cli import app
from servicekit.live import live_queue_name
from servicekit.topology import (
    EVENTS_EXCHANGE,
    ServiceTopology,
    retry_queue_name,
    wait_queue_name,
    work_queue_name,
)
from testkit import servers
from testkit.broker import peek_queue, publish_event
from testkit.events import order_created
from testkit.polling import eventually
from testkit.services import probe_service

pytestmark = pytest.mark.integration

SERVICE = "orders"
ROUTING_KEY = OrderCreatedV1.routing_key()
DELAYS = (0.5,)
WORK = work_queue_name(SERVICE)
OLD_DELAY = 15.0
"""Long enough for the statistics to show the message waiting."""
QUIET = "6"
"""Seconds of empty statistics: above their 5 s interval, shorter than the default."""
EARLIER_WORK_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 2,
    "x-dead-letter-exchange": "",
    "x-dead-letter-routing-key": f"{SERVICE}.wait.1",
}
"""A work queue as an earlier release declared it: through the default exchange."""


@pytest.fixture
def vhost(infrastructure):
    """A virtual host for this test alone: each test leaves the broker changed."""
    with servers.vhost(infrastructure) as fresh:
        yield fresh


async def orderctl(*args: str, delays: tuple[float, ...] = DELAYS):
    """Run the CLI as a shell would, with the service's retry delays in its environment."""
    runner = CliRunner(env={"COLUMNS": "250", "ORDERS_RETRY_DELAYS": json.dumps(delays)})
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def declare(url: str, delays: tuple[float, ...] = DELAYS, work_arguments=None) -> None:
    """Declare the topology as the service does at start; `work_arguments`: its work queue
    was declared before, by an earlier release, with these."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        if work_arguments is not None:
            await channel.declare_queue(WORK, durable=True, arguments=work_arguments)
        await ServiceTopology(SERVICE, (ROUTING_KEY,), delays).declare(channel)


async def plan_once_it_says(url: str, text: str):
    """The plan once it shows `text`: its message counts come from statistics that lag."""

    async def planned():
        result = await orderctl("topology", "plan", "-s", SERVICE, "--url", url)
        assert text in result.output, result.output
        return result

    return await eventually(planned, interval=1)


async def queue_names(vhost) -> set[str]:
    return set(await asyncio.to_thread(vhost.queue_counts))


async def test_the_plan_is_clean_right_after_a_service_declares_its_topology(vhost) -> None:
    await declare(vhost.url)
    connection = await aio_pika.connect(vhost.url)
    async with connection:  # a replica's live queue, there while it runs
        channel = await connection.channel()
        await channel.declare_queue(live_queue_name(SERVICE), exclusive=True, auto_delete=True)

        result = await orderctl("topology", "plan", "--service", SERVICE, "--url", vhost.url)

    assert result.exit_code == 0, result.output
    assert f"{SERVICE}: as the code declares it" in result.output


async def test_a_queue_with_other_arguments_is_migrated_with_every_message(vhost) -> None:
    await declare(vhost.url, work_arguments=EARLIER_WORK_ARGUMENTS)
    events = [order_created(version=1) for _ in range(5)]
    for event in events:
        await publish_event(vhost.url, event)

    planned = await plan_once_it_says(vhost.url, f"migrate {WORK} (5 messages")
    assert planned.exit_code == 1, planned.output
    assert "x-delivery-limit: 2 -> 5" in planned.output
    assert "x-dead-letter-exchange: '' -> 'orders.backoff'" in planned.output

    applied = await orderctl(
        "topology", "apply", "-s", SERVICE, "--yes", "--quiet-period", QUIET, "--url", vhost.url
    )
    assert applied.exit_code == 0, applied.output

    kept = await peek_queue(vhost.url, WORK)
    assert sorted(m.body for m in kept) == sorted(e.model_dump_json().encode() for e in events)
    assert {m.message_id for m in kept} == {str(e.event_id) for e in events}
    assert f"{WORK}.migrating" not in await queue_names(vhost)
    after = await orderctl("topology", "plan", "-s", SERVICE, "--url", vhost.url)
    assert after.exit_code == 0, after.output
    await publish_event(vhost.url, order_created(version=1))  # still bound to `events`
    assert len(await peek_queue(vhost.url, WORK)) == len(events) + 1


async def test_an_old_wait_queue_is_deleted_once_its_message_has_expired_into_retry(
    vhost,
) -> None:
    await declare(vhost.url, delays=(OLD_DELAY,))
    old_wait = wait_queue_name(SERVICE, 1, OLD_DELAY)
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"waiting"), routing_key=old_wait)
    await declare(vhost.url, delays=DELAYS)  # the service started with new delays

    planned = await plan_once_it_says(vhost.url, f"delete obsolete wait queue {old_wait} (1 m")
    assert planned.exit_code == 1, planned.output
    assert "delete obsolete routing exchange orders.backoff." in planned.output

    started = time.monotonic()
    applied = await orderctl(
        "topology", "apply", "-s", SERVICE, "--yes", "--quiet-period", QUIET, "--url", vhost.url
    )
    assert applied.exit_code == 0, applied.output
    assert old_wait not in await queue_names(vhost)
    retried = await peek_queue(vhost.url, retry_queue_name(SERVICE, 1))
    assert [m.body for m in retried] == [b"waiting"]  # expired there, not deleted with its queue
    assert time.monotonic() - started >= float(QUIET)
    after = await orderctl("topology", "plan", "-s", SERVICE, "--url", vhost.url)
    assert after.exit_code == 0, after.output


async def test_an_apply_that_finds_a_holding_queue_left_behind_finishes_the_migration(
    vhost,
) -> None:
    """An apply interrupted after it deleted the queue: the messages wait in the holding
    queue, bound in its place."""
    await declare(vhost.url)
    holding = f"{WORK}.migrating"
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel()
        await (await channel.get_queue(WORK)).delete(if_unused=False, if_empty=False)
        parked = await channel.declare_queue(
            holding, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await parked.bind(EVENTS_EXCHANGE.name, ROUTING_KEY)
    event = order_created(version=1)
    await publish_event(vhost.url, event)

    planned = await plan_once_it_says(vhost.url, f"finish migrating: {holding} (1 message")
    assert planned.exit_code == 1, planned.output
    applied = await orderctl(
        "topology", "apply", "-s", SERVICE, "--yes", "--quiet-period", QUIET, "--url", vhost.url
    )

    assert applied.exit_code == 0, applied.output
    assert [m.message_id for m in await peek_queue(vhost.url, WORK)] == [str(event.event_id)]
    assert holding not in await queue_names(vhost)


class CountingHandler:
    def __init__(self) -> None:
        self.handled: dict[UUID, int] = defaultdict(int)

    async def __call__(self, conn, event: OrderCreatedV1) -> None:
        self.handled[event.order_id] += 1


async def test_the_service_consuming_a_migrated_queue_keeps_receiving(
    vhost, databases, tmp_path: Path
) -> None:
    await declare(vhost.url, work_arguments=EARLIER_WORK_ARGUMENTS)
    handler = CountingHandler()
    async with probe_service(
        {OrderCreatedV1: handler},
        name=SERVICE,
        rabbitmq_url=vhost.url,
        database_url=databases.url("probe"),
        migrations=tmp_path,
        retry_delays=DELAYS,
    ):
        before = order_created(version=1)
        await publish_event(vhost.url, before)
        await eventually(lambda: handler.handled[before.order_id] == 1)

        applied = await orderctl(
            "topology", "apply", "-s", SERVICE, "--yes", "--quiet-period", QUIET,
            "--url", vhost.url,
        )  # fmt: skip
        assert applied.exit_code == 0, applied.output

        after = order_created(version=1)
        await publish_event(vhost.url, after)
        await eventually(lambda: handler.handled[after.order_id] == 1, timeout=30)
        counts = await asyncio.to_thread(vhost.queue_counts)
        assert counts[WORK]["consumers"] == 1
    planned = await orderctl("topology", "plan", "-s", SERVICE, "--url", vhost.url)
    assert planned.exit_code == 0, planned.output


async def test_a_wait_queue_with_other_arguments_is_migrated_and_its_message_still_retried(
    vhost,
) -> None:
    """A later release may change what a wait queue's arguments hold: the service uses the
    wait as it is, and apply migrates it; the message in it still comes back to retry."""
    wait = wait_queue_name(SERVICE, 1, OLD_DELAY)
    code = ServiceTopology(SERVICE, (ROUTING_KEY,), (OLD_DELAY,)).wait_queues[0].arguments
    earlier = {**code, "x-queue-type": "quorum", "x-dead-letter-strategy": "at-most-once"}
    connection = await aio_pika.connect(vhost.url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(wait, durable=True, arguments=earlier)
        await channel.default_exchange.publish(aio_pika.Message(b"waiting"), routing_key=wait)
    await declare(vhost.url, delays=(OLD_DELAY,))  # the service starts: the wait as it is

    planned = await orderctl(
        "topology", "plan", "-s", SERVICE, "--url", vhost.url, delays=(OLD_DELAY,)
    )
    assert planned.exit_code == 1, planned.output
    assert f"migrate {wait}" in planned.output
    assert "x-dead-letter-strategy: 'at-most-once' -> 'at-least-once'" in planned.output

    applied = await orderctl(
        "topology", "apply", "-s", SERVICE, "--yes", "--quiet-period", QUIET,
        "--url", vhost.url, delays=(OLD_DELAY,),
    )  # fmt: skip
    assert applied.exit_code == 0, applied.output
    after = await orderctl(
        "topology", "plan", "-s", SERVICE, "--url", vhost.url, delays=(OLD_DELAY,)
    )
    assert after.exit_code == 0, after.output
    assert f"{wait}.migrating" not in await queue_names(vhost)

    async def back_in_retry() -> bool:
        retried = await peek_queue(vhost.url, retry_queue_name(SERVICE, 1))
        assert [m.body for m in retried] == [b"waiting"]
        return True

    await eventually(back_in_retry, interval=1, timeout=2 * OLD_DELAY + 30)
