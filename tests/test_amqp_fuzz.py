"""A bounded fuzz of every consumer on the running system: random and mutated bodies, headers
and properties under every event's routing key. Afterwards every message is settled (handled,
or in a DLQ with its reason), no queue holds a message, no connection dropped, and an order
placed next goes through as usual."""

import contextlib
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aio_pika
import pytest

from contracts import EVENTS_BY_ROUTING_KEY
from servicekit.registry import SERVICES
from servicekit.topology import dead_letter_queue_name
from testkit.broker import RawText, peek_queue, publish_raw, tap
from testkit.polling import eventually

pytestmark = pytest.mark.e2e

SEED = 20261202
MESSAGES_PER_KEY = 12
SERVICE_ENV = {
    **{f"{s.env_prefix}RETRY_DELAYS": "[0.2, 0.5]" for s in SERVICES},
    **{f"{s.env_prefix}MAX_ATTEMPTS": "2" for s in SERVICES},
    "SHIPPING_DISPATCH_DELAY": "0.5",
}
STRANGE_VALUES: list[Any] = [
    None, True, -1, 0, 2**63, 1e308, "", "A\u0000B", "\ud800", "x" * 70_000, [], {}, [[[[]]]],
    {"nested": {"deeper": [1, "two", None]}}, "2026-13-45T25:61:00Z", "not-a-uuid",
]  # fmt: skip


def mutated_body(rng: random.Random, body: bytes) -> bytes:
    """A body some publisher could send: broken bytes, or JSON that is wrong in one place."""
    kind = rng.randrange(8)
    if kind == 0:
        raw = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    if kind == 1:
        return body[: rng.randrange(len(body))]
    if kind == 2:
        return rng.randbytes(rng.randint(0, 300))
    if kind == 3:
        depth = rng.choice([50, 5_000, 200_000])
        return b'{"event_type": "order.created", "x": ' + b"[" * depth + b"]" * depth + b"}"
    event = json.loads(body)
    field = rng.choice(sorted(event))
    if kind == 4:
        del event[field]
    elif kind == 5:
        event[field] = rng.choice(STRANGE_VALUES)
    elif kind == 6:
        event["event_type"], version = rng.choice(sorted(EVENTS_BY_ROUTING_KEY)).rsplit(".v", 1)
        event["schema_version"] = int(version)
    else:  # valid-looking, about an order nobody has heard of
        event |= {"event_id": str(uuid.uuid4()), "order_id": str(uuid.uuid4())}
    return json.dumps(event).encode()


def forged_headers(rng: random.Random) -> dict[str, Any] | None:
    death = {
        "queue": rng.choice([f"{rng.choice(SERVICES).name}.work", "x", 5]),
        "reason": rng.choice(["rejected", "delivery_limit", "expired", None]),
        "count": rng.choice([1, 3, 99, -1, "abc", None, 2**40]),
        "exchange": rng.choice(["events", "", 7]),
        "routing-keys": rng.choice([["order.created.v2"], 5, None, [1, 2]]),
        "time": rng.choice([datetime.now(), "noon", None]),
    }
    return rng.choice(
        [
            None,
            {"x-death": [death]},
            {"x-death": rng.choice([42, "x-death", [None, 42]])},
            {"x-original-routing-key": "order.cancelled.v1", "x-original-exchange": "events"},
            {"x-note": RawText(rng.randbytes(6)), "x-n": rng.choice([None, True, -1, 1.5, ""])},
            {RawText(b"x-\xff\xfe"): "name not UTF-8"},
        ]
    )


def properties(rng: random.Random, key: str) -> dict[str, Any]:
    return {
        "content_type": rng.choice(["application/json", "text/plain", RawText(b"\xff\xfe")]),
        "message_type": rng.choice([None, key, rng.choice(sorted(EVENTS_BY_ROUTING_KEY))]),
        "message_id": rng.choice([str(uuid.uuid4()), "", RawText(b"id-\xc3")]),
    }


async def real_bodies(system) -> dict[str, bytes]:
    """One body of each event an order's life publishes, as the services wrote it."""
    sku = f"FUZZ-{uuid.uuid4().hex[:6]}"
    assert (await system.inventory.put(f"/stock/{sku}", json={"available": 10})).status_code == 200
    async with tap(system.rabbitmq.url, "#") as seen:
        shipped = await system.place((sku, 1))
        await eventually(lambda: system.settled(shipped, "shipped"), timeout=30)
        cancelled = await system.place((sku, 1))
        await eventually(lambda: system.settled(cancelled, "confirmed"), timeout=30)
        await system.orders.post(f"/orders/{cancelled}/cancel")
        await eventually(lambda: system.settled(cancelled, "cancelled"), timeout=30)
    return {message.routing_key: message.body for message in seen}


@contextlib.asynccontextmanager
async def routable_all(url: str) -> AsyncIterator[None]:
    """While the block runs, a queue with no consumer takes every key, so that a mandatory
    publish under a key no service consumes is not returned; it goes with the connection."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind("events", "#")
        yield


def nothing_waits(rabbitmq) -> bool:
    """No message is ready, unacknowledged or waiting to retry in any service queue."""
    counts = rabbitmq.queue_counts()
    waiting = {
        name: c for name, c in counts.items()
        if not name.endswith(".dlq") and (c["messages_ready"] or c["messages_unacknowledged"])
    }  # fmt: skip
    return not waiting


async def test_hostile_messages_on_every_routing_key_are_all_settled_and_the_system_goes_on(
    system,
) -> None:
    bodies = await real_bodies(system)
    rng = random.Random(SEED)
    published = 0
    async with routable_all(system.rabbitmq.url):
        for key in sorted(EVENTS_BY_ROUTING_KEY):
            name, version = key.rsplit(".v", 1)
            base = (
                bodies.get(key)
                or json.dumps({"event_type": name, "schema_version": int(version)}).encode()
            )
            for _ in range(MESSAGES_PER_KEY):
                body = mutated_body(rng, base) if rng.random() < 0.9 else base
                await publish_raw(
                    system.rabbitmq.url, key, body,
                    headers=forged_headers(rng), **properties(rng, key),
                )  # fmt: skip
                published += 1

    await eventually(lambda: nothing_waits(system.rabbitmq), timeout=90)
    dead = [
        letter
        for service in SERVICES
        for letter in await peek_queue(system.rabbitmq.url, dead_letter_queue_name(service.name))
    ]
    assert dead, "the fuzz produced no message any service refused"
    assert all(letter.headers.get("x-failure-reason") for letter in dead)
    logs = "".join(
        log.read_text(errors="replace") for log in system.stack.config.run_dir.glob("*.log")
    )
    assert "handling failed outside the failure paths" not in logs
    assert "Reconnecting" not in logs

    sku = f"FUZZ-{uuid.uuid4().hex[:6]}"
    assert (await system.inventory.put(f"/stock/{sku}", json={"available": 1})).status_code == 200
    after = await system.place((sku, 1))
    settled = await eventually(lambda: system.settled(after, "shipped"), timeout=20)
    assert settled["reservation"] == "fulfilled"
    print(f"{published} messages published, {len(dead)} dead-lettered")
