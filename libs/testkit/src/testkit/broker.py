"""The broker as any other party sees it: publish, peek at a queue, tap the `events` exchange."""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika

from contracts import Event


class RawText(str):
    """Text that goes on the wire as the bytes it is made of, UTF-8 or not, as a client
    other than pamqp could send it (pamqp encodes every string as `value.encode("utf-8")`)."""

    def __new__(cls, raw: bytes) -> "RawText":
        text = super().__new__(cls, raw.decode("latin-1"))
        text.raw = raw
        return text

    def encode(self, *_: Any, **__: Any) -> bytes:
        return self.raw


async def publish_raw(
    url: str,
    routing_key: str,
    body: bytes,
    *,
    message_id: str | None = None,
    exchange: str = "events",
    headers: dict[str, Any] | None = None,
    content_type: str = "application/json",
    message_type: str | None = None,
) -> None:
    """Publish bytes as any producer could: persistent, mandatory, confirmed."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        target = await channel.get_exchange(exchange, ensure=False)
        message = aio_pika.Message(
            body,
            message_id=message_id or str(uuid.uuid4()),
            content_type=content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
        )
        message.type = message_type  # set as given: the constructor would make a RawText a str
        await target.publish(message, routing_key=routing_key, mandatory=True)


async def publish_event(url: str, event: Event) -> None:
    """Publish an event under its routing key, its event id as the message id."""
    await publish_raw(
        url, event.routing_key(), event.model_dump_json().encode(), message_id=str(event.event_id)
    )


@dataclass(frozen=True)
class PeekedMessage:
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    routing_key: str | None
    persistent: bool


async def peek_queue(url: str, queue: str) -> list[PeekedMessage]:
    """Every message in `queue`, left in place (read unacknowledged, then returned)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        source = await channel.get_queue(queue, ensure=False)
        seen = []
        while (message := await source.get(no_ack=False, fail=False)) is not None:
            seen.append(
                PeekedMessage(
                    body=message.body,
                    headers=dict(message.headers or {}),
                    message_id=message.message_id,
                    routing_key=message.routing_key,
                    persistent=message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
                )
            )
    return seen


@contextlib.asynccontextmanager
async def tap(
    url: str, *routing_keys: str
) -> AsyncIterator[list[aio_pika.abc.AbstractIncomingMessage]]:
    """Collect what is published on `events` under these routing keys while the block runs."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        for key in routing_keys:
            await queue.bind(exchange, key)
        received: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(message)
            await message.ack()

        await queue.consume(keep)
        yield received


def about_order(messages: list, order_id: Any) -> list:
    """The tapped messages about one order (earlier tests' events may still be arriving)."""
    return [m for m in messages if json.loads(m.body).get("order_id") == str(order_id)]
