"""The idempotent consumer every service uses for its work and retry queues.

For each message: decode and validate it against its contract, then, in a database
transaction, record its event id in `processed_messages` and run the handler. Ack only
after that commit. A duplicate (the id is already recorded) is acked with no effect.

With a batch size above 1, the messages the consumer holds are applied together: one
transaction, their event ids recorded in one statement and the events they cause written to
the outbox in another (`outbox.staged`), one commit, then each is settled.
A message that fails in a batch is retried or dead-lettered with the same headers and
attempt counts as without batches, and the rest commits: the batch rolls back and runs
again without it, a savepoint per message (a batch runs without savepoints until one fails:
they cost two round trips a message). If the batch itself does not commit (the connection
is lost, the commit fails), nothing is acked and each of its messages is applied alone, so
one message never spends another's attempts. Batches run one at a time per consumer: two
would lock the same rows in opposite orders.

Failures take one of two paths:
- permanent (malformed JSON, contract violation, unknown event, `PermanentFailure` from a
  handler): published to the service's dead-letter exchange with the reason in its headers,
  then acked, so the next message flows at once;
- anything else is transient: rejected, so the broker moves it to the next backoff queue
  (see `topology`) and counts the failure in `x-death`. Once that count reaches the attempt
  limit, it is dead-lettered like a permanent failure, with the whole history.
  An outage (no database connection, a connection lost, a refused socket, `RetryLater`
  from an open circuit) says nothing about the message: it backs off the same way but is
  never dead-lettered for it, however long the outage lasts.
"""

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aio_pika import IncomingMessage
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from contracts import Event, routing_key, versions

from . import failures, telemetry, wire
from .batching import Batches, outcome_of
from .logs import handling
from .outbox import RowToPublish, handing_over, staged
from .topology import (
    DEFAULT_RETRY_DELAYS,
    DELIVERY_LIMIT,
    EVENTS_EXCHANGE,
    ServiceTopology,
    redeliver_exchange_name,
    work_queue_name,
)

log = logging.getLogger(__name__)

Handler = Callable[[asyncpg.Connection, Any], Awaitable[None]]
"""Runs an event's effect on a connection inside the consumer's transaction."""

ReadableAs = Callable[[type[Event]], tuple[type[Event], ...]]
"""The versions on the wire a handler of an event class accepts: `versions.readable_as`,
unless a deploy reads fewer (a release from before a version existed)."""

MAX_REASON_LENGTH = 2000

POISON_RUNS = 2
"""Runs of unsettled deliveries after which a message is taken for one that kills its
consumer, and is dead-lettered without being handled again."""


@dataclass(frozen=True)
class Delivery:
    """An event waiting for its batch, with the trace of the message that brought it: a
    batch runs in a task of its own, and each handler runs in its own message's trace."""

    event: Event
    trace_context: Any


@dataclass
class ConsumerStats:
    """What the consumer did since the process started; shown by /health/ready."""

    processed: int = 0
    duplicates: int = 0
    retried: int = 0
    dead_lettered: int = 0


class PermanentFailure(Exception):
    """The message can never be processed: skip retries and dead-letter it now."""


class OutOfOrder(Exception):
    """The event is about something this service has not heard of yet: an earlier event is
    still on its way (events are not ordered). Retried with backoff like any transient
    failure, so one whose predecessor never comes ends in the DLQ with this reason."""


class RetryLater(Exception):
    """A dependency is known to be unavailable (an open circuit): back off and try again,
    however long it takes, instead of spending the message's attempts on it."""


OUTAGES = (
    RetryLater,
    ConnectionError,  # refused, reset, or aborted sockets, SMTP's included
    asyncpg.PostgresConnectionError,  # the database connection broke mid-transaction
    asyncpg.AdminShutdownError,  # the server terminated our session
    asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
)
"""Failures of the infrastructure rather than of the message."""


def accepted_events(
    handlers: Mapping[type[Event], Handler], readable_as: ReadableAs = versions.readable_as
) -> dict[str, type[Event]]:
    """Routing key -> event class, for every version the handlers accept: each handler is
    written for the latest version, and older versions are upcast to it as they arrive."""
    return {cls.routing_key(): cls for handled in handlers for cls in readable_as(handled)}


def decode_event(body: bytes, known: Mapping[str, type[Event]]) -> Event:
    """The event in `body`, as the version it was written in, or PermanentFailure saying
    exactly what is wrong with it."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentFailure(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise PermanentFailure("malformed JSON: nested too deeply to be an event") from exc
    if not isinstance(data, dict):
        raise PermanentFailure(f"body is a JSON {type(data).__name__}, not an event object")
    key = routing_key(data.get("event_type"), data.get("schema_version"))
    event_class = known.get(key)
    if event_class is None:
        raise PermanentFailure(f"unknown event {key!r}; handled here: {', '.join(sorted(known))}")
    try:
        return event_class.model_validate(data)
    except RecursionError as exc:
        raise PermanentFailure(f"violates contract {key}: nested too deeply") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise PermanentFailure(f"violates contract {key}: {problems}") from exc


async def _undecoded(message: RabbitMessage) -> RabbitMessage:
    """Hand the handler the message itself, body undecoded: FastStream would parse JSON
    before the handler runs, and a malformed body would then fail outside it, never acked
    nor dead-lettered. The broker runs without dependency injection (`apply_types=False`),
    which would otherwise resolve the message argument in a worker thread, every time."""
    return message


async def record_all_processed(conn: asyncpg.Connection, events: Sequence[Event]) -> list[bool]:
    """Record each event as processed, in one statement; False for each already recorded,
    or recorded earlier in `events` (the same event in two versions)."""
    inserted = {
        row["event_id"]
        for row in await conn.fetch(
            """INSERT INTO processed_messages (event_id, event_type)
               SELECT * FROM unnest($1::uuid[], $2::text[])
               ON CONFLICT DO NOTHING RETURNING event_id""",
            [event.event_id for event in events],
            [event.routing_key() for event in events],
        )
    }
    first_seen = []
    for event in events:
        first_seen.append(event.event_id in inserted)
        inserted.discard(event.event_id)
    return first_seen


async def record_processed(conn: asyncpg.Connection, event: Event) -> bool:
    """Record the event as processed; False if it already was (a duplicate)."""
    [first_seen] = await record_all_processed(conn, [event])
    return first_seen


def _text_properties(raw: IncomingMessage) -> dict[str, Any]:
    return {name: getattr(raw, name, None) for name in wire.TEXT_PROPERTIES}


def _check_published_as(event: Event, raw: IncomingMessage) -> None:
    """The body says what the event is; the routing key it was published under and its `type`
    property, where known, must say the same, or a consumer would act on the body alone."""
    exchange, key = failures.original_route(raw.headers, raw.exchange or "", raw.routing_key or "")
    claims = {
        "routing key": key if exchange == EVENTS_EXCHANGE.name else None,
        "type property": raw.type,
    }
    for claim, value in claims.items():
        if value and value != event.routing_key():
            raise PermanentFailure(
                f"the body is {event.routing_key()} but its {claim} is {value!r}"
            )


class _FailedInBatch(Exception):
    """A message of a batch run without savepoints failed: the batch rolls back."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(index, cause)
        self.index, self.cause = index, cause


class EventConsumer:
    """Subscribes one service to its work and retry queues and dispatches events to handlers.

    The versions it accepts (`readable_as`) are the routing keys its work queue is bound to,
    so a deploy never binds what it would dead-letter as unknown, nor misses what it reads.
    Every consuming queue (work and each retry tier) has its own channel and a prefetch window
    of `prefetch` messages, but at most `prefetch` handlers run at once, so the database pool
    sized for `prefetch` is enough.
    """

    def __init__(
        self,
        service: str,
        pool_provider: Callable[[], asyncpg.Pool],
        broker: RabbitBroker,
        handlers: Mapping[type[Event], Handler],
        *,
        prefetch: int,
        max_attempts: int,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        batch_size: int = 1,
        applied_alone: Collection[type[Event]] = (),
        readable_as: ReadableAs = versions.readable_as,
        hand_over: Callable[[Sequence[RowToPublish]], None] = lambda rows: None,
    ) -> None:
        """`batch_size` 1 applies each message alone, up to `prefetch` at once.
        `applied_alone` are the events whose handlers act outside the database (an email
        sent): each gets a transaction of its own even with batches, so a batch that fails
        to commit never repeats them. `hand_over` is given the outbox rows a transaction wrote
        once it has committed (`OutboxRelay.hand_over`, which publishes them at once)."""
        wire.tolerate_undecodable_text()  # one undecodable message must not drop the connection
        self._known = accepted_events(handlers, readable_as)
        self._hand_over = hand_over
        self.topology = ServiceTopology(service, tuple(self._known), tuple(retry_delays))
        self.max_attempts = max_attempts
        self._pool = pool_provider
        self._broker = broker
        self.handled_events = tuple(handlers)
        self._handlers = {cls.routing_key(): handler for cls, handler in handlers.items()}
        self._read_as = {
            cls.routing_key(): handled for handled in handlers for cls in readable_as(handled)
        }
        self._running = asyncio.Semaphore(prefetch)
        self._batches = Batches(self._apply_batch, batch_size) if batch_size > 1 else None
        self._applied_alone = frozenset(applied_alone)
        self._prefetch = prefetch
        self.stats = ConsumerStats()
        self.outcomes: collections.Counter[tuple[str, str]] = collections.Counter()
        """(event type, outcome) -> messages, for /metrics."""
        self.subscribers: list[Any] = []
        self.consume(self.topology)

    def consume(self, topology: ServiceTopology) -> None:
        """Subscribe to every consuming queue of `topology`, the topology as declared on the
        broker (`ServiceTopology.declare`): retry queues an earlier layout left are consumed
        too. Called before the broker starts."""
        self.topology = topology
        self._consuming = [queue.name for queue in topology.consuming_queues]
        queues = topology.consuming_queues
        for tier in range(len(self.subscribers), len(queues)):
            self.subscribers.append(self._subscribe(queues[tier], self._prefetch, tier))

    def _subscribe(self, queue: RabbitQueue, prefetch: int, tier: int) -> Any:
        subscriber = self._broker.subscriber(
            queue,
            # A channel of its own with a per-consumer limit (not a global one: quorum queues
            # refuse it). FastStream opens it only if the queue is not in its declarer cache
            # when the subscriber starts; `ServiceTopology.declare` keeps it out of there.
            channel=Channel(prefetch_count=prefetch, global_qos=False),
            ack_policy=AckPolicy.MANUAL,
            decoder=_undecoded,
            title=queue.name,
            description=(
                "Events routed from the `events` exchange; each is handled once."
                if tier == 0
                else f"Events back from retry tier {tier}'s wait after a failed attempt; "
                "handled as from the work queue."
            ),
        )
        next_delay = self.topology.delay_after(tier)

        async def on_message(message: RabbitMessage) -> None:
            await self.process(message, next_delay)

        subscriber(on_message)
        return subscriber

    async def process(self, message: RabbitMessage, next_delay: float) -> None:
        """Settle the message, whatever it holds: a failure of this path itself is logged and
        rejected, so the broker moves the message along its retry chain."""
        try:
            await self._process(message, next_delay)
        except Exception:
            log.exception(
                "event %s: handling failed outside the failure paths; rejected",
                wire.printable(message.raw_message.message_id),
            )
            with contextlib.suppress(Exception):  # settled already, or the channel is gone
                await message.reject()

    async def _process(self, message: RabbitMessage, next_delay: float) -> None:
        raw = message.raw_message
        undecodable = wire.undecodable_parts(_text_properties(raw), raw.headers)
        from_publisher = raw.exchange == EVENTS_EXCHANGE.name
        if (
            from_publisher
            and not undecodable
            and (forged := failures.steering_headers(raw.headers))
        ):
            await self._resubmit_without(message, forged)
            return
        try:
            if undecodable:
                raise PermanentFailure(
                    f"not UTF-8 where AMQP requires it: {', '.join(undecodable)}"
                )
            runs = failures.unsettled_runs(raw.headers, self._consuming)
            if runs >= POISON_RUNS:
                raise PermanentFailure(
                    f"poison message: delivered {runs} x {DELIVERY_LIMIT} times without being "
                    "settled; the consumer crashes or hangs on it"
                )
            event = self._decode(raw)
            if self._batches is None or type(event) in self._applied_alone:
                had_effect = await self._apply_alone(event)
            else:
                had_effect = await self._batches.submit(
                    Delivery(event, telemetry.current_context())
                )
        except PermanentFailure as failure:
            await self._dead_letter_or_keep(message, failure, attempts=self._attempt(message))
        except Exception as exc:  # noqa: BLE001 - transient until the attempt limit says otherwise
            await self._retry_or_dead_letter(message, exc, next_delay)
        else:
            await message.ack()
            if had_effect:
                self.stats.processed += 1
            else:
                self.stats.duplicates += 1
            self._count(message, "processed" if had_effect else "duplicate")

    def _decode(self, raw: IncomingMessage) -> Event:
        """The event in the body, upcast to the version its handler takes."""
        written = decode_event(raw.body, self._known)
        _check_published_as(written, raw)
        log.debug("event %s (%s) received", written.event_id, written.routing_key())
        if order_id := getattr(written, "order_id", None):
            telemetry.tag_order(order_id)
        return versions.upcast(written, to=self._read_as[written.routing_key()])

    async def _record_and_handle(self, conn: asyncpg.Connection, event: Event) -> bool:
        """Run the event's handler once; False when it already had its effect."""
        return await self._handle(conn, event, first_seen=await record_processed(conn, event))

    async def _handle(self, conn: asyncpg.Connection, event: Event, *, first_seen: bool) -> bool:
        if not first_seen:
            log.debug("event %s is a duplicate; no effect", event.event_id)
            return False
        with handling(event):
            await self._handlers[event.routing_key()](conn, event)
            log.debug("event %s processed", event.event_id)
        return True

    async def _apply_alone(self, event: Event) -> bool:
        async with self._running:
            with handing_over() as written:
                async with self._connection() as conn, conn.transaction():
                    had_effect = await self._record_and_handle(conn, event)
            self._hand_over(written)
            return had_effect

    async def _apply_batch(self, deliveries: Sequence[Delivery]) -> list[bool | Exception]:
        """Each event's outcome. The batch first runs without savepoints, the cheap way. If
        a message fails, all rolls back, that failure is its outcome, and the rest runs again
        with a savepoint each. If a batch cannot commit, each message is applied alone."""
        try:
            try:
                return await self._in_one_transaction(deliveries, savepoints=False)
            except _FailedInBatch as failed:
                rest = [d for index, d in enumerate(deliveries) if index != failed.index]
                outcomes = iter(await self._in_one_transaction(rest, savepoints=True))
                return [
                    failed.cause if index == failed.index else next(outcomes)
                    for index in range(len(deliveries))
                ]
        except Exception as exc:  # noqa: BLE001 - nothing committed: each is applied alone
            log.debug(
                "a batch of %d did not commit (%r); applying each alone", len(deliveries), exc
            )
            outcomes = []
            for delivery in deliveries:
                with telemetry.attached(delivery.trace_context):
                    outcomes.append(await outcome_of(self._apply_alone(delivery.event)))
            return outcomes

    async def _in_one_transaction(
        self, deliveries: Sequence[Delivery], *, savepoints: bool
    ) -> list[bool | Exception]:
        """Apply the events in one transaction and commit it. With `savepoints`, a failing
        message rolls back alone and its failure is its outcome; without, it raises
        `_FailedInBatch` and nothing commits."""
        results: list[bool | Exception] = []
        with handing_over() as written:
            async with self._connection() as conn, conn.transaction():
                if savepoints:
                    for delivery in deliveries:
                        try:
                            with telemetry.attached(delivery.trace_context), handing_over() as own:
                                async with conn.transaction():
                                    handled = await self._record_and_handle(conn, delivery.event)
                            written.extend(own)  # its savepoint is released: they stand
                            results.append(handled)
                        except Exception as exc:  # noqa: BLE001 - this message's own failure
                            results.append(exc)
                else:
                    events = [delivery.event for delivery in deliveries]
                    first_seen = await record_all_processed(conn, events)
                    async with staged(conn):
                        for index, delivery in enumerate(deliveries):
                            try:
                                with telemetry.attached(delivery.trace_context):
                                    handled = await self._handle(
                                        conn, delivery.event, first_seen=first_seen[index]
                                    )
                                results.append(handled)
                            except OUTAGES:
                                raise
                            except Exception as exc:  # noqa: BLE001 - judged by the caller
                                raise _FailedInBatch(index, exc) from exc
        self._hand_over(written)
        return results

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; failing to get one is an outage, whatever the error."""
        pool = self._pool()
        try:
            conn = await pool.acquire()
        except Exception as exc:  # noqa: BLE001 - refused, unreachable, not accepting, ...
            raise RetryLater(f"database unavailable: {type(exc).__name__}: {exc}") from exc
        try:
            yield conn
        finally:
            await pool.release(conn)

    async def _resubmit_without(self, message: RabbitMessage, forged: Sequence[str]) -> None:
        """Send a message that came from a publisher with steering headers back to the work
        queue without them, then ack it: rejected as it is, the broker would add its counts
        to the forged ones. The copy carries the route it was published under."""
        raw = message.raw_message
        headers = {name: value for name, value in (raw.headers or {}).items() if name not in forged}
        headers[failures.ORIGINAL_EXCHANGE] = raw.exchange
        headers[failures.ORIGINAL_ROUTING_KEY] = raw.routing_key
        work_queue = work_queue_name(self.topology.service)
        try:
            await self._broker.publish(
                raw.body,
                exchange=redeliver_exchange_name(self.topology.service),
                routing_key=work_queue,
                persist=True,
                mandatory=True,
                message_id=raw.message_id,
                correlation_id=raw.correlation_id,
                message_type=raw.type,
                content_type=raw.content_type,
                headers=headers,
            )
        except Exception as exc:  # noqa: BLE001 - cannot publish now: keep the message
            log.warning(
                "event %s: cannot resubmit it now (%s: %s); requeued",
                raw.message_id,
                type(exc).__name__,
                exc,
            )
            await message.nack(requeue=True)
            return
        log.warning(
            "event %s came from %s with %s, which only the broker and replays write: "
            "resubmitted to %s without them",
            raw.message_id,
            raw.exchange,
            ", ".join(forged),
            work_queue,
        )
        self._count(message, "resubmitted")
        await message.ack()

    def _count(self, message: RabbitMessage, outcome: str) -> None:
        """Counted by the message's type if it is one this service reads: a publisher's own
        types would add a metric series each."""
        claimed = message.raw_message.type
        self.outcomes[(claimed if claimed in self._known else "unknown", outcome)] += 1

    def _attempt(self, message: RabbitMessage) -> int:
        """This delivery's attempt number, from the broker's count of earlier failures."""
        return failures.failed_deliveries(message.raw_message.headers, self._consuming) + 1

    async def _retry_or_dead_letter(
        self, message: RabbitMessage, exc: Exception, next_delay: float
    ) -> None:
        attempt = self._attempt(message)
        outage = isinstance(exc, OUTAGES)
        if attempt >= self.max_attempts and not outage:
            await self._dead_letter_or_keep(message, exc, attempts=attempt)
            return
        self.stats.retried += 1
        self._count(message, "retried")
        log.warning(
            "event %s: %s (%s: %s); retrying in %gs",
            wire.printable(message.raw_message.message_id),
            "outage, attempts not spent" if outage else f"attempt {attempt}/{self.max_attempts}",
            type(exc).__name__,
            exc,
            next_delay,
        )
        await message.reject()  # the broker dead-letters it into the next wait queue

    async def _dead_letter_or_keep(
        self, message: RabbitMessage, failure: Exception, attempts: int
    ) -> None:
        try:
            await self._dead_letter(message, failure, attempts)
        except Exception as exc:  # noqa: BLE001 - cannot reach the DLQ now: keep the message
            log.warning(
                "event %s: cannot dead-letter it now (%s: %s); requeued",
                wire.printable(message.raw_message.message_id),
                type(exc).__name__,
                exc,
            )
            await message.nack(requeue=True)
        else:
            self.stats.dead_lettered += 1
            self._count(message, "dead_lettered")
            await message.ack()

    async def _dead_letter(self, message: RabbitMessage, failure: Exception, attempts: int) -> None:
        raw = message.raw_message
        cause = failure.__cause__ if isinstance(failure, PermanentFailure) else None
        now = datetime.now(UTC)
        first = failures.first_failure_at(raw.headers) or now
        exchange, key = failures.original_route(
            raw.headers, raw.exchange or "", raw.routing_key or ""
        )
        headers = {
            **(raw.headers or {}),
            failures.FAILURE_SERVICE: self.topology.service,
            failures.FAILURE_REASON: (str(failure) or repr(failure))[:MAX_REASON_LENGTH],
            failures.FAILURE_EXCEPTION: type(cause or failure).__name__,
            failures.FAILURE_ATTEMPTS: attempts,
            failures.FIRST_FAILURE_AT: first.isoformat(),
            failures.LAST_FAILURE_AT: now.isoformat(),
            failures.ORIGINAL_EXCHANGE: exchange,
            failures.ORIGINAL_ROUTING_KEY: key,
        }
        await self._broker.publish(
            raw.body,
            exchange=self.topology.dead_letter_exchange,
            routing_key=key,
            persist=True,
            mandatory=True,
            message_id=wire.decodable(raw.message_id),
            correlation_id=wire.decodable(raw.correlation_id),
            message_type=wire.decodable(raw.type),
            content_type=wire.decodable(raw.content_type),
            headers=headers,
        )
        log.error(
            "event %s dead-lettered to %s after %d attempt(s): %s: %s",
            wire.printable(raw.message_id),
            self.topology.dead_letter_queue.name,
            attempts,
            headers[failures.FAILURE_EXCEPTION],
            headers[failures.FAILURE_REASON],
        )
