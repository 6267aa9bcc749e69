"""Hand-made messages on the real RabbitMQ and PostgreSQL: whatever a publisher puts in the
properties, headers or body, the message is settled (handled, retried or dead-lettered with
the reason) and the consumer goes on with the next one on the same connection."""

import json
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from uuid import UUID

import pytest

from contracts import OrderCancelledV1, OrderCreatedV2
from testkit.broker import RawText, peek_queue, publish_raw
from testkit.events import order_created
from testkit.polling import eventually
from testkit.services import probe_service

pytestmark = pytest.mark.integration

DELAYS = (0.3, 0.6)
MAX_ATTEMPTS = 3
SERVICE = "probe"
CONSUMING = ("probe.work", "probe.retry.1", "probe.retry.2")


class RecordingHandler:
    """Counts each order's handler calls and effects; fails the orders it is told to."""

    def __init__(self) -> None:
        self.calls: dict[UUID, list[float]] = defaultdict(list)
        self.effects: dict[UUID, int] = defaultdict(int)
        self.failing: set[UUID] = set()

    async def __call__(self, conn, event) -> None:
        self.calls[event.order_id].append(time.monotonic())
        if event.order_id in self.failing:
            raise RuntimeError("deadlock detected")
        self.effects[event.order_id] += 1


@pytest.fixture
async def probe(rabbitmq, databases, tmp_path: Path):
    handler = RecordingHandler()
    async with probe_service(
        {OrderCreatedV2: handler, OrderCancelledV1: handler},
        rabbitmq_url=rabbitmq.url,
        database_url=databases.url(SERVICE),
        migrations=tmp_path,
        retry_delays=DELAYS,
        max_attempts=MAX_ATTEMPTS,
    ):
        yield handler


def consumer_channels(rabbitmq) -> set[str]:
    """The channels the probe's event consumers are on: new ones after a reconnect."""
    listed = rabbitmq.infrastructure.ctl(
        "list_consumers", "-p", rabbitmq.name, "queue_name", "channel_pid", "--formatter", "json"
    )
    return {c["channel_pid"] for c in json.loads(listed) if c["queue_name"] in CONSUMING}


async def dead_letter(url: str, message_id: str):
    [dead] = [m for m in await peek_queue(url, "probe.dlq") if m.message_id == message_id] or [None]
    return dead


def nothing_unsettled(rabbitmq) -> bool:
    counts = rabbitmq.queue_counts()
    return all(
        counts[q]["messages_unacknowledged"] == counts[q]["messages_ready"] == 0 for q in CONSUMING
    )


async def handled_next(rabbitmq, handler: RecordingHandler) -> None:
    """A valid order published now has its effect, on the consumers already running."""
    order = order_created()
    await publish_raw(
        rabbitmq.url, order.routing_key(), order.model_dump_json().encode(),
        message_id=str(order.event_id),
    )  # fmt: skip
    await eventually(lambda: handler.effects[order.order_id] == 1, timeout=10)


@pytest.mark.parametrize(
    "properties",
    [
        {"content_type": RawText(b"\xff\xfe")},
        {"message_type": RawText(b"order.created.v2\xc0")},
        {"headers": {RawText(b"x-\xff"): "forged"}},
    ],
    ids=["content-type", "type", "header-name"],
)
async def test_a_message_with_text_that_is_not_utf8_is_dead_lettered_on_the_same_connection(
    probe, rabbitmq, properties
) -> None:
    await eventually(lambda: len(consumer_channels(rabbitmq)) == len(CONSUMING))
    channels = consumer_channels(rabbitmq)
    order = order_created()
    await publish_raw(
        rabbitmq.url, order.routing_key(), order.model_dump_json().encode(),
        message_id=str(order.event_id), **properties,
    )  # fmt: skip

    dead = await eventually(lambda: dead_letter(rabbitmq.url, str(order.event_id)), timeout=10)
    assert dead.headers["x-failure-reason"].startswith("not UTF-8 where AMQP requires it: ")
    assert dead.headers["x-failure-attempts"] == 1
    assert probe.calls[order.order_id] == []
    await handled_next(rabbitmq, probe)
    assert consumer_channels(rabbitmq) == channels
    await eventually(lambda: nothing_unsettled(rabbitmq))


async def test_header_values_that_are_not_utf8_are_data_and_the_event_is_handled_once(
    probe, rabbitmq
) -> None:
    order = order_created()
    forged = {"x-note": RawText(b"\xff\xfe"), "x-death": [{"queue": RawText(b"\xff"), "count": 1}]}
    await publish_raw(
        rabbitmq.url, order.routing_key(), order.model_dump_json().encode(),
        message_id=str(order.event_id), headers=forged,
    )  # fmt: skip

    await eventually(lambda: probe.effects[order.order_id] == 1, timeout=10)
    await eventually(lambda: nothing_unsettled(rabbitmq))
    assert await dead_letter(rabbitmq.url, str(order.event_id)) is None


@pytest.mark.parametrize(
    "x_death",
    [
        42,
        "x-death",
        [42, None, "entry"],
        [{"queue": "probe.work", "reason": "rejected", "count": "abc"}],
        [{"queue": "probe.work", "reason": "rejected", "count": None}],
        [{"queue": "probe.work", "reason": "delivery_limit", "count": -3}],
        [{"queue": 5, "reason": ["rejected"], "count": 1, "routing-keys": 5, "time": "noon"}],
    ],
    ids=["int", "str", "not-tables", "count-str", "count-null", "count-negative", "wrong-types"],
)
async def test_a_garbled_x_death_header_is_data_and_the_event_is_handled_once(
    probe, rabbitmq, x_death
) -> None:
    order = order_created()
    await publish_raw(
        rabbitmq.url, order.routing_key(), order.model_dump_json().encode(),
        message_id=str(order.event_id), headers={"x-death": x_death},
    )  # fmt: skip

    await eventually(lambda: probe.effects[order.order_id] == 1, timeout=10)
    await eventually(lambda: nothing_unsettled(rabbitmq))
    assert await dead_letter(rabbitmq.url, str(order.event_id)) is None
    assert probe.effects[order.order_id] == 1


def claimed(reason: str, count: int) -> list[dict]:
    """A forged history: `count` deaths for `reason` in every consuming queue of the probe."""
    return [
        {
            "queue": queue,
            "reason": reason,
            "count": count,
            "exchange": "events",
            "routing-keys": ["order.created.v2"],
            "time": datetime.now(),
        }
        for queue in CONSUMING
    ]


async def test_a_publisher_claiming_the_delivery_limit_does_not_send_a_valid_event_to_the_dlq(
    probe, rabbitmq
) -> None:
    order = order_created()
    await publish_raw(
        rabbitmq.url, order.routing_key(), order.model_dump_json().encode(),
        message_id=str(order.event_id), headers={"x-death": claimed("delivery_limit", 99)},
    )  # fmt: skip

    await eventually(lambda: probe.effects[order.order_id] == 1, timeout=10)
    assert await dead_letter(rabbitmq.url, str(order.event_id)) is None
    await eventually(lambda: nothing_unsettled(rabbitmq))


async def test_a_publisher_claiming_earlier_rejects_gets_every_attempt_and_every_backoff(
    probe, rabbitmq
) -> None:
    order = order_created()
    probe.failing.add(order.order_id)
    await publish_raw(
        rabbitmq.url, order.routing_key(), order.model_dump_json().encode(),
        message_id=str(order.event_id), headers={"x-death": claimed("rejected", 3)},
    )  # fmt: skip

    dead = await eventually(lambda: dead_letter(rabbitmq.url, str(order.event_id)), timeout=20)
    first, second, third = probe.calls[order.order_id]
    assert second - first >= DELAYS[0]
    assert third - second >= DELAYS[1]
    assert dead.headers["x-failure-attempts"] == MAX_ATTEMPTS
    assert (dead.headers["x-original-exchange"], dead.headers["x-original-routing-key"]) == (
        "events",
        "order.created.v2",
    )
    rejected = {
        d["queue"]: d["count"] for d in dead.headers["x-death"] if d["reason"] == "rejected"
    }
    assert rejected == {"probe.work": 1, "probe.retry.1": 1}


async def test_a_body_routed_under_another_events_key_is_a_contract_violation(
    probe, rabbitmq
) -> None:
    cancelled = OrderCancelledV1(
        order_id=uuid.uuid4(),
        previous_status="pending",
        reason="forged",
        correlation_id=uuid.uuid4(),
        producer="orders",
    )
    await publish_raw(
        rabbitmq.url, "order.created.v2", cancelled.model_dump_json().encode(),
        message_id=str(cancelled.event_id),
    )  # fmt: skip

    dead = await eventually(lambda: dead_letter(rabbitmq.url, str(cancelled.event_id)), timeout=10)
    assert dead.headers["x-failure-reason"] == (
        "the body is order.cancelled.v1 but its routing key is 'order.created.v2'"
    )
    assert dead.headers["x-failure-attempts"] == 1
    assert probe.calls[cancelled.order_id] == []


async def test_a_type_property_naming_another_event_is_a_contract_violation(
    probe, rabbitmq
) -> None:
    order = order_created()
    await publish_raw(
        rabbitmq.url, order.routing_key(), order.model_dump_json().encode(),
        message_id=str(order.event_id), message_type="order.cancelled.v1",
    )  # fmt: skip

    dead = await eventually(lambda: dead_letter(rabbitmq.url, str(order.event_id)), timeout=10)
    assert "its type property is 'order.cancelled.v1'" in dead.headers["x-failure-reason"]
    assert probe.calls[order.order_id] == []


async def test_deeply_nested_json_goes_straight_to_the_dlq(probe, rabbitmq) -> None:
    body = b'{"event_type": "order.created", "schema_version": 2, "x": ' + b"[" * 100_000
    body += b"]" * 100_000 + b"}"
    await publish_raw(rabbitmq.url, "order.created.v2", body, message_id="deep-json")

    dead = await eventually(lambda: dead_letter(rabbitmq.url, "deep-json"), timeout=10)
    assert dead.headers["x-failure-reason"] == "malformed JSON: nested too deeply to be an event"
    assert dead.headers["x-failure-attempts"] == 1
    await handled_next(rabbitmq, probe)


@pytest.mark.parametrize("text", ["A\u0000B", "\ud800"], ids=["nul", "lone-surrogate"])
async def test_text_postgresql_cannot_store_is_a_contract_violation(probe, rabbitmq, text) -> None:
    order = order_created()
    event = order.model_dump(mode="json")
    event["customer"]["name"] = text
    body = json.dumps(event).encode()  # escaped: \u0000, \ud800

    await publish_raw(rabbitmq.url, order.routing_key(), body, message_id=str(order.event_id))

    dead = await eventually(lambda: dead_letter(rabbitmq.url, str(order.event_id)), timeout=10)
    assert dead.headers["x-failure-reason"].startswith("violates contract order.created.v2: ")
    assert "customer" in dead.headers["x-failure-reason"]
    assert dead.headers["x-failure-attempts"] == 1
    assert probe.calls[order.order_id] == []
