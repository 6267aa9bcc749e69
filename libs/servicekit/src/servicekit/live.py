"""Events as they happen, for views that follow them live (a status stream, a console).

Every process that serves such views has a queue of its own on the broker, bound to
`events`, and fans what arrives there out to its listeners through a `LiveHub`: a
listener sees each event published while it listens, whichever replica the client
reached. It is a view, not work: nothing is acknowledged, retried or kept. What is
published while this process is disconnected from the broker it never sees, so a view
starts from the current state it reads, then applies what the hub delivers.
"""

import asyncio
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any
from uuid import UUID

from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage

from contracts import EVENTS_BY_ROUTING_KEY, Event

from . import wire
from .consumer import PermanentFailure, decode_event
from .topology import EVENTS_EXCHANGE

log = logging.getLogger(__name__)

LISTENER_BACKLOG = 256
"""Events a listener may have waiting before the hub drops it: far more than one order
ever has, so only a listener that has stopped reading reaches it."""


class FellBehind(Exception):
    """The listener let `LISTENER_BACKLOG` events pile up, so the hub dropped it: what it
    would read next is no longer every event. Start again from the current state."""


class ListenerQueue(asyncio.Queue[Event]):
    """A listener's events; `get` raises FellBehind once the hub has dropped it."""

    def __init__(self, backlog: int) -> None:
        super().__init__(maxsize=backlog)
        self.dropped = False

    def get_nowait(self) -> Event:
        # `get` ends in `get_nowait`. A dropped queue is full, so no `get` is waiting on it.
        if self.dropped:
            raise FellBehind(f"more than {self.maxsize} events were waiting unread")
        return super().get_nowait()


class LiveHub:
    """Fans the events one process receives out to its listeners, by order."""

    def __init__(self, backlog: int = LISTENER_BACKLOG) -> None:
        self._backlog = backlog
        self._listeners: defaultdict[UUID | None, set[ListenerQueue]] = defaultdict(set)

    @contextlib.contextmanager
    def listen(self, order_id: UUID | None = None) -> Iterator[asyncio.Queue[Event]]:
        """A queue of the events about `order_id` (every event, when None) delivered while the
        block runs. Its `get` raises FellBehind if the listener stops keeping up."""
        queue = ListenerQueue(self._backlog)
        self._listeners[order_id].add(queue)
        try:
            yield queue
        finally:
            self._forget(order_id, queue)

    def deliver(self, event: Event) -> None:
        """Hand `event` to each of its listeners, without waiting for any of them."""
        order_id = getattr(event, "order_id", None)
        for key in {order_id, None}:
            for queue in list(self._listeners.get(key, ())):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    queue.dropped = True
                    self._forget(key, queue)
                    log.warning(
                        "live listener on %s dropped: %d events waiting unread",
                        key or "every order",
                        queue.qsize(),
                    )

    @property
    def idle(self) -> bool:
        """No one listens: an event needs no decoding."""
        return not self._listeners

    @property
    def listeners(self) -> int:
        return sum(map(len, self._listeners.values()))

    def _forget(self, order_id: UUID | None, queue: ListenerQueue) -> None:
        listeners = self._listeners.get(order_id)
        if listeners is not None:
            listeners.discard(queue)
            if not listeners:
                del self._listeners[order_id]


def live_queue_name(owner: str) -> str:
    return f"{owner}.live.{secrets.token_hex(8)}"


def subscribe_live(
    broker: RabbitBroker, hub: LiveHub, *, owner: str, routing_keys: Iterable[str]
) -> Any:
    """Register, before broker.start(), a consumer on a queue of this process's own
    (`<owner>.live.<random hex>`: exclusive, auto-delete, not durable, so it goes with the
    process; named under the owner so least-privilege users may declare it) bound to
    `events` under `routing_keys`; each message is decoded into its contract class and
    delivered to the hub, anything undecodable skipped with a DEBUG log. Nothing is
    acknowledged (no_ack): it is a view, not work. The handler takes the message alone,
    as on every service's broker (`apply_types=False`).

    FastStream binds a subscriber's queue under one key: the first key's subscriber
    consumes, and one more subscriber per other key, without a handler, only declares the
    same queue and binds it. Returns the consuming subscriber. Kept out of the AsyncAPI
    document: no other service depends on it, and its name changes with every process.
    """
    wire.tolerate_undecodable_text()  # a message not UTF-8 must not drop the connection
    first, *others = routing_keys
    name = live_queue_name(owner)

    def subscriber(key: str) -> Any:
        return broker.subscriber(
            RabbitQueue(name, durable=False, exclusive=True, auto_delete=True, routing_key=key),
            exchange=EVENTS_EXCHANGE,
            channel=Channel(),
            ack_policy=AckPolicy.ACK_FIRST,
            decoder=_undecoded,
            include_in_schema=False,
        )

    async def on_event(message: RabbitMessage) -> None:
        if hub.idle:
            return
        try:
            event = decode_event(message.body, EVENTS_BY_ROUTING_KEY)
        except PermanentFailure as exc:
            log.debug("live: message %s skipped: %s", message.message_id, exc)
            return
        hub.deliver(event)

    consuming = subscriber(first)(on_event)
    for key in others:
        subscriber(key)
    return consuming


async def _undecoded(message: RabbitMessage) -> RabbitMessage:
    """The message itself, its body undecoded: `decode_event` says what is wrong with one
    that is not an event, where FastStream's JSON decoding would fail before the handler."""
    return message
