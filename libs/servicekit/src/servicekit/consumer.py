"""The idempotent consumer every service uses for its work queue.

For each message: decode and validate it against its contract, then, in one database
transaction, record its event id in `processed_messages` and run the handler. Ack only
after that commit. A duplicate (the id is already recorded) is acked with no effect.

Failures take one of two paths:
- permanent (malformed JSON, contract violation, unknown event, `PermanentFailure` from a
  handler): republished to the service's dead-letter exchange with the reason in its
  headers, then acked, so the next message flows at once;
- anything else is treated as transient: requeued, until the queue's delivery limit makes
  the broker dead-letter it.
"""

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from contracts import Event, routing_key

from .topology import ServiceTopology

log = logging.getLogger(__name__)

Handler = Callable[[asyncpg.Connection, Any], Awaitable[None]]
"""Runs an event's effect on a connection inside the consumer's transaction."""

MAX_REASON_LENGTH = 2000


@dataclass
class ConsumerStats:
    """What the consumer did since the process started; shown by /health/ready."""

    processed: int = 0
    duplicates: int = 0
    requeued: int = 0
    dead_lettered: int = 0


class PermanentFailure(Exception):
    """The message can never be processed: skip retries and dead-letter it now."""


def decode_event(body: bytes, known: Mapping[str, type[Event]]) -> Event:
    """The event in `body`, or PermanentFailure saying exactly what is wrong with it."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentFailure(f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PermanentFailure(f"body is a JSON {type(data).__name__}, not an event object")
    key = routing_key(data.get("event_type"), data.get("schema_version"))
    event_class = known.get(key)
    if event_class is None:
        raise PermanentFailure(f"unknown event {key!r}; handled here: {', '.join(sorted(known))}")
    try:
        return event_class.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise PermanentFailure(f"violates contract {key}: {problems}") from exc


async def _raw_body(message: RabbitMessage) -> bytes:
    """Leave the body undecoded: FastStream would parse JSON before the handler runs, and a
    malformed body would then fail outside it, never acked nor dead-lettered."""
    return message.body


async def record_processed(conn: asyncpg.Connection, event: Event) -> bool:
    """Record the event as processed; False if it already was (a duplicate)."""
    inserted = await conn.fetchval(
        """INSERT INTO processed_messages (event_id, event_type) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING true""",
        event.event_id,
        event.routing_key(),
    )
    return bool(inserted)


class EventConsumer:
    """Subscribes one service to its work queue and dispatches events to its handlers."""

    def __init__(
        self,
        topology: ServiceTopology,
        pool_provider: Callable[[], asyncpg.Pool],
        broker: RabbitBroker,
        handlers: Mapping[type[Event], Handler],
        *,
        prefetch: int,
    ) -> None:
        self.topology = topology
        self._pool = pool_provider
        self._broker = broker
        self._handlers = {cls.routing_key(): handler for cls, handler in handlers.items()}
        self._known = {cls.routing_key(): cls for cls in handlers}
        self.stats = ConsumerStats()
        self.subscriber = broker.subscriber(
            topology.work_queue,
            channel=Channel(prefetch_count=prefetch),
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_body,
        )

        async def on_message(message: RabbitMessage) -> None:
            await self.process(message)

        self.subscriber(on_message)

    async def process(self, message: RabbitMessage) -> None:
        try:
            had_effect = await self._apply(message.raw_message.body)
        except PermanentFailure as failure:
            await self._dead_letter_or_requeue(message, failure)
        except Exception as exc:  # noqa: BLE001 - transient until the delivery limit says otherwise
            await self._requeue(message, exc)
        else:
            await message.ack()
            if had_effect:
                self.stats.processed += 1
            else:
                self.stats.duplicates += 1

    async def _apply(self, body: bytes) -> bool:
        """Run the event's handler once; False when it already had its effect."""
        event = decode_event(body, self._known)
        log.info("event %s (%s) received", event.event_id, event.routing_key())
        async with self._pool().acquire() as conn, conn.transaction():
            if not await record_processed(conn, event):
                log.info("event %s is a duplicate; no effect", event.event_id)
                return False
            await self._handlers[event.routing_key()](conn, event)
        log.info("event %s processed", event.event_id)
        return True

    async def _dead_letter_or_requeue(
        self, message: RabbitMessage, failure: PermanentFailure
    ) -> None:
        try:
            await self._dead_letter(message, failure)
        except Exception as exc:  # noqa: BLE001 - cannot reach the DLQ now: keep the message
            await self._requeue(message, exc)
        else:
            self.stats.dead_lettered += 1
            await message.ack()

    async def _requeue(self, message: RabbitMessage, exc: Exception) -> None:
        raw = message.raw_message
        self.stats.requeued += 1
        log.warning(
            "message %s failed (%s: %s); requeued (delivery %s)",
            raw.message_id,
            type(exc).__name__,
            exc,
            (raw.headers or {}).get("x-delivery-count", 0),
        )
        await message.nack(requeue=True)

    async def _dead_letter(self, message: RabbitMessage, failure: PermanentFailure) -> None:
        raw = message.raw_message
        cause = failure.__cause__ or failure
        headers = {
            **(raw.headers or {}),
            "x-failure-service": self.topology.service,
            "x-failure-reason": str(failure)[:MAX_REASON_LENGTH],
            "x-failure-exception": type(cause).__name__,
            "x-failure-at": datetime.now(UTC).isoformat(),
            "x-original-exchange": raw.exchange or "",
            "x-original-routing-key": raw.routing_key or "",
        }
        await self._broker.publish(
            raw.body,
            exchange=self.topology.dead_letter_exchange,
            routing_key=raw.routing_key or "",
            persist=True,
            mandatory=True,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            message_type=raw.type,
            content_type=raw.content_type,
            headers=headers,
        )
        log.error(
            "message %s dead-lettered to %s: %s",
            raw.message_id,
            self.topology.dead_letter_queue.name,
            headers["x-failure-reason"],
        )
