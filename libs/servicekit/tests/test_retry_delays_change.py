"""A service started with other retry delays comes up by itself, with messages in its retry
chain: on the real RabbitMQ and PostgreSQL.

RabbitMQ refuses to declare a queue again with other arguments. Wait queues are named by
their delay and consuming queues hold no delay, so new delays are new queues beside the
old ones; the messages already waiting still come back, and each failure after the change
takes the new delays, once (a binding left from the old layout would copy it).
"""

import json
import time
from collections import defaultdict
from pathlib import Path
from uuid import UUID

import pytest

from contracts import OrderCreatedV1
from testkit.broker import publish_event
from testkit.events import order_created
from testkit.polling import eventually
from testkit.probes import consumer_stats
from testkit.services import probe_service

pytestmark = pytest.mark.integration

DELAYS_BEFORE = (0.3, 4.0)
"""Tier 2 waits long enough to hold a message across the restart."""
DELAYS_AFTER = (0.5,)
"""One tier: `probe.retry.2` is left over from before, and still consumed."""
MAX_ATTEMPTS = 4


class ScriptedHandler:
    """Fails an order's first deliveries as often as it is told, then succeeds."""

    def __init__(self) -> None:
        self.failures: dict[UUID, int] = defaultdict(int)
        self.calls: dict[UUID, list[float]] = defaultdict(list)
        self.effects: dict[UUID, int] = defaultdict(int)

    async def __call__(self, conn, event: OrderCreatedV1) -> None:
        self.calls[event.order_id].append(time.monotonic())
        if self.failures[event.order_id] > 0:
            self.failures[event.order_id] -= 1
            raise RuntimeError("not yet")
        self.effects[event.order_id] += 1


@pytest.fixture
def start_probe(rabbitmq, databases, tmp_path: Path):
    handler = ScriptedHandler()

    def start(delays: tuple[float, ...]):
        return probe_service(
            {OrderCreatedV1: handler},
            rabbitmq_url=rabbitmq.url,
            database_url=databases.url("probe"),
            migrations=tmp_path,
            retry_delays=delays,
            max_attempts=MAX_ATTEMPTS,
        )

    return handler, start


def queues(rabbitmq) -> dict[str, dict]:
    listing = rabbitmq.infrastructure.ctl(
        "-q", "list_queues", "-p", rabbitmq.name, "name", "messages", "arguments",
        "--formatter", "json",
    )  # fmt: skip
    return {queue["name"]: queue for queue in json.loads(listing)}


async def failing(handler: ScriptedHandler, url: str, failures: int) -> OrderCreatedV1:
    order = order_created(version=1)
    handler.failures[order.order_id] = failures
    await publish_event(url, order)
    return order


async def test_new_retry_delays_take_effect_and_what_waits_under_the_old_ones_is_handled_once(
    start_probe, rabbitmq
) -> None:
    handler, start = start_probe
    async with start(DELAYS_BEFORE):
        waiting = await failing(handler, rabbitmq.url, failures=2)
        # Failed in the work queue and in retry 1: now in the 4 s wait of tier 2.
        await eventually(lambda: len(handler.calls[waiting.order_id]) == 2, timeout=20)
    assert handler.effects[waiting.order_id] == 0

    async with start(DELAYS_AFTER) as client:
        after = await failing(handler, rabbitmq.url, failures=1)
        healthy = await failing(handler, rabbitmq.url, failures=0)
        for order in (waiting, after, healthy):
            await eventually(lambda order=order: handler.effects[order.order_id] == 1, timeout=30)
        first, second = handler.calls[after.order_id]
        assert second - first >= DELAYS_AFTER[0]
        assert len(handler.calls[waiting.order_id]) == 3  # back from the old wait, once
        stats = await consumer_stats(client)
        assert stats["duplicates"] == 0
        assert stats["dead_lettered"] == 0

    broker = queues(rabbitmq)
    assert "probe.wait.1.500ms" in broker
    assert {"probe.wait.1.300ms", "probe.wait.2.4s", "probe.retry.2"} <= broker.keys()
    assert all(broker[name]["messages"] == 0 for name in broker if name.startswith("probe."))


async def test_going_back_to_earlier_delays_leaves_no_route_of_the_later_ones(
    start_probe, rabbitmq
) -> None:
    """The broker held the first layout's routing before; each start must route failures
    through its own layout alone, or a failure would be copied into both."""
    handler, start = start_probe
    for delays in (DELAYS_BEFORE, DELAYS_AFTER, DELAYS_BEFORE):
        async with start(delays) as client:
            order = await failing(handler, rabbitmq.url, failures=1)
            await eventually(lambda order=order: handler.effects[order.order_id] == 1, timeout=20)
            first, second = handler.calls[order.order_id]
            assert second - first >= delays[0]
            # Every copy has left the chain, acknowledged: a second one was counted.
            await eventually(
                lambda: (
                    not any(
                        queue["messages"]
                        for name, queue in queues(rabbitmq).items()
                        if name.startswith("probe.")
                    )
                ),
                timeout=20,
            )
            stats = await consumer_stats(client)
            assert stats["duplicates"] == 0, delays
            assert len(handler.calls[order.order_id]) == 2
